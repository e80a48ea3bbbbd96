package mapping_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
)

func testConfig() mapping.Config {
	return mapping.Config{
		Identities: []mapping.Identity{{
			Name:        "alice",
			DisplayName: "Alice Liddell",
			Accounts:    []string{"xmpp:alice@example.org", "matrix:alice@example.org"},
		}},
		Ghosts: map[event.Network]map[event.Network]string{
			event.Matrix: {event.XMPP: "_xmpp_{user}_{domain}@hs.example"},
			event.XMPP:   {event.Matrix: "{user}%{domain}@matrix.example.org"},
		},
		Aliases: map[event.Network]string{event.XMPP: "{name}@matrix.example.org"},
	}
}

var codecs = map[event.Network]mapping.Codec{
	event.XMPP:   bridgestest.Codec{},
	event.Matrix: bridgestest.Codec{},
	event.SIP:    bridgestest.Codec{},
}

func TestResolve(t *testing.T) {
	m, err := mapping.New(testConfig(), codecs)
	if err != nil {
		t.Fatal(err)
	}
	x := func(id string) event.Address { return event.Address{Network: event.XMPP, ID: id} }
	mx := func(id string) event.Address { return event.Address{Network: event.Matrix, ID: id} }
	tests := []struct {
		name           string
		from, to       event.Address
		sender, target event.Address
		err            error
	}{
		{"xmpp user to matrix ghost", x("bob@example.org"), x("carol%hs.example@matrix.example.org"),
			mx("_xmpp_bob_example.org@hs.example"), mx("carol@hs.example"), nil},
		{"matrix user to xmpp ghost", mx("carol@hs.example"), mx("_xmpp_bob_example.org@hs.example"),
			x("carol%hs.example@matrix.example.org"), x("bob@example.org"), nil},
		{"escaped characters survive the round trip", x("Bob_1@example.org"), x("c=5fd%hs.example@matrix.example.org"),
			mx("_xmpp_=42ob=5f1_example.org@hs.example"), mx("c_d@hs.example"), nil},
		{"alias reaches the identity's other account", x("bob@example.org"), x("alice@matrix.example.org"),
			mx("_xmpp_bob_example.org@hs.example"), mx("alice@example.org"), nil},
		{"identity appears under its alias", mx("alice@example.org"), mx("_xmpp_bob_example.org@hs.example"),
			x("alice@matrix.example.org"), x("bob@example.org"), nil},
		{"unknown alias", x("bob@example.org"), x("zed@matrix.example.org"), event.Address{}, event.Address{}, mapping.ErrNoRoute},
		{"not a ghost", x("bob@example.org"), x("carol@example.org"), event.Address{}, event.Address{}, mapping.ErrNoRoute},
		{"non-canonical escape", x("bob@example.org"), x("=61%hs.example@matrix.example.org"), event.Address{}, event.Address{}, mapping.ErrNoRoute},
		{"an alias-shaped address of no identity is a person, not a loop", x("zed@matrix.example.org"), x("carol%hs.example@matrix.example.org"),
			mx("_xmpp_zed_matrix.example.org@hs.example"), mx("carol@hs.example"), nil},
		{"alias as sender is a loop", x("alice@matrix.example.org"), x("carol%hs.example@matrix.example.org"),
			event.Address{}, event.Address{}, mapping.ErrLoop},
		{"ghost as sender is a loop", mx("_xmpp_bob_example.org@hs.example"), mx("_xmpp_eve_example.org@hs.example"),
			event.Address{}, event.Address{}, mapping.ErrLoop},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sender, target, err := m.Resolve(tc.from, tc.to)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Resolve error = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sender != tc.sender || target != tc.target {
				t.Errorf("Resolve = %v, %v; want %v, %v", sender, target, tc.sender, tc.target)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(*mapping.Config)
		want   string
	}{
		{"bad name", func(c *mapping.Config) { c.Identities[0].Name = "Alice" }, "identities[0].name"},
		{"bad account", func(c *mapping.Config) { c.Identities[0].Accounts[1] = "irc:alice" }, "identities[0].accounts[1]"},
		{"ambiguous separator", func(c *mapping.Config) { c.Ghosts[event.XMPP][event.Matrix] = "{user}.{domain}@m" }, "ghosts.xmpp.matrix"},
		{"missing placeholder", func(c *mapping.Config) { c.Aliases[event.XMPP] = "alice@m" }, "aliases.xmpp"},
		{"invalid account ID", func(c *mapping.Config) { c.Identities[0].Accounts[0] = "xmpp:nodomain" }, "identities[0].accounts[0]"},
		{"ambiguous ghost templates", func(c *mapping.Config) {
			c.Ghosts[event.XMPP][event.SIP] = "{user}%{domain}@matrix.example.org"
		}, "ambiguous"},
		{"ghost reads as alias", func(c *mapping.Config) { c.Aliases[event.XMPP] = "{name}%b@matrix.example.org" }, "also reads as an alias"},
		{"alias reads as ghost", func(c *mapping.Config) { c.Aliases[event.XMPP] = "{name}%x.y@matrix.example.org" }, "reads as the ghost"},
		{"account twice", func(c *mapping.Config) {
			c.Identities = append(c.Identities, mapping.Identity{Name: "al", Accounts: []string{"xmpp:alice@example.org"}})
		}, "already belongs to alice"},
		{"portal without a MUC", func(c *mapping.Config) {
			c.Portals = []mapping.Portal{{Matrix: "!r:hs.example"}}
		}, "portals[0].xmpp: a portal needs a room on each network"},
		{"portal alias without a server", func(c *mapping.Config) {
			c.Portals = []mapping.Portal{{Matrix: "#team", XMPP: "room@muc.example.org"}}
		}, "portals[0].matrix"},
		{"portal room not a room", func(c *mapping.Config) {
			c.Portals = []mapping.Portal{{Matrix: "@bob:hs.example", XMPP: "room@muc.example.org"}}
		}, "portals[0].matrix"},
		{"portal MUC with a resource", func(c *mapping.Config) {
			c.Portals = []mapping.Portal{{Matrix: "#r:hs.example", XMPP: "room@muc.example.org/nick"}}
		}, "portals[0].xmpp"},
		{"room in two portals", func(c *mapping.Config) {
			c.Portals = []mapping.Portal{{Matrix: "#r:hs.example", XMPP: "a@muc.example.org"}, {Matrix: "#r:hs.example", XMPP: "b@muc.example.org"}}
		}, "portals[1].matrix: #r:hs.example is in portal 0 already"},
		{"portal SIP address not a SIP URI", func(c *mapping.Config) {
			c.Portals = []mapping.Portal{{Matrix: "#r:hs.example", XMPP: "a@muc.example.org", SIP: "team@pbx.example"}}
		}, "portals[0].sip"},
		{"phones without a SIP address", func(c *mapping.Config) {
			c.Portals = []mapping.Portal{{Matrix: "#r:hs.example", XMPP: "a@muc.example.org", Phones: []string{"sip:1001@pbx.example"}}}
		}, "portals[0].phones: phones are members of the portal's SIP address"},
		{"phone not a SIP URI", func(c *mapping.Config) {
			c.Portals = []mapping.Portal{{Matrix: "#r:hs.example", XMPP: "a@muc.example.org", SIP: "sip:team@pbx.example",
				Phones: []string{"sip:1001@pbx.example", "1002"}}}
		}, "portals[0].phones[1]"},
		{"phone twice", func(c *mapping.Config) {
			c.Portals = []mapping.Portal{{Matrix: "#r:hs.example", XMPP: "a@muc.example.org", SIP: "sip:team@pbx.example",
				Phones: []string{"sip:1001@pbx.example", "sip:1001@pbx.example"}}}
		}, "portals[0].phones[1]: sip:1001@pbx.example is listed twice"},
		{"SIP address in two portals", func(c *mapping.Config) {
			c.Portals = []mapping.Portal{{Matrix: "#r:hs.example", XMPP: "a@muc.example.org", SIP: "sip:team@pbx.example"},
				{Matrix: "#s:hs.example", XMPP: "b@muc.example.org", SIP: "sip:team@pbx.example"}}
		}, "portals[1].sip: sip:team@pbx.example is in portal 0 already"},
		{"SIP address of a ghost", func(c *mapping.Config) {
			c.Ghosts[event.SIP] = map[event.Network]string{event.XMPP: "sip:x_{user}_{domain}@pbx.example"}
			c.Portals = []mapping.Portal{{Matrix: "#r:hs.example", XMPP: "a@muc.example.org", SIP: "sip:x_team_muc@pbx.example"}}
		}, "portals[0].sip: sip:x_team_muc@pbx.example is also the address of a ghost"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			tc.change(&c)
			_, err := mapping.New(c, codecs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestPatterns(t *testing.T) {
	m, err := mapping.New(testConfig(), codecs)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(m.Patterns(event.Matrix), " ")
	if got != `_xmpp_.+@hs\.example` {
		t.Errorf("Patterns(matrix) = %q", got)
	}
}

func TestMayWatch(t *testing.T) {
	c := testConfig()
	c.Watch = []mapping.WatchRule{
		{Watcher: "sip:*", Presentity: "*", Allow: false},
		{Watcher: "xmpp:*@example.org", Presentity: "matrix:*", Allow: true},
		{Watcher: "*", Presentity: "*", Allow: false},
	}
	m, err := mapping.New(c, codecs)
	if err != nil {
		t.Fatal(err)
	}
	a := func(n event.Network, id string) event.Address { return event.Address{Network: n, ID: id} }
	tests := []struct {
		watcher, presentity event.Address
		want                bool
	}{
		{a(event.SIP, "1001@x"), a(event.Matrix, "bob@hs"), false},
		{a(event.XMPP, "bob@example.org"), a(event.Matrix, "carol@hs"), true},
		{a(event.XMPP, "bob@elsewhere.org"), a(event.Matrix, "carol@hs"), false},
	}
	for _, tc := range tests {
		if got := m.MayWatch(tc.watcher, tc.presentity); got != tc.want {
			t.Errorf("MayWatch(%v, %v) = %v, want %v", tc.watcher, tc.presentity, got, tc.want)
		}
	}
	c.Watch = []mapping.WatchRule{{Watcher: "[", Presentity: "*"}}
	if _, err := mapping.New(c, codecs); err == nil || !strings.Contains(err.Error(), "mapping.watch[0]") {
		t.Errorf("bad pattern: %v", err)
	}
}

func TestPortals(t *testing.T) {
	c := testConfig()
	c.Portals = []mapping.Portal{{Matrix: "#team:hs.example", XMPP: "team@muc.example.org"}, {Matrix: "!x:hs.example", XMPP: "x@muc.example.org"},
		{Matrix: "!v12RoomWithoutServer", XMPP: "v12@muc.example.org"}}
	m, err := mapping.New(c, codecs)
	if err != nil {
		t.Fatal(err)
	}
	others, ok := m.Portal(event.Address{Network: event.XMPP, ID: "team@muc.example.org"})
	if !ok || len(others) != 1 || others[0] != (event.Address{Network: event.Matrix, ID: "#team:hs.example"}) {
		t.Errorf("Portal(team MUC) = %v, %v", others, ok)
	}
	if _, ok := m.Portal(event.Address{Network: event.XMPP, ID: "other@muc.example.org"}); ok {
		t.Error("a room in no portal has one")
	}
	rooms := m.Rooms(event.Matrix)
	if len(rooms) != 3 || rooms[0].ID != "!v12RoomWithoutServer" || rooms[1].ID != "!x:hs.example" || rooms[2].ID != "#team:hs.example" {
		t.Errorf("Rooms(matrix) = %v", rooms)
	}
}

// A portal with a SIP address joins three rooms; its phones are members
// of the SIP one.
func TestPortalWithSIP(t *testing.T) {
	c := testConfig()
	c.Portals = []mapping.Portal{{Matrix: "#team:hs.example", XMPP: "team@muc.example.org", SIP: "sip:team@pbx.example",
		Phones: []string{"sip:1002@pbx.example", "sip:1001@pbx.example"}}}
	m, err := mapping.New(c, codecs)
	if err != nil {
		t.Fatal(err)
	}
	sipRoom := event.Address{Network: event.SIP, ID: "sip:team@pbx.example"}
	others, ok := m.Portal(sipRoom)
	if !ok || len(others) != 2 || others[0].Network != event.Matrix || others[1].Network != event.XMPP {
		t.Errorf("Portal(SIP room) = %v, %v", others, ok)
	}
	others, _ = m.Portal(event.Address{Network: event.XMPP, ID: "team@muc.example.org"})
	if len(others) != 2 || others[1] != sipRoom {
		t.Errorf("Portal(MUC) = %v, want the Matrix room and %v", others, sipRoom)
	}
	if rooms := m.Rooms(event.SIP); len(rooms) != 1 || rooms[0] != sipRoom {
		t.Errorf("Rooms(sip) = %v", rooms)
	}
	phones := m.Phones(sipRoom)
	if len(phones) != 2 || phones[0].ID != "sip:1002@pbx.example" || phones[1].ID != "sip:1001@pbx.example" {
		t.Errorf("Phones = %v", phones)
	}
	if p := m.Phones(event.Address{Network: event.XMPP, ID: "team@muc.example.org"}); p != nil {
		t.Errorf("Phones(MUC) = %v", p)
	}
}
