package xmpp

import (
	"testing"

	"github.com/parleygw/parley/event"
)

// A ghost that joined a room in an earlier session (its nick recorded in
// the links) leaves it on the core's Member left after a restart, though
// this session never saw it join.
func TestGhostOfEarlierSessionLeaves(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	h := &fakeRoomHost{fakeHost: newFakeHost(), rooms: []event.Address{xmppAddr(testRoom)}}
	h.links.Set(ghostNickKey(testRoom, "Bob"), roomGhost)
	a := startAdapterWith(t, srv.addr(), "s3cret", h)
	c := srv.next(t)
	wantJoin(t, c, "matrix.localhost", listenerNick)
	c.write(selfPresence(listenerNick, "matrix.localhost"))

	done := make(chan error, 1)
	go func() {
		_, err := a.Send(t.Context(), &event.Member{Header: event.Header{ID: "$l1", From: xmppAddr(roomGhost), To: xmppAddr(testRoom), Room: true}, Change: event.MemberLeft})
		done <- err
	}()
	p := c.recv(t)
	if p.XMLName.Local != "presence" || p.attr("type") != "unavailable" || p.attr("from") != roomGhost || p.attr("to") != testRoom+"/Bob" {
		t.Fatalf("want the ghost's leave as Bob, got %+v", p)
	}
	if err := waitSend(t, done); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := h.links.Get(t.Context(), ghostNickKey(testRoom, "Bob")); ok {
		t.Error("the ghost's nick is still recorded after it left")
	}
}
