package xmpp

import (
	"strings"
	"testing"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// roomFailureOf is the failure the core sends back when the other side of
// the portal refused participant's post id in the test room.
func roomFailureOf(id, participant string) *event.Failure {
	return &event.Failure{
		Header:  event.Header{ID: "failure/" + id, From: xmppAddr(testRoom), To: xmppAddr(participant)},
		EventID: id,
		Reason:  "the Matrix room does not let this participant post",
	}
}

// A post refused on the other side of a portal is told to its poster in a
// private message from the listener: through the room while they are in
// it (by real JID or by nick alone), to their real JID once they left, and
// not at all to a participant known only by a nick no one holds.
func TestRoomFailure(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	h := &fakeRoomHost{fakeHost: newFakeHost(), rooms: []event.Address{xmppAddr(testRoom)}}
	a := startAdapterWith(t, srv.addr(), "s3cret", h)
	c := srv.next(t)

	wantJoin(t, c, "matrix.localhost", listenerNick)
	c.write(`<presence from="` + testRoom + `/alice" to="matrix.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><item jid="alice@localhost/phone" affiliation="member" role="participant"/></x></presence>`)
	c.write(`<presence from="` + testRoom + `/Carol" to="matrix.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><item affiliation="none" role="participant"/></x></presence>`)
	c.write(selfPresence(listenerNick, "matrix.localhost"))
	for range 2 {
		nextMember(t, h.fakeHost)
	}

	for _, tc := range []struct {
		participant, to string
	}{
		{"alice@localhost", testRoom + "/alice"},
		{testRoom + "/Carol", testRoom + "/Carol"},
		{"dave@localhost", "dave@localhost"}, // not (or no longer) in the room
	} {
		f := roomFailureOf(testRoom+"/p-"+tc.participant, tc.participant)
		done := sendFailureAsync(t, a, f)
		p := c.recv(t)
		if p.XMLName.Local != "message" || p.attr("type") != "chat" || p.attr("from") != "matrix.localhost" || p.attr("to") != tc.to ||
			!strings.Contains(p.Inner, "did not reach the other side of the room: the Matrix room does not let this participant post.") ||
			!strings.Contains(p.Inner, testRoom) {
			t.Fatalf("failure for %s: want a private message to %s, got %+v", tc.participant, tc.to, p)
		}
		if err := waitSend(t, done); err != nil {
			t.Fatalf("Send failure to %s: %v", tc.participant, err)
		}
	}

	// Carol leaves: a failure for her nick has no one to go to.
	c.write(`<presence type="unavailable" from="` + testRoom + `/Carol" to="matrix.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><item affiliation="none" role="none"/></x></presence>`)
	nextMember(t, h.fakeHost)
	if err := waitSend(t, sendFailureAsync(t, a, roomFailureOf(testRoom+"/c2", testRoom+"/Carol"))); !bridges.IsPermanent(err) {
		t.Fatalf("Send failure to a nick that left = %v, want a permanent error", err)
	}
}

// sendFailureAsync runs Send of f in a goroutine; the result comes on the
// channel.
func sendFailureAsync(t *testing.T, a *Adapter, f *event.Failure) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := a.Send(t.Context(), f)
		ch <- err
	}()
	return ch
}
