package mapping

import (
	"errors"
	"strings"
	"testing"

	"github.com/parleygw/parley/event"
)

func TestOnDemandValidate(t *testing.T) {
	tests := []struct {
		name   string
		policy OnDemand
		want   string // "" for valid
	}{
		{"valid", OnDemand{Users: []string{"matrix:@*:example.org"}, MUCServices: []string{"conference.example.org"}}, ""},
		{"anyone", OnDemand{Users: []string{"*"}, MUCServices: []string{"muc.example.org", "127.0.0.1"}}, ""},
		{"no users", OnDemand{MUCServices: []string{"conference.example.org"}}, "mapping.portals_on_demand.users: list who"},
		{"empty pattern", OnDemand{Users: []string{""}, MUCServices: []string{"c.example.org"}}, "mapping.portals_on_demand.users[0]: pattern is empty"},
		{"bad pattern", OnDemand{Users: []string{"*", "matrix:[a"}, MUCServices: []string{"c.example.org"}}, "mapping.portals_on_demand.users[1]: pattern \"matrix:[a\""},
		{"no services", OnDemand{Users: []string{"*"}}, "mapping.portals_on_demand.muc_services: list the MUC services"},
		{"a JID, not a domain", OnDemand{Users: []string{"*"}, MUCServices: []string{"team@conference.example.org"}}, "mapping.portals_on_demand.muc_services[0]: \"team@conference.example.org\" is not a domain"},
		{"capitals", OnDemand{Users: []string{"*"}, MUCServices: []string{"ok.org", "Conference.example.org"}}, "mapping.portals_on_demand.muc_services[1]"},
		{"empty label", OnDemand{Users: []string{"*"}, MUCServices: []string{"conference..org"}}, "muc_services[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{OnDemand: &tc.policy}
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestMayOpenPortal(t *testing.T) {
	policy := &OnDemand{Users: []string{"matrix:@*:example.org", "matrix:@guest:other.org"}, MUCServices: []string{"conference.example.org"}}
	room := event.Address{Network: event.Matrix, ID: "!r:example.org"}
	muc := func(id string) event.Address { return event.Address{Network: event.XMPP, ID: id} }
	user := func(id string) event.Address { return event.Address{Network: event.Matrix, ID: id} }
	tests := []struct {
		name   string
		policy *OnDemand
		by     event.Address
		muc    string
		want   string // "" for allowed
	}{
		{"a user of the homeserver", policy, user("@alice:example.org"), "team@conference.example.org", ""},
		{"a user named in the policy", policy, user("@guest:other.org"), "team@conference.example.org", ""},
		{"nobody yet: rooms only", policy, event.Address{}, "team@conference.example.org", ""},
		{"another user", policy, user("@eve:other.org"), "team@conference.example.org", "@eve:other.org may not open portals"},
		{"an XMPP user", policy, event.Address{Network: event.XMPP, ID: "alice@example.org"}, "team@conference.example.org", "may not open portals"},
		{"another service", policy, user("@alice:example.org"), "team@muc.elsewhere.org", "muc.elsewhere.org is not a MUC service"},
		{"a subdomain of the service", policy, event.Address{}, "team@x.conference.example.org", "is not a MUC service"},
		{"off", nil, user("@alice:example.org"), "team@conference.example.org", "portals on demand are off"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &Map{onDemand: tc.policy}
			err := m.MayOpenPortal(tc.by, []event.Address{room, muc(tc.muc)})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("MayOpenPortal: %v", err)
			case tc.want != "" && (!errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("MayOpenPortal: %v, want ErrNotAllowed saying %q", err, tc.want)
			}
		})
	}
}
