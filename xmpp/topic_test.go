package xmpp

import (
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/event"
)

// The room's first subject is kept, not carried; a later change by an
// occupant is dispatched as a Topic from them; the reflection of a ghost's
// change is not; the core's Topic is set as the ghost, which joins first.
func TestRoomSubject(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	h := &fakeRoomHost{fakeHost: newFakeHost(), rooms: []event.Address{xmppAddr(testRoom)}}
	a := startAdapterWith(t, srv.addr(), "s3cret", h)
	c := srv.next(t)

	wantJoin(t, c, "matrix.localhost", listenerNick)
	c.write(`<presence from="` + testRoom + `/alice" to="matrix.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><item jid="alice@localhost/phone" affiliation="owner" role="moderator"/></x></presence>`)
	c.write(selfPresence(listenerNick, "matrix.localhost"))
	nextMember(t, h.fakeHost)
	subject := func(nick, text string) string {
		return roomMsg(`<subject>`+text+`</subject>`, "from", testRoom+"/"+nick, "to", "matrix.localhost")
	}
	c.write(subject("alice", "Plans"))
	c.write(subject("alice", "Plans"))
	c.write(subject("alice", "New plans"))
	select {
	case evt := <-h.dispatched:
		tp, ok := evt.(*event.Topic)
		if !ok || tp.Text != "New plans" || !tp.Room || tp.From != xmppAddr("alice@localhost") || tp.To != xmppAddr(testRoom) || tp.FromName != "alice" {
			t.Fatalf("dispatched %#v, want alice's new subject", evt)
		}
	case <-time.After(testTimeout):
		t.Fatal("the change of subject was not dispatched")
	}

	// A ghost sets the subject: it joins, then changes it; the room's
	// reflection of its change is not dispatched back.
	done := make(chan error, 1)
	go func() {
		_, err := a.Send(t.Context(), &event.Topic{Header: event.Header{ID: "$t1", From: xmppAddr(roomGhost), To: xmppAddr(testRoom), FromName: "Bob", Room: true}, Text: "Bob's plans"})
		done <- err
	}()
	wantJoin(t, c, roomGhost, "Bob")
	c.write(selfPresence("Bob", roomGhost))
	p := c.recv(t)
	if p.XMLName.Local != "message" || p.attr("type") != "groupchat" || p.attr("from") != roomGhost || p.attr("to") != testRoom ||
		!strings.Contains(p.Inner, "<subject>Bob&#39;s plans</subject>") && !strings.Contains(p.Inner, "<subject>Bob's plans</subject>") {
		t.Fatalf("want the ghost's change of subject, got %+v", p)
	}
	if err := waitSend(t, done); err != nil {
		t.Fatal(err)
	}
	c.write(subject("Bob", "Bob's plans"))
	// (alice's next post shows that nothing was dispatched between.)
	c.write(roomMsg(`<body>ok</body>`, "id", "a9", "from", testRoom+"/alice", "to", "matrix.localhost"))
	if m := nextMessage(t, h.fakeHost); m.ID != testRoom+"/a9" {
		t.Fatalf("dispatched %+v, want alice's post only", m)
	}
}

// Where the listener is a moderator (it made the room, say), it sets the
// subject itself: most rooms let only moderators change it.
func TestRoomSubjectByModeratorListener(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	h := &fakeRoomHost{fakeHost: newFakeHost(), rooms: []event.Address{xmppAddr(testRoom)}}
	a := startAdapterWith(t, srv.addr(), "s3cret", h)
	c := srv.next(t)
	wantJoin(t, c, "matrix.localhost", listenerNick)
	c.write(`<presence from="` + testRoom + `/` + listenerNick + `" to="matrix.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><item affiliation="owner" role="moderator"/><status code="110"/></x></presence>`)
	for !a.rooms.listenerModerator(testRoom) {
		time.Sleep(time.Millisecond)
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.Send(t.Context(), &event.Topic{Header: event.Header{ID: "$t1", From: xmppAddr(roomGhost), To: xmppAddr(testRoom), FromName: "Bob", Room: true}, Text: "Plans"})
		done <- err
	}()
	p := c.recv(t)
	if p.XMLName.Local != "message" || p.attr("from") != "matrix.localhost" || p.attr("to") != testRoom || !strings.Contains(p.Inner, "<subject>Plans</subject>") {
		t.Fatalf("want the listener's change of subject, got %+v", p)
	}
	if err := waitSend(t, done); err != nil {
		t.Fatal(err)
	}
}
