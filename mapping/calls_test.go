package mapping_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
)

func TestCallTargets(t *testing.T) {
	cfg := testConfig()
	cfg.Identities[0].Accounts = append(cfg.Identities[0].Accounts, "sip:alice@pbx.example")
	cfg.Ghosts[event.SIP] = map[event.Network]string{event.Matrix: "matrix_{user}_{domain}@gw.example"}
	cfg.Ghosts[event.Matrix][event.SIP] = "_sip_{user}_{domain}@hs.example"
	m, err := mapping.New(cfg, codecs)
	if err != nil {
		t.Fatal(err)
	}
	x := func(id string) event.Address { return event.Address{Network: event.XMPP, ID: id} }
	mx := func(id string) event.Address { return event.Address{Network: event.Matrix, ID: id} }
	s := func(id string) event.Address { return event.Address{Network: event.SIP, ID: id} }
	tests := []struct {
		name     string
		from, to event.Address
		want     []event.Address
		err      error
	}{
		{"an alias rings every account of the identity", mx("bob@hs.example"), x("alice@matrix.example.org"),
			[]event.Address{x("alice@example.org"), mx("alice@example.org"), s("alice@pbx.example")}, nil},
		{"but not the caller's own", s("alice@pbx.example"), x("alice@matrix.example.org"),
			[]event.Address{x("alice@example.org"), mx("alice@example.org")}, nil},
		{"a ghost rings its person", s("1001@gw.example"), s("matrix_carol_hs.example@gw.example"),
			[]event.Address{mx("carol@hs.example")}, nil},
		{"a user of the caller's own network", s("1001@gw.example"), s("1002@gw.example"),
			[]event.Address{s("1002@gw.example")}, nil},
		{"no one on another network", mx("bob@hs.example"), s("1002@gw.example"), nil, mapping.ErrNoRoute},
		{"an unknown alias", mx("bob@hs.example"), x("zed@matrix.example.org"), nil, mapping.ErrNoRoute},
		{"a ghost calling is a loop", mx("_sip_1001_gw.example@hs.example"), mx("_xmpp_bob_example.org@hs.example"), nil, mapping.ErrLoop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.CallTargets(tt.from, tt.to)
			if !errors.Is(err, tt.err) || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("CallTargets(%s, %s) = %v, %v; want %v, %v", tt.from, tt.to, got, err, tt.want, tt.err)
			}
		})
	}
	if a, err := m.CallerAppearance(s("1001@gw.example"), event.SIP); err != nil || a != s("1001@gw.example") {
		t.Errorf("same network appearance: %v %v", a, err)
	}
	if a, err := m.CallerAppearance(s("1001@gw.example"), event.Matrix); err != nil || a != mx("_sip_1001_gw.example@hs.example") {
		t.Errorf("matrix appearance: %v %v", a, err)
	}
}
