package xmpp

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleygw/parley/event"
)

const (
	servedRoomJID = "#team%localhost@matrix.localhost"
	servedAliasID = "#team:localhost"
	servedGhost   = "bob%localhost@matrix.localhost"
	servedGhost2  = "al%localhost@matrix.localhost"
)

// fakeOpenerHost is a fakeHost that opens portals at run time, or refuses
// with refuse.
type fakeOpenerHost struct {
	*fakeHost
	mu     sync.Mutex
	opened [][]event.Address // by, then the rooms
	refuse error
}

func (h *fakeOpenerHost) OpenPortal(_ context.Context, by event.Address, rooms ...event.Address) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refuse != nil {
		return h.refuse
	}
	h.opened = append(h.opened, append([]event.Address{by}, rooms...))
	return nil
}

var _ portalOpener = (*fakeOpenerHost)(nil)

func TestServedAlias(t *testing.T) {
	tests := []struct{ local, alias string }{
		{"#team%localhost", "#team:localhost"},
		{"#team%example.org", "#team:example.org"},
		{"#=54eam=5fa%hs.example=3a8448", "#Team_a:hs.example:8448"},
	}
	for _, tt := range tests {
		got, ok := servedAlias(tt.local)
		if !ok || got != tt.alias {
			t.Errorf("servedAlias(%q) = %q, %v; want %q", tt.local, got, ok, tt.alias)
		}
		back, ok := servedLocalpart(tt.alias)
		if !ok || back != tt.local {
			t.Errorf("servedLocalpart(%q) = %q, %v; want %q", tt.alias, back, ok, tt.local)
		}
	}
	for _, bad := range []string{"team%localhost", "#team", "#%localhost", "#team%", "#Team%localhost", "#=61%localhost", "#a=zz%b", "bob%localhost"} {
		if got, ok := servedAlias(bad); ok {
			t.Errorf("servedAlias(%q) = %q, want none", bad, got)
		}
	}
}

// presenceFrom returns a presence from from to to with inner.
func presenceFrom(from, to, inner string, attrs ...string) string {
	s := `<presence from="` + from + `" to="` + to + `"`
	for i := 0; i+1 < len(attrs); i += 2 {
		s += ` ` + attrs[i] + `="` + attrs[i+1] + `"`
	}
	return s + `>` + inner + `</presence>`
}

const mucJoin = `<x xmlns="http://jabber.org/protocol/muc"/>`

// wantStanza reads the next stanza and checks its element name, from, to
// and that its inner XML holds each of inner.
func wantStanza(t *testing.T, c *fakeConn, name, from, to string, inner ...string) rawStanza {
	t.Helper()
	p := c.recv(t)
	if p.XMLName.Local != name || p.attr("from") != from || p.attr("to") != to {
		t.Fatalf("want a %s from %s to %s, got %s from %s to %s type %q: %s", name, from, to, p.XMLName.Local, p.attr("from"), p.attr("to"), p.attr("type"), p.Inner)
	}
	for _, in := range inner {
		if !strings.Contains(p.Inner, in) {
			t.Fatalf("%s from %s to %s: want %q in %s", name, from, to, in, p.Inner)
		}
	}
	return p
}

func TestServedRoom(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	h := &fakeOpenerHost{fakeHost: newFakeHost(), refuse: errors.New("example.org is not a homeserver this gateway reaches")}
	a := startAdapterWith(t, srv.addr(), "s3cret", h)
	c := srv.next(t)
	const (
		alice = "alice@localhost/phone"
		carol = "carol@localhost/pc"
		room  = servedRoomJID
	)

	// The host refuses to open the portal: the join is refused with its
	// reason.
	c.write(presenceFrom(alice, room+"/alice", mucJoin, "id", "j0"))
	p := wantStanza(t, c, "presence", room+"/alice", alice, "not-allowed", "not a homeserver this gateway reaches")
	if p.attr("type") != "error" || p.attr("id") != "j0" {
		t.Fatalf("want an error presence answering j0, got %+v", p)
	}

	a.served.mu.Lock()
	if n := len(a.served.rooms); n != 0 {
		t.Errorf("%d rooms kept after a refused join", n)
	}
	a.served.mu.Unlock()

	// Opened: alice joins; she gets her own presence and the (empty)
	// subject, the core is told.
	h.mu.Lock()
	h.refuse = nil
	h.mu.Unlock()
	c.write(presenceFrom(alice, room+"/alice", mucJoin, "id", "j1"))
	p = wantStanza(t, c, "presence", room+"/alice", alice, `code="110"`, `role="participant"`)
	if p.attr("id") != "j1" || p.attr("type") != "" {
		t.Fatalf("self-presence: %+v", p)
	}
	wantStanza(t, c, "message", room, alice, "<subject")
	h.mu.Lock()
	opened := slices.Clone(h.opened)
	h.mu.Unlock()
	want := []event.Address{xmppAddr("alice@localhost"), {Network: event.Matrix, ID: servedAliasID}, xmppAddr(room)}
	if len(opened) != 1 || !slices.Equal(opened[0], want) {
		t.Fatalf("opened %v, want %v", opened, want)
	}
	if m := nextMember(t, h.fakeHost); m.Change != event.MemberJoined || m.From != xmppAddr("alice@localhost") || m.To != xmppAddr(room) || m.Name != "alice" || !m.Room {
		t.Fatalf("dispatched %+v, want alice's join", m)
	}

	// The service lists the room.
	c.write(`<iq type="get" id="di" from="` + alice + `" to="matrix.localhost"><query xmlns="http://jabber.org/protocol/disco#items"/></iq>`)
	wantStanza(t, c, "iq", "matrix.localhost", alice, `<item jid="`+room+`" name="`+servedAliasID+`">`)

	// A Matrix member joins, then posts: alice sees both.
	if _, err := a.Send(t.Context(), &event.Member{Header: event.Header{ID: "$j", From: xmppAddr(servedGhost), To: xmppAddr(room), Room: true}, Change: event.MemberJoined, Name: "Bob"}); err != nil {
		t.Fatalf("Send member: %v", err)
	}
	wantStanza(t, c, "presence", room+"/Bob", alice, `role="participant"`)
	post := &event.Message{Header: event.Header{ID: "$p1", From: xmppAddr(servedGhost), To: xmppAddr(room), FromName: "Bob", Room: true, Time: testNow}, Body: "hi from Matrix"}
	id, err := a.Send(t.Context(), post)
	if err != nil || id != stableID("$p1") {
		t.Fatalf("Send post: %q, %v", id, err)
	}
	p = wantStanza(t, c, "message", room+"/Bob", alice, "hi from Matrix", `<stanza-id xmlns="urn:xmpp:sid:0" id="`+id+`" by="`+room+`"`)
	if p.attr("type") != "groupchat" {
		t.Fatalf("post: %+v", p)
	}

	// carol asks for Bob's nick: conflict. As carol, she gets who is
	// there, her presence, the history and the subject; alice sees her
	// come.
	c.write(presenceFrom(carol, room+"/Bob", mucJoin, "id", "c0"))
	if p := wantStanza(t, c, "presence", room+"/Bob", carol, "conflict"); p.attr("type") != "error" {
		t.Fatalf("want a conflict, got %+v", p)
	}
	c.write(presenceFrom(carol, room+"/carol", `<x xmlns="http://jabber.org/protocol/muc"><history maxstanzas="5"/></x>`, "id", "c1"))
	wantStanza(t, c, "presence", room+"/Bob", carol)
	wantStanza(t, c, "presence", room+"/alice", carol)
	wantStanza(t, c, "presence", room+"/carol", alice)
	wantStanza(t, c, "presence", room+"/carol", carol, `code="110"`)
	wantStanza(t, c, "message", room+"/Bob", carol, "hi from Matrix", `<delay xmlns="urn:xmpp:delay" stamp="`+testNow.UTC().Format(time.RFC3339)+`"`)
	wantStanza(t, c, "message", room, carol, "<subject")
	if m := nextMember(t, h.fakeHost); m.Change != event.MemberJoined || m.From != xmppAddr("carol@localhost") {
		t.Fatalf("dispatched %+v, want carol's join", m)
	}

	// alice posts: the core gets it from her bare JID, and every XMPP
	// occupant its reflection with the room's stanza-id.
	c.write(`<message type="groupchat" id="a1" from="` + alice + `" to="` + room + `"><body>hello Matrix</body></message>`)
	m := nextMessage(t, h.fakeHost)
	if m.From != xmppAddr("alice@localhost") || m.To != xmppAddr(room) || !m.Room || m.FromName != "alice" || m.Body != "hello Matrix" || !strings.HasPrefix(m.ID, room+"/") {
		t.Fatalf("dispatched %+v", m)
	}
	sid := strings.TrimPrefix(m.ID, room+"/")
	// (The XMPP occupants are told in the order of their JIDs.)
	if p := wantStanza(t, c, "message", room+"/alice", alice, "hello Matrix", `id="`+sid+`"`); p.attr("id") != "a1" {
		t.Fatalf("alice's reflection: %+v", p)
	}
	wantStanza(t, c, "message", room+"/alice", carol, "hello Matrix", `id="`+sid+`"`)
	// The Matrix room refused it: alice's client is told.
	if _, err := a.Send(t.Context(), &event.Failure{Header: event.Header{ID: "f1", From: xmppAddr(room), To: xmppAddr("alice@localhost")}, EventID: m.ID, Reason: "the room refused it"}); err != nil {
		t.Fatal(err)
	}
	if p := wantStanza(t, c, "message", room, alice, "the room refused it"); p.attr("type") != "error" {
		t.Fatalf("failure: %+v", p)
	}

	// A Matrix member whose name is an occupant's nick gets a suffix.
	if _, err := a.Send(t.Context(), &event.Member{Header: event.Header{ID: "$j2", From: xmppAddr(servedGhost2), To: xmppAddr(room), Room: true}, Change: event.MemberJoined, Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	wantStanza(t, c, "presence", room+"/alice 2", alice)
	wantStanza(t, c, "presence", room+"/alice 2", carol)

	// alice changes her nick.
	c.write(presenceFrom(alice, room+"/Alicia", "", "id", "n1"))
	for _, to := range []string{alice, carol} {
		p := wantStanza(t, c, "presence", room+"/alice", to, `code="303"`, `nick="Alicia"`)
		if p.attr("type") != "unavailable" {
			t.Fatalf("nick change: %+v", p)
		}
		wantStanza(t, c, "presence", room+"/Alicia", to)
	}
	if m := nextMember(t, h.fakeHost); m.Change != event.MemberRenamed || m.Name != "Alicia" {
		t.Fatalf("dispatched %+v, want alice's rename", m)
	}

	// Self-pings (XEP-0410): alice is in as Alicia; carol is not in as
	// Alicia; dave is no occupant.
	pings := []struct{ from, nick, typ, cond string }{
		{alice, "Alicia", "result", ""},
		{carol, "Alicia", "error", "feature-not-implemented"},
		{"dave@localhost/x", "dave", "error", "not-acceptable"},
	}
	for _, tt := range pings {
		c.write(`<iq type="get" id="sp" from="` + tt.from + `" to="` + room + `/` + tt.nick + `"><ping xmlns="urn:xmpp:ping"/></iq>`)
		if p := wantStanza(t, c, "iq", room+"/"+tt.nick, tt.from, tt.cond); p.attr("type") != tt.typ || p.attr("id") != "sp" {
			t.Fatalf("self-ping of %s as %s: %+v", tt.from, tt.nick, p)
		}
	}

	// alice's other client joins with her nick: it is told who is there
	// and the history; nobody else sees anyone new, nor does the core.
	// Leaving, it alone is told.
	const laptop = "alice@localhost/laptop"
	c.write(presenceFrom(laptop, room+"/Alicia", mucJoin, "id", "l1"))
	for _, nick := range []string{"Bob", "alice 2", "carol"} {
		wantStanza(t, c, "presence", room+"/"+nick, laptop)
	}
	wantStanza(t, c, "presence", room+"/Alicia", laptop, `code="110"`)
	wantStanza(t, c, "message", room+"/Bob", laptop, "hi from Matrix", "urn:xmpp:delay")
	wantStanza(t, c, "message", room+"/alice", laptop, "hello Matrix", "urn:xmpp:delay")
	wantStanza(t, c, "message", room, laptop, "<subject")
	c.write(presenceFrom(laptop, room+"/Alicia", "", "type", "unavailable"))
	if p := wantStanza(t, c, "presence", room+"/Alicia", laptop, `code="110"`); p.attr("type") != "unavailable" {
		t.Fatalf("laptop's leave: %+v", p)
	}

	// What the room does not take.
	refused := []struct{ name, stanza, from, to, cond string }{
		{"a private message", `<message type="chat" id="x" from="` + carol + `" to="` + room + `/Bob"><body>psst</body></message>`, room + "/Bob", carol, "feature-not-implemented"},
		{"a post from a non-occupant", `<message type="groupchat" id="x" from="dave@localhost/x" to="` + room + `"><body>hi</body></message>`, room, "dave@localhost/x", "not-acceptable"},
		{"a subject change", `<message type="groupchat" id="x" from="` + carol + `" to="` + room + `"><subject>mine</subject></message>`, room, carol, "forbidden"},
		{"a user of another server", presenceFrom("eve@evil.example/x", room+"/eve", mucJoin), room + "/eve", "eve@evil.example/x", "not-allowed"},
		{"a hostile nick", presenceFrom("dave@localhost/x", room+"/\u202eecila", mucJoin), room, "dave@localhost/x", "jid-malformed"},
		{"a nick that changes", presenceFrom("dave@localhost/x", room+"/ dave", mucJoin), room + "/ dave", "dave@localhost/x", "not-acceptable"},
		{"no nick", presenceFrom("dave@localhost/x", room, mucJoin), room, "dave@localhost/x", "jid-malformed"},
	}
	for _, tt := range refused {
		c.write(tt.stanza)
		kind := "presence"
		if strings.HasPrefix(tt.stanza, "<message") {
			kind = "message"
		}
		if p := wantStanza(t, c, kind, tt.from, tt.to, tt.cond); p.attr("type") != "error" {
			t.Fatalf("%s: want an error, got %+v", tt.name, p)
		}
	}

	// carol leaves: alice sees it, carol gets her own, the core is told.
	c.write(presenceFrom(carol, room+"/carol", "", "type", "unavailable"))
	wantStanza(t, c, "presence", room+"/carol", alice)
	if p := wantStanza(t, c, "presence", room+"/carol", carol, `code="110"`); p.attr("type") != "unavailable" {
		t.Fatalf("self unavailable: %+v", p)
	}
	if m := nextMember(t, h.fakeHost); m.Change != event.MemberLeft || m.From != xmppAddr("carol@localhost") {
		t.Fatalf("dispatched %+v, want carol's leave", m)
	}
	// The Matrix member Bob leaves; only alice is told.
	if _, err := a.Send(t.Context(), &event.Member{Header: event.Header{ID: "$l", From: xmppAddr(servedGhost), To: xmppAddr(room), Room: true}, Change: event.MemberLeft}); err != nil {
		t.Fatal(err)
	}
	if p := wantStanza(t, c, "presence", room+"/Bob", alice); p.attr("type") != "unavailable" {
		t.Fatalf("Bob's leave: %+v", p)
	}
	// A Matrix member the room did not know posts: it comes first. Its
	// topic change is the room's subject.
	if _, err := a.Send(t.Context(), &event.Message{Header: event.Header{ID: "$p2", From: xmppAddr(servedGhost), To: xmppAddr(room), FromName: "Bob", Room: true}, Body: "back"}); err != nil {
		t.Fatal(err)
	}
	if p := wantStanza(t, c, "presence", room+"/Bob", alice); p.attr("type") != "" {
		t.Fatalf("Bob's return: %+v", p)
	}
	wantStanza(t, c, "message", room+"/Bob", alice, "back")
	if _, err := a.Send(t.Context(), &event.Topic{Header: event.Header{ID: "$t", From: xmppAddr(servedGhost), To: xmppAddr(room), FromName: "Bob", Room: true}, Text: "Plans"}); err != nil {
		t.Fatal(err)
	}
	wantStanza(t, c, "message", room+"/Bob", alice, "<subject>Plans</subject>")
	select {
	case evt := <-h.dispatched:
		t.Fatalf("dispatched %+v, want nothing more", evt)
	default:
	}
}

func TestServedRoomWithoutOpener(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	startAdapterWith(t, srv.addr(), "s3cret", newFakeHost())
	c := srv.next(t)
	c.write(presenceFrom("alice@localhost/phone", servedRoomJID+"/alice", mucJoin))
	p := wantStanza(t, c, "presence", servedRoomJID+"/alice", "alice@localhost/phone", "item-not-found", "does not open Matrix rooms on demand")
	if p.attr("type") != "error" {
		t.Fatalf("want an error, got %+v", p)
	}
}

func TestServedHistoryRequest(t *testing.T) {
	var hist []servedPost
	for i := range 5 {
		hist = append(hist, servedPost{id: string(rune('a' + i)), at: testNow.Add(time.Duration(i-5) * time.Minute)})
	}
	ids := func(ps []servedPost) string {
		var s string
		for _, p := range ps {
			s += p.id
		}
		return s
	}
	tests := []struct {
		name string
		req  *servedHistoryRequest
		want string
	}{
		{"no request", nil, "abcde"},
		{"maxstanzas", &servedHistoryRequest{MaxStanzas: "2"}, "de"},
		{"none", &servedHistoryRequest{MaxStanzas: "0"}, ""},
		{"no characters", &servedHistoryRequest{MaxChars: "0"}, ""},
		{"seconds", &servedHistoryRequest{Seconds: "150"}, "de"},
		{"since", &servedHistoryRequest{Since: testNow.Add(-3 * time.Minute).UTC().Format(time.RFC3339)}, "cde"},
		{"garbage", &servedHistoryRequest{MaxStanzas: "-1", Seconds: "x", Since: "y"}, "abcde"},
	}
	for _, tt := range tests {
		if got := ids(tt.req.pick(hist, testNow)); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
