package matrix

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
)

func TestMUCAlias(t *testing.T) {
	tests := []struct {
		alias string
		muc   string // "" when the alias names no MUC
	}{
		{"#_xmpp_team_conference.example.org:localhost", "team@conference.example.org"},
		{"#_xmpp_a=5fb_muc.example.org:localhost", "a_b@muc.example.org"},
		{"#_xmpp_caf=c3=a9_muc.example.org:localhost", "café@muc.example.org"},
		{"#_xmpp_team_conference.example.org:elsewhere", ""},      // another homeserver
		{"#team_conference.example.org:localhost", ""},            // no prefix
		{"#_xmpp_team:localhost", ""},                             // no service
		{"#_xmpp__conference.example.org:localhost", ""},          // no room
		{"#_xmpp_team_:localhost", ""},                            // empty service
		{"#_xmpp_Team_conference.example.org:localhost", ""},      // not canonical: capitals are escaped
		{"#_xmpp_t=65am_conference.example.org:localhost", ""},    // not canonical: 'e' needs no escape
		{"#_xmpp_a=40b_muc.example.org:localhost", ""},            // '@' in the room
		{"#_xmpp_a_muc=2fx.example.org:localhost", ""},            // '/' in the service
		{"#_xmpp_a_b_c:localhost", ""},                            // '_' is never inside an escaped half
		{"#_xmpp_a=2_muc.example.org:localhost", ""},              // a broken escape
		{"#_xmpp_team_conference.example.org:localhost:8448", ""}, // another server part
		{"!_xmpp_team_conference.example.org:localhost", ""},      // a room ID
		{"#_xmpp_a=20b_muc.example.org:localhost", ""},            // a space
		{"#_xmpp_team_conference.example.org:localhost\n", ""},    // trailing newline
		{"#_xmpp_=c3=a9_xn--caf-dma.example:localhost", "é@xn--caf-dma.example"},
	}
	for _, tc := range tests {
		t.Run(tc.alias, func(t *testing.T) {
			muc, ok := parseMUCAlias(tc.alias, "localhost")
			if ok != (tc.muc != "") || muc != tc.muc {
				t.Fatalf("parseMUCAlias = %q, %v; want %q", muc, ok, tc.muc)
			}
			if ok {
				if back := mucAlias(muc, "localhost"); back != tc.alias {
					t.Errorf("mucAlias(%q) = %q, want %q", muc, back, tc.alias)
				}
			}
		})
	}
}

// FuzzParseMUCAlias: an alias that names a MUC names exactly one, and
// writing that MUC's alias gives the same alias back.
func FuzzParseMUCAlias(f *testing.F) {
	for _, s := range []string{
		"#_xmpp_team_conference.example.org:localhost", "#_xmpp_a=5fb_muc.example.org:localhost",
		"#_xmpp_caf=c3=a9_muc.example.org:localhost", "#_xmpp_a_b_c:localhost", "#_xmpp_=:localhost",
		"#_xmpp_a=40b_muc.example.org:localhost", "#x:localhost", "#_xmpp_a_b:localhost:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, alias string) {
		muc, ok := parseMUCAlias(alias, "localhost")
		if !ok {
			return
		}
		if err := mapping.CheckRoom(event.Address{Network: event.XMPP, ID: muc}); err != nil {
			t.Fatalf("parseMUCAlias(%q) = %q, not a MUC: %v", alias, muc, err)
		}
		if back := mucAlias(muc, "localhost"); back != alias {
			t.Fatalf("parseMUCAlias(%q) = %q, whose alias is %q", alias, muc, back)
		}
	})
}

// fakePortalHost is a fakeHost that opens portals (bridges.PortalHost)
// under a policy: MUCs of conference.localhost, opened by @mx* users.
type fakePortalHost struct {
	*fakeHost
	mu     sync.Mutex
	opened [][]event.Address
}

var _ bridges.PortalHost = (*fakePortalHost)(nil)

func (h *fakePortalHost) Rooms(n event.Network) []event.Address {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []event.Address
	for _, p := range h.opened {
		for _, r := range p {
			if r.Network == n {
				out = append(out, r)
			}
		}
	}
	return out
}

func (h *fakePortalHost) MayOpenPortal(by event.Address, rooms ...event.Address) error {
	for _, r := range rooms {
		if r.Network == event.XMPP && !strings.HasSuffix(r.ID, "@conference.localhost") {
			return fmt.Errorf("%w: %w: its service is not allowed", bridges.ErrRefused, mapping.ErrNotAllowed)
		}
	}
	if by != (event.Address{}) && !strings.HasPrefix(by.ID, "@mx") {
		return fmt.Errorf("%w: %w: %s may not open portals", bridges.ErrRefused, mapping.ErrNotAllowed, by.ID)
	}
	return nil
}

func (h *fakePortalHost) OpenPortal(_ context.Context, by event.Address, rooms ...event.Address) error {
	if err := h.MayOpenPortal(by, rooms...); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.opened = append(h.opened, rooms)
	return nil
}

// The homeserver asks about aliases: one that names an allowed MUC gets a
// room made by the bot with that alias, and 200; one of a service not
// allowed, or of another form, gets 404 and no room. The room's portal
// opens when a user allowed joins; another user is told why it does not.
func TestAliasQueryMakesAPortal(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := &fakePortalHost{fakeHost: newFakeHost()}
	a := newTestAdapter(t, hs, host)
	host.waitState(t, bridges.Connected)
	hs.reset()

	for _, alias := range []string{"#_xmpp_secret_muc.example.org:localhost", "#_xmpp_Team_conference.localhost:localhost", "#other:localhost"} {
		if status, code := call(t, a, "GET", "/_matrix/app/v1/rooms/"+url.PathEscape(alias), hsAuth, ""); status != http.StatusNotFound || code != "M_NOT_FOUND" {
			t.Errorf("query of %s: %d %s, want 404 M_NOT_FOUND", alias, status, code)
		}
	}
	for _, r := range hs.requests() {
		if strings.HasSuffix(r.Path, "/createRoom") {
			t.Fatalf("a refused alias made a room: %v", r)
		}
	}

	const alias = "#_xmpp_team_conference.localhost:localhost"
	if status, code := call(t, a, "GET", "/_matrix/app/v1/rooms/"+url.PathEscape(alias), hsAuth, ""); status != http.StatusOK {
		t.Fatalf("query of %s: %d %s, want 200", alias, status, code)
	}
	var created []hsRequest
	for _, r := range hs.requests() {
		if strings.HasSuffix(r.Path, "/createRoom") {
			created = append(created, r)
		}
	}
	if len(created) != 1 || created[0].Body["room_alias_name"] != "_xmpp_team_conference.localhost" ||
		created[0].Body["preset"] != "public_chat" || created[0].Query["user_id"] != "@parley:localhost" {
		t.Fatalf("createRoom requests: %v", created)
	}
	const room = "!room1:localhost"
	if muc, ok := host.links.Value("ondemand:" + room); !ok || muc != "team@conference.localhost" {
		t.Fatalf("the room's MUC is not kept: %q %v", muc, ok)
	}

	// A user the policy does not let open portals joins: told, no portal.
	if status, _ := putTxn(t, a, "t1", txnBody(memberEvent("$j1", "@eve:localhost", room, "@eve:localhost", "join", false))); status != http.StatusOK {
		t.Fatalf("transaction: %d", status)
	}
	if len(host.Rooms(event.XMPP)) != 0 {
		t.Fatal("eve's join opened the portal")
	}
	var notice string
	for _, e := range hs.roomEvents(room) {
		if body, _ := e.Content["body"].(string); e.Sender == "@parley:localhost" {
			notice = body
		}
	}
	if !strings.Contains(notice, "@eve:localhost: this room is not bridged with the XMPP group chat team@conference.localhost: you may not open portals") {
		t.Errorf("eve is told %q", notice)
	}

	// mx1 joins: the portal opens, and the join is dispatched as a member.
	if status, _ := putTxn(t, a, "t2", txnBody(memberEvent("$j2", "@mx1:localhost", room, "@mx1:localhost", "join", false))); status != http.StatusOK {
		t.Fatalf("transaction: %d", status)
	}
	if got := host.Rooms(event.XMPP); len(got) != 1 || got[0].ID != "team@conference.localhost" {
		t.Fatalf("portals opened: %v", got)
	}
	if got := host.Rooms(event.Matrix); len(got) != 1 || got[0].ID != room {
		t.Fatalf("portal rooms on matrix: %v", got)
	}
	if _, ok := host.links.Value("ondemand:" + room); ok {
		t.Error("the room still waits for its portal")
	}
	var joined bool
	for _, e := range host.events() {
		if m, ok := e.(*event.Member); ok && m.From.ID == "@mx1:localhost" && m.To.ID == room && m.Room {
			joined = true
		}
	}
	if !joined {
		t.Errorf("mx1's join was not dispatched: %v", host.events())
	}
	if _, ok := a.portalOf(room); !ok {
		t.Error("the room is not a portal room for the adapter")
	}
}

func TestOnDemandRefusedText(t *testing.T) {
	inPortal := fmt.Errorf("open portal: x: %w", bridges.ErrInPortal)
	if got := onDemandRefusedText("@a:b", "t@c", inPortal); !strings.Contains(got, "bridged with another room already") {
		t.Errorf("in another portal: %q", got)
	}
	service := fmt.Errorf("%w: %w: c is not a MUC service portals may reach", bridges.ErrRefused, mapping.ErrNotAllowed)
	if got := onDemandRefusedText("@a:b", "t@c", service); !strings.Contains(got, "may not reach its service") {
		t.Errorf("service: %q", got)
	}
	if got := onDemandRefusedText("@a:b", "t@c", errors.New("x")); !strings.HasPrefix(got, "@a:b: this room is not bridged") {
		t.Errorf("user: %q", got)
	}
}

// A room made by an earlier query whose link was lost (the alias exists
// when the homeserver asks again) is found by its alias and waits for its
// portal again.
func TestAliasQueryRoomExists(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := &fakePortalHost{fakeHost: newFakeHost()}
	a := newTestAdapter(t, hs, host)
	host.waitState(t, bridges.Connected)
	const alias = "#_xmpp_team_conference.localhost:localhost"
	hs.mu.Lock()
	hs.aliases[alias] = "!earlier:localhost"
	hs.mu.Unlock()
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if strings.HasSuffix(r.Path, "/createRoom") {
			return http.StatusBadRequest, `{"errcode":"M_ROOM_IN_USE","error":"Room alias already taken"}`, true
		}
		return 0, "", false
	})
	if status, code := call(t, a, "GET", "/_matrix/app/v1/rooms/"+url.PathEscape(alias), hsAuth, ""); status != http.StatusOK {
		t.Fatalf("query of %s: %d %s, want 200", alias, status, code)
	}
	if muc, ok := host.links.Value("ondemand:!earlier:localhost"); !ok || muc != "team@conference.localhost" {
		t.Fatalf("the room found by its alias does not wait for its portal: %q %v", muc, ok)
	}
}
