package xmpp

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

const (
	testRoom   = "team@conference.localhost"
	roomGhost  = "bob%localhost@matrix.localhost"
	roomGhost2 = "robert%localhost@matrix.localhost"
)

// fakeRoomHost is a fakeHost that names portal rooms.
type fakeRoomHost struct {
	*fakeHost
	rooms []event.Address
}

func (h *fakeRoomHost) Rooms(n event.Network) []event.Address {
	if n != event.XMPP {
		return nil
	}
	return h.rooms
}

var _ bridges.RoomHost = (*fakeRoomHost)(nil)

func TestCleanNick(t *testing.T) {
	long := strings.Repeat("é", 70)
	tests := []struct{ name, in, want string }{
		{"plain", "Bob", "Bob"},
		{"trimmed", "  Bob Smith \t", "Bob Smith"},
		{"spaces collapsed", "Bob \n\n  Smith", "Bob Smith"},
		{"control characters", "Bo\x00b\x1b[31m", "Bob[31m"},
		{"bidi overrides", "\u202eboB\u202c \u2067x\u2069", "boB x"},
		{"zero-width", "B\u200bo\u200db", "Bob"},
		{"invalid UTF-8", "Bo\xffb", "Bob"},
		{"long", long, strings.Repeat("é", maxNick)},
		{"nothing left", "\u202e \x00", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cleanNick(tt.in); got != tt.want {
				t.Errorf("cleanNick(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestNickCandidate(t *testing.T) {
	if got := nickCandidate("Bob", 0); got != "Bob" {
		t.Errorf("attempt 0: %q", got)
	}
	if got := nickCandidate("Bob", 1); got != "Bob 2" {
		t.Errorf("attempt 1: %q", got)
	}
	long := strings.Repeat("x", maxNick)
	got := nickCandidate(long, 9)
	if utf8.RuneCountInString(got) != maxNick || !strings.HasSuffix(got, " 10") {
		t.Errorf("attempt 9 of a long nick: %q", got)
	}
}

func TestBaseNick(t *testing.T) {
	room, g := mustJID(t, testRoom), mustJID(t, roomGhost)
	if got := baseNick(room, g, "Bob (Matrix)"); got != "Bob (Matrix)" {
		t.Errorf("display name: %q", got)
	}
	if got := baseNick(room, g, "\u202e"); got != "bob%localhost" {
		t.Errorf("no usable display name: %q", got)
	}
}

// roomMsg returns a message from the room testRoom.
func roomMsg(inner string, attrs ...string) string {
	return msg(inner, append([]string{"type", "groupchat"}, attrs...)...)
}

func TestTranslateRoomMessage(t *testing.T) {
	a := newTestAdapter(t)
	room := mustJID(t, testRoom)
	a.rooms.joined(0, testRoom, "matrix.localhost", "Parley")
	a.rooms.joined(0, testRoom, roomGhost, "Bob")
	a.rooms.occupant(testRoom, "alice", "alice@localhost")
	a.rooms.occupant(testRoom, "Old Bob", roomGhost2)
	listener := "matrix.localhost"

	dispatched := []struct {
		name, stanza   string
		from, id, nick string
	}{
		{"revealed real JID", roomMsg(`<body>hi</body>`, "id", "m1", "from", testRoom+"/alice", "to", listener),
			"alice@localhost", testRoom + "/m1", "alice"},
		{"anonymous occupant", roomMsg(`<body>hi</body>`, "id", "m1", "from", testRoom+"/carol", "to", listener),
			testRoom + "/carol", testRoom + "/m1", "carol"},
		{"the room's stanza-id", roomMsg(`<body>hi</body><stanza-id xmlns="urn:xmpp:sid:0" by="mallory@localhost" id="forged"/><stanza-id xmlns="urn:xmpp:sid:0" by="Team@conference.localhost" id="s-1"/>`, "id", "m1", "from", testRoom+"/alice", "to", listener),
			"alice@localhost", testRoom + "/s-1", "alice"},
		{"origin-id without id", roomMsg(`<body>hi</body><origin-id xmlns="urn:xmpp:sid:0" id="o-1"/>`, "from", testRoom+"/alice", "to", listener),
			"alice@localhost", testRoom + "/o-1", "alice"},
	}
	for _, tt := range dispatched {
		t.Run(tt.name, func(t *testing.T) {
			in := a.translateRoomMessage(parseMessage(t, tt.stanza), room, testNow)
			if in.action != dispatch {
				t.Fatalf("action %d (%s), want dispatch", in.action, in.reason)
			}
			want := event.Header{ID: tt.id, From: xmppAddr(tt.from), To: xmppAddr(testRoom), FromName: tt.nick, Room: true, Time: testNow}
			if in.evt.Header != want || in.evt.Body != "hi" {
				t.Errorf("got %+v, want %+v", in.evt.Header, want)
			}
		})
	}

	ignored := []struct{ name, stanza, reason string }{
		{"copy to a ghost", roomMsg(`<body>hi</body>`, "id", "m1", "from", testRoom+"/alice", "to", roomGhost), "copy to a ghost"},
		{"reflection", roomMsg(`<body>hi</body>`, "id", "m1", "from", testRoom+"/Bob", "to", listener), "reflection of Parley's own post"},
		{"the listener's nick", roomMsg(`<body>hi</body>`, "id", "m1", "from", testRoom+"/Parley", "to", listener), "reflection of Parley's own post"},
		{"Parley's id", roomMsg(`<body>hi</body><origin-id xmlns="urn:xmpp:sid:0" id="`+stableID("$x")+`"/>`, "id", "x", "from", testRoom+"/Bobby", "to", listener), "reflection of Parley's own post"},
		{"a ghost of an earlier session", roomMsg(`<body>hi</body>`, "id", "m1", "from", testRoom+"/Old Bob", "to", listener), "reflection of Parley's own post"},
		{"history", roomMsg(`<body>old</body><delay xmlns="urn:xmpp:delay" stamp="2025-01-01T00:00:00Z"/>`, "id", "m1", "from", testRoom+"/alice", "to", listener), "history"},
		{"subject", roomMsg(`<subject>Plans</subject>`, "id", "m1", "from", testRoom+"/alice", "to", listener), "no body"},
		{"from the room", roomMsg(`<body>The room is now non-anonymous</body>`, "id", "m1", "from", testRoom, "to", listener), "from the room itself"},
		{"private message", msg(`<body>psst</body>`, "type", "chat", "id", "m1", "from", testRoom+"/alice", "to", roomGhost), "not a groupchat (a private message, an invitation...)"},
		{"to another domain", roomMsg(`<body>hi</body>`, "id", "m1", "from", testRoom+"/alice", "to", "localhost"), "not addressed to the component domain"},
		{"error", msg(`<error type="cancel"><not-acceptable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error>`, "type", "error", "id", "m1", "from", testRoom, "to", roomGhost), "error message"},
	}
	for _, tt := range ignored {
		t.Run(tt.name, func(t *testing.T) {
			in := a.translateRoomMessage(parseMessage(t, tt.stanza), room, testNow)
			if in.action != ignore || in.reason != tt.reason {
				t.Fatalf("action %d (%s), want ignore (%s)", in.action, in.reason, tt.reason)
			}
		})
	}
	// The error told that the ghost is no occupant any more.
	if _, ok := a.rooms.nick(testRoom, roomGhost); ok {
		t.Error("the ghost is still an occupant after its post was refused")
	}
}

// selfPresence is the room's answer to a join of to as nick.
func selfPresence(nick, to string) string {
	return `<presence from="` + testRoom + `/` + nick + `" to="` + to + `"><x xmlns="http://jabber.org/protocol/muc#user"><item affiliation="none" role="participant"/><status code="110"/></x></presence>`
}

// wantJoin reads the next stanza and checks it is a join of from as nick.
func wantJoin(t *testing.T, c *fakeConn, from, nick string) {
	t.Helper()
	wantJoinWith(t, c, from, nick, `maxstanzas="0"`)
}

// wantJoinWith reads the next stanza and checks it is a join of from as
// nick whose history request has history in it.
func wantJoinWith(t *testing.T, c *fakeConn, from, nick, history string) rawStanza {
	t.Helper()
	p := c.recv(t)
	if p.XMLName.Local != "presence" || p.attr("from") != from || p.attr("to") != testRoom+"/"+nick || p.attr("type") != "" ||
		!strings.Contains(p.Inner, `xmlns="http://jabber.org/protocol/muc"`) || !strings.Contains(p.Inner, history) {
		t.Fatalf("want a join of %s as %q with %s, got %+v", from, nick, history, p)
	}
	return p
}

// sendAsync runs Send in a goroutine; the result comes on the channel.
func sendAsync(t *testing.T, a *Adapter, m *event.Message) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := a.Send(t.Context(), m)
		ch <- err
	}()
	return ch
}

func waitSend(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(testTimeout):
		t.Fatal("Send did not return")
		return nil
	}
}

func roomPost(id, from, name, body string) *event.Message {
	return &event.Message{Header: event.Header{ID: id, From: xmppAddr(from), To: xmppAddr(testRoom), FromName: name, Room: true}, Body: body}
}

func TestAdapterRoom(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	h := &fakeRoomHost{fakeHost: newFakeHost(), rooms: []event.Address{xmppAddr(testRoom)}}
	a := startAdapterWith(t, srv.addr(), "s3cret", h)
	c := srv.next(t)

	// The listener joins the portal room; the room tells who is there
	// (alice, whose real JID it reveals), then the listener's own presence.
	wantJoin(t, c, "matrix.localhost", listenerNick)
	c.write(`<presence from="` + testRoom + `/alice" to="matrix.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><item jid="alice@localhost/phone" affiliation="owner" role="moderator"/></x></presence>`)
	c.write(selfPresence(listenerNick, "matrix.localhost"))
	if e := nextMember(t, h.fakeHost); e.Change != event.MemberJoined || e.From != xmppAddr("alice@localhost") {
		t.Fatalf("dispatched %+v, want alice's join", e)
	}
	// A subject, then alice's post, to the listener and to a ghost of an
	// earlier session: dispatched once.
	c.write(roomMsg(`<subject>Plans</subject>`, "from", testRoom+"/alice", "to", "matrix.localhost"))
	c.write(roomMsg(`<body>hello room</body>`, "id", "a1", "from", testRoom+"/alice", "to", roomGhost2))
	c.write(roomMsg(`<body>hello room</body>`, "id", "a1", "from", testRoom+"/alice", "to", "matrix.localhost"))
	m := nextMessage(t, h.fakeHost)
	want := event.Header{ID: testRoom + "/a1", From: xmppAddr("alice@localhost"), To: xmppAddr(testRoom), FromName: "alice", Room: true, Time: m.Time}
	if m.Header != want || m.Body != "hello room" {
		t.Fatalf("dispatched %+v, want %+v", m.Header, want)
	}

	// A ghost posts: it joins first; its display name is taken, so it
	// joins as "Bob 2", then posts.
	done := sendAsync(t, a, roomPost("$e1", roomGhost, "Bob", "hi all"))
	wantJoin(t, c, roomGhost, "Bob")
	c.write(`<presence type="error" from="` + testRoom + `/Bob" to="` + roomGhost + `"><error type="cancel"><conflict xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></presence>`)
	wantJoin(t, c, roomGhost, "Bob 2")
	c.write(selfPresence("Bob 2", roomGhost))
	p := c.recv(t)
	if p.XMLName.Local != "message" || p.attr("type") != "groupchat" || p.attr("from") != roomGhost || p.attr("to") != testRoom ||
		p.attr("id") != stableID("$e1") || !strings.Contains(p.Inner, "hi all") {
		t.Fatalf("want the ghost's post, got %+v", p)
	}
	if err := waitSend(t, done); err != nil {
		t.Fatalf("Send: %v", err)
	}
	// Its reflection is not dispatched; a second post needs no join.
	c.write(roomMsg(`<body>hi all</body>`, "id", p.attr("id"), "from", testRoom+"/Bob 2", "to", "matrix.localhost"))
	done = sendAsync(t, a, roomPost("$e2", roomGhost, "Bob", "again"))
	if p := c.recv(t); p.XMLName.Local != "message" || !strings.Contains(p.Inner, "again") {
		t.Fatalf("want the second post at once, got %+v", p)
	}
	if err := waitSend(t, done); err != nil {
		t.Fatalf("Send: %v", err)
	}
	// (The next post of alice shows that nothing was dispatched between.)
	c.write(roomMsg(`<body>welcome</body>`, "id", "a2", "from", testRoom+"/alice", "to", "matrix.localhost"))
	if m := nextMessage(t, h.fakeHost); m.ID != testRoom+"/a2" {
		t.Fatalf("dispatched %+v, want alice's a2 only", m)
	}

	// A room that refuses the ghost: a permanent error that says so.
	done = sendAsync(t, a, roomPost("$e3", roomGhost2, "Robert", "let me in"))
	wantJoin(t, c, roomGhost2, "Robert")
	c.write(`<presence type="error" from="` + testRoom + `/Robert" to="` + roomGhost2 + `"><error type="auth"><forbidden xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></presence>`)
	err := waitSend(t, done)
	if !bridges.IsPermanent(err) || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("Send = %v, want a permanent refusal", err)
	}

	// After a reconnection, the listener joins again, and so does the
	// ghost before its next post.
	_ = c.conn.Close()
	c = srv.next(t)
	// Alice's posts were dispatched: the listener asks for the history
	// since then.
	wantJoinWith(t, c, "matrix.localhost", listenerNick, `since="`)
	c.write(selfPresence(listenerNick, "matrix.localhost"))
	// It asks the room's archive too; this room keeps none.
	answerNoArchive(t, c)
	done = sendAsync(t, a, roomPost("$e4", roomGhost, "Bob", "back"))
	wantJoin(t, c, roomGhost, "Bob")
	c.write(selfPresence("Bob", roomGhost))
	if p := c.recv(t); p.XMLName.Local != "message" || !strings.Contains(p.Inner, "back") {
		t.Fatalf("want the post after the join, got %+v", p)
	}
	if err := waitSend(t, done); err != nil {
		t.Fatalf("Send: %v", err)
	}
}

// nextMessage returns the next event dispatched, which must be a message.
func nextMessage(t *testing.T, h *fakeHost) *event.Message {
	t.Helper()
	select {
	case evt := <-h.dispatched:
		m, ok := evt.(*event.Message)
		if !ok {
			t.Fatalf("dispatched %T", evt)
		}
		return m
	case <-time.After(testTimeout):
		t.Fatal("nothing dispatched")
		return nil
	}
}

func TestSendRoomErrors(t *testing.T) {
	a := newTestAdapter(t)
	post := roomPost("1", roomGhost, "Bob", "x")
	if _, err := a.Send(t.Context(), post); !errors.Is(err, errNotConnected) || bridges.IsPermanent(err) {
		t.Fatalf("Send = %v, want a non-permanent errNotConnected", err)
	}
	tests := []struct {
		name string
		m    *event.Message
	}{
		{"to a full JID", roomPost("1", roomGhost, "Bob", "x")},
		{"to a domain", roomPost("1", roomGhost, "Bob", "x")},
		{"from the domain", roomPost("1", "matrix.localhost", "Bob", "x")},
		{"from outside", roomPost("1", "bob@localhost", "Bob", "x")},
		{"no body", roomPost("1", roomGhost, "Bob", "")},
	}
	tests[0].m.To = xmppAddr(testRoom + "/Bob")
	tests[1].m.To = xmppAddr("conference.localhost")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Send(t.Context(), tt.m)
			if !bridges.IsPermanent(err) {
				t.Fatalf("Send = %v, want a permanent error", err)
			}
		})
	}
}

// FuzzRoomStanzas feeds arbitrary XML to the room paths, as a message and
// as a presence from a known room: nothing may panic, and what is
// dispatched must be a well-formed room post.
func FuzzRoomStanzas(f *testing.F) {
	seeds := []string{
		roomMsg(`<body>hi</body>`, "id", "m1", "from", testRoom+"/alice", "to", "matrix.localhost"),
		roomMsg(`<body>hi</body><stanza-id xmlns="urn:xmpp:sid:0" by="`+testRoom+`" id="s1"/>`, "from", testRoom+"/alice", "to", "matrix.localhost"),
		roomMsg(`<body>old</body><delay xmlns="urn:xmpp:delay"/>`, "from", testRoom+"/alice", "to", "matrix.localhost"),
		roomMsg(`<subject>x</subject>`, "from", testRoom+"/Parley", "to", "matrix.localhost"),
		selfPresence("Bob", roomGhost),
		`<presence from="` + testRoom + `/alice" to="matrix.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><item jid="alice@localhost/phone"/></x></presence>`,
		`<presence type="unavailable" from="` + testRoom + `/alice" to="matrix.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><status code="110"/></x></presence>`,
		`<presence type="error" from="` + testRoom + `/Bob" to="` + roomGhost + `"><error type="cancel"><conflict xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></presence>`,
		`<presence><x xmlns="http://jabber.org/protocol/muc#user"><status code="x"/></x>`,
		`<presence from="` + testRoom + `/carol" to="matrix.localhost" id="p1"><x xmlns="http://jabber.org/protocol/muc#user"><item role="participant"/></x></presence>`,
		`<presence type="unavailable" from="` + testRoom + `/carol" to="matrix.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><item nick="Caro"/><status code="303"/></x></presence>`,
		`<presence type="unavailable" from="` + testRoom + `/Caro" to="matrix.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><item><reason>spam</reason></item><status code="307"/></x></presence>`,
		roomMsg(`<body>old</body><delay xmlns="urn:xmpp:delay" stamp="2026-01-01T10:00:00Z"/>`, "id", "h1", "from", testRoom+"/alice", "to", "matrix.localhost"),
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	a := newTestAdapter(f)
	room := mustJID(f, testRoom)
	a.rooms.room(testRoom)
	// History since a cursor is dispatched too.
	a.rooms.wantHistory(testRoom, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), testRoom+"/h0")
	var bad error
	a.host = funcHost{fakeHost: newFakeHost(), f: func(evt event.Event) error {
		m, ok := evt.(*event.Member)
		if !ok {
			bad = errors.New("a presence dispatched something else than a membership change")
			return nil
		}
		j, err := parseBare(m.From.ID)
		if !m.Room || m.To != xmppAddr(testRoom) || !m.Change.Valid() || m.From.ID == "" || (err == nil && j.Domainpart() == "matrix.localhost") ||
			!strings.HasPrefix(m.ID, testRoom+"/member/") {
			bad = errors.New("bad membership change")
		}
		return nil
	}}
	f.Fuzz(func(t *testing.T, data []byte) {
		bad = nil
		defer func() {
			if bad != nil {
				t.Fatal(bad)
			}
		}()
		_ = a.handleRoomPresence(t.Context(), xml.NewDecoder(bytes.NewReader(data)), room)
		m, err := decodeMessage(xml.NewDecoder(bytes.NewReader(data)))
		if err != nil {
			return
		}
		in := a.translateRoomMessage(m, room, testNow)
		if in.action == refuse {
			t.Fatal("a room message is never refused")
		}
		if in.action != dispatch {
			return
		}
		e := in.evt
		if !e.Room || e.Body == "" || e.To != xmppAddr(testRoom) || e.FromName == "" || !strings.HasPrefix(e.ID, testRoom+"/") || len(e.ID) == len(testRoom)+1 {
			t.Fatalf("bad event %+v", e)
		}
		if j, err := parseBare(e.From.ID); err == nil && j.Domainpart() == "matrix.localhost" {
			t.Fatalf("dispatched a post of Parley's own: %+v", e)
		}
	})
}

// funcHost is a fakeHost whose Dispatch is f alone.
type funcHost struct {
	*fakeHost
	f func(event.Event) error
}

func (h funcHost) Dispatch(_ context.Context, evt event.Event) error { return h.f(evt) }

// nextMember returns the next event dispatched, which must be a
// membership change.
func nextMember(t *testing.T, h *fakeHost) *event.Member {
	t.Helper()
	select {
	case evt := <-h.dispatched:
		m, ok := evt.(*event.Member)
		if !ok {
			t.Fatalf("dispatched %T %+v, want a membership change", evt, evt)
		}
		return m
	case <-time.After(testTimeout):
		t.Fatal("nothing dispatched")
		return nil
	}
}

// occupantPresence is a presence of the occupant nick of testRoom to the
// listener; inner goes into its muc#user <x/>.
func occupantPresence(nick, typ, id, inner string) string {
	attrs := ""
	if typ != "" {
		attrs += ` type="` + typ + `"`
	}
	if id != "" {
		attrs += ` id="` + id + `"`
	}
	return `<presence from="` + testRoom + `/` + nick + `" to="matrix.localhost"` + attrs + `><x xmlns="http://jabber.org/protocol/muc#user">` + inner + `</x></presence>`
}

func memberEvent(id, from string, change event.MemberChange, name, reason string) event.Member {
	nick := name
	if change == event.MemberLeft {
		nick = ""
	}
	return event.Member{
		Header: event.Header{ID: id, From: xmppAddr(from), To: xmppAddr(testRoom), FromName: nick, Room: true, Time: testNow},
		Change: change, Name: name, Reason: reason,
	}
}

func TestAdapterRoomMembers(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	h := &fakeRoomHost{fakeHost: newFakeHost(), rooms: []event.Address{xmppAddr(testRoom)}}
	a := startAdapterWith(t, srv.addr(), "s3cret", h)
	a.now = func() time.Time { return testNow }
	c := srv.next(t)
	ts := strconv.FormatInt(testNow.UnixNano(), 10)
	want := func(w event.Member) {
		t.Helper()
		if got := nextMember(t, h.fakeHost); *got != w {
			t.Fatalf("dispatched\n%+v, want\n%+v", *got, w)
		}
	}
	aliceItem := `<item jid="alice@localhost/phone" affiliation="member" role="participant"/>`

	// The room's list: alice (her real JID revealed) and a ghost of an
	// earlier session (under the component domain): only alice joins.
	wantJoin(t, c, "matrix.localhost", listenerNick)
	c.write(occupantPresence("alice", "", "pa1", aliceItem))
	c.write(occupantPresence("Old Bob", "", "", `<item jid="`+roomGhost2+`/x" role="participant"/>`))
	c.write(selfPresence(listenerNick, "matrix.localhost"))
	want(memberEvent(testRoom+"/member/alice@localhost/joined/pa1", "alice@localhost", event.MemberJoined, "alice", ""))

	// An anonymous occupant comes, changes status (nothing), changes nick
	// (left and joined, their address changing), and is kicked.
	c.write(occupantPresence("carol", "", "pc1", `<item role="participant"/>`))
	want(memberEvent(testRoom+"/member/"+testRoom+"/carol/joined/pc1", testRoom+"/carol", event.MemberJoined, "carol", ""))
	c.write(occupantPresence("carol", "", "pc2", `<item role="participant"/>`))
	c.write(occupantPresence("carol", "unavailable", "", `<item nick="Caro" role="participant"/><status code="303"/>`))
	want(memberEvent(testRoom+"/member/"+testRoom+"/carol/left/"+ts, testRoom+"/carol", event.MemberLeft, "", ""))
	want(memberEvent(testRoom+"/member/"+testRoom+"/Caro/joined/"+ts, testRoom+"/Caro", event.MemberJoined, "Caro", ""))
	c.write(occupantPresence("Caro", "", "", `<item role="participant"/>`))
	c.write(occupantPresence("Caro", "unavailable", "pc3", `<item role="none"><reason>spam</reason></item><status code="307"/>`))
	want(memberEvent(testRoom+"/member/"+testRoom+"/Caro/left/pc3", testRoom+"/Caro", event.MemberLeft, "", "spam"))

	// Alice changes nick: one rename, from the same participant.
	c.write(occupantPresence("alice", "unavailable", "pa2", `<item nick="Alice B" jid="alice@localhost/phone"/><status code="303"/>`))
	c.write(occupantPresence("Alice B", "", "pa2", aliceItem))
	want(memberEvent(testRoom+"/member/alice@localhost/renamed/pa2", "alice@localhost", event.MemberRenamed, "Alice B", ""))

	// A ghost joins; the listener sees it before the ghost has the room's
	// answer: not dispatched.
	send := func(m *event.Member) <-chan error {
		ch := make(chan error, 1)
		go func() { _, err := a.Send(t.Context(), m); ch <- err }()
		return ch
	}
	member := func(change event.MemberChange, name, reason string) *event.Member {
		return &event.Member{Header: event.Header{ID: "$" + name + reason, From: xmppAddr(roomGhost), To: xmppAddr(testRoom), Room: true},
			Change: change, Name: name, Reason: reason}
	}
	done := send(member(event.MemberJoined, "Bob", ""))
	wantJoin(t, c, roomGhost, "Bob")
	c.write(occupantPresence("Bob", "", "", `<item role="participant"/>`))
	c.write(selfPresence("Bob", roomGhost))
	if err := waitSend(t, done); err != nil {
		t.Fatalf("Send joined: %v", err)
	}
	// Renamed: a presence to the new nick without <x/>; the new nick is
	// taken, so the ghost asks for the next.
	done = send(member(event.MemberRenamed, "Robert", ""))
	for _, nick := range []string{"Robert", "Robert 2"} {
		p := c.recv(t)
		if p.XMLName.Local != "presence" || p.attr("to") != testRoom+"/"+nick || p.attr("from") != roomGhost || strings.Contains(p.Inner, "http://jabber.org/protocol/muc") {
			t.Fatalf("want a nick change to %q, got %+v", nick, p)
		}
		if nick == "Robert" {
			c.write(`<presence type="error" from="` + testRoom + `/Robert" to="` + roomGhost + `"><error type="cancel"><conflict xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></presence>`)
		}
	}
	c.write(occupantPresence("Bob", "unavailable", "", `<item nick="Robert 2"/><status code="303"/>`))
	c.write(`<presence type="unavailable" from="` + testRoom + `/Bob" to="` + roomGhost + `"><x xmlns="http://jabber.org/protocol/muc#user"><item nick="Robert 2"/><status code="303"/><status code="110"/></x></presence>`)
	c.write(occupantPresence("Robert 2", "", "", `<item role="participant"/>`))
	c.write(selfPresence("Robert 2", roomGhost))
	if err := waitSend(t, done); err != nil {
		t.Fatalf("Send renamed: %v", err)
	}
	if n, _ := a.rooms.nick(testRoom, roomGhost); n != "Robert 2" {
		t.Fatalf("the ghost's nick is %q", n)
	}
	// Joined with the name it has: nothing to do.
	if err := waitSend(t, send(member(event.MemberJoined, "Robert", ""))); err != nil {
		t.Fatal(err)
	}
	// Left, with a reason.
	done = send(member(event.MemberLeft, "", "gone fishing"))
	p := c.recv(t)
	if p.XMLName.Local != "presence" || p.attr("type") != "unavailable" || p.attr("to") != testRoom+"/Robert 2" || !strings.Contains(p.Inner, "gone fishing") {
		t.Fatalf("want the ghost's leave, got %+v", p)
	}
	if err := waitSend(t, done); err != nil {
		t.Fatalf("Send left: %v", err)
	}
	c.write(occupantPresence("Robert 2", "unavailable", "", `<item role="none"/>`))
	if _, ok := a.rooms.nick(testRoom, roomGhost); ok {
		t.Fatal("the ghost is still an occupant")
	}
	// Not an occupant: Left and Renamed have nothing to do.
	for _, m := range []*event.Member{member(event.MemberLeft, "", ""), member(event.MemberRenamed, "X", "")} {
		if err := waitSend(t, send(m)); err != nil {
			t.Fatal(err)
		}
	}

	// dave joins, and the ghost again; Parley reconnects. The room's list
	// has Alice B (announced already) and the ghost of the last session,
	// the room not revealing its JID, but no dave: he left while Parley
	// was away.
	c.write(occupantPresence("dave", "", "pd1", `<item jid="dave@localhost/x"/>`))
	want(memberEvent(testRoom+"/member/dave@localhost/joined/pd1", "dave@localhost", event.MemberJoined, "dave", ""))
	done = send(member(event.MemberJoined, "Bob", ""))
	wantJoin(t, c, roomGhost, "Bob")
	c.write(selfPresence("Bob", roomGhost))
	if err := waitSend(t, done); err != nil {
		t.Fatalf("Send joined: %v", err)
	}
	c.write(occupantPresence("Bob", "", "", `<item role="participant"/>`))
	_ = c.conn.Close()
	c = srv.next(t)
	wantJoin(t, c, "matrix.localhost", listenerNick)
	c.write(occupantPresence("Bob", "", "", `<item role="participant"/>`))
	c.write(occupantPresence("Alice B", "", "pa2", aliceItem))
	c.write(selfPresence(listenerNick, "matrix.localhost"))
	want(memberEvent(testRoom+"/member/dave@localhost/left/away-"+ts, "dave@localhost", event.MemberLeft, "", ""))
	// (Alice's next post shows that nothing else was dispatched.)
	c.write(roomMsg(`<body>still here</body>`, "id", "a9", "from", testRoom+"/Alice B", "to", "matrix.localhost"))
	if m := nextMessage(t, h.fakeHost); m.ID != testRoom+"/a9" || m.From != xmppAddr("alice@localhost") {
		t.Fatalf("dispatched %+v, want alice's post", m)
	}
}

func TestTranslateRoomHistory(t *testing.T) {
	a := newTestAdapter(t)
	room := mustJID(t, testRoom)
	a.rooms.joined(0, testRoom, "matrix.localhost", "Parley")
	delayed := func(id, stamp string) messageStanza {
		return parseMessage(t, roomMsg(`<body>old</body><delay xmlns="urn:xmpp:delay" stamp="`+stamp+`"/>`,
			"id", id, "from", testRoom+"/alice", "to", "matrix.localhost"))
	}
	// Without a cursor, history is not dispatched.
	if in := a.translateRoomMessage(delayed("h1", "2026-01-01T10:00:00Z"), room, testNow); in.action != ignore || in.reason != "history" {
		t.Fatalf("history without a cursor: action %d (%s)", in.action, in.reason)
	}
	cursor := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	a.rooms.wantHistory(testRoom, cursor.Add(-cursorSlack), testRoom+"/h1")
	tests := []struct{ name, id, stamp, reason string }{
		{"the cursor's post", "h1", "2026-01-01T10:00:00Z", "history: the post of the room's cursor"},
		{"before the cursor", "h0", "2026-01-01T09:58:59Z", "history before the room's cursor"},
		{"no stamp", "h2", "", "history without a valid stamp"},
		{"after the cursor", "h2", "2026-01-01T10:00:01Z", ""},
		{"within the slack", "h3", "2026-01-01T09:59:30Z", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := a.translateRoomMessage(delayed(tt.id, tt.stamp), room, testNow)
			if tt.reason != "" {
				if in.action != ignore || in.reason != tt.reason {
					t.Fatalf("action %d (%s), want ignore (%s)", in.action, in.reason, tt.reason)
				}
				return
			}
			stamp, _ := time.Parse(time.RFC3339, tt.stamp)
			if in.action != dispatch || in.evt.ID != testRoom+"/"+tt.id || !in.evt.Time.Equal(stamp) {
				t.Fatalf("action %d (%s), evt %+v; want dispatched at the stamp", in.action, in.reason, in.evt)
			}
		})
	}
}

// answerNoArchive reads the listener's archive query (XEP-0313) and answers
// it as a room without an archive does.
func answerNoArchive(t *testing.T, c *fakeConn) {
	t.Helper()
	q := c.recv(t)
	if q.XMLName.Local != "iq" || q.attr("type") != "set" || !strings.Contains(q.Inner, `xmlns="urn:xmpp:mam:2"`) {
		t.Fatalf("want an archive query, got %+v", q)
	}
	c.write(`<iq type="error" id="` + q.attr("id") + `" from="` + testRoom + `" to="matrix.localhost"><error type="cancel">` +
		`<feature-not-implemented xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`)
}
