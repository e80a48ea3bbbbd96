package xmpp

import (
	"context"
	"sync"
	"testing"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// idHost is a fakeRoomHost that records the message IDs an adapter links.
type idHost struct {
	*fakeRoomHost
	mu    sync.Mutex
	links [][2]string
}

func (h *idHost) SameMessage(_ context.Context, _ event.Network, id, other string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.links = append(h.links, [2]string{id, other})
	return nil
}

func (h *idHost) MessageID(context.Context, event.Network, string, event.Network) (string, bool, error) {
	return "", false, nil
}

func (h *idHost) linked() [][2]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][2]string(nil), h.links...)
}

var _ bridges.MessageIDHost = (*idHost)(nil)

// The room's reflection of a ghost's post links the room's stanza-id with
// the ID Parley posted it with; a post by someone else that carries an ID
// like Parley's links nothing.
func TestRoomReflectionLinksStanzaID(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	h := &idHost{fakeRoomHost: &fakeRoomHost{fakeHost: newFakeHost(), rooms: []event.Address{xmppAddr(testRoom)}}}
	a := startAdapterWith(t, srv.addr(), "s3cret", h)
	c := srv.next(t)
	wantJoin(t, c, "matrix.localhost", listenerNick)
	c.write(`<presence from="` + testRoom + `/alice" to="matrix.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><item jid="alice@localhost/phone" affiliation="member" role="participant"/></x></presence>`)
	c.write(selfPresence(listenerNick, "matrix.localhost"))
	nextMember(t, h.fakeHost)

	done := sendAsync(t, a, roomPost("$e1", roomGhost, "Bob", "hi all"))
	wantJoin(t, c, roomGhost, "Bob")
	c.write(selfPresence("Bob", roomGhost))
	p := c.recv(t)
	if err := waitSend(t, done); err != nil {
		t.Fatal(err)
	}
	sid := `<stanza-id xmlns="urn:xmpp:sid:0" by="` + testRoom + `" id="`
	c.write(roomMsg(`<body>hi all</body>`+sid+`sid-1"/>`, "id", p.attr("id"), "from", testRoom+"/Bob", "to", "matrix.localhost"))
	c.write(roomMsg(`<body>me too</body>`+sid+`sid-2"/>`, "id", "parley-0000000000000000", "from", testRoom+"/alice", "to", "matrix.localhost"))
	// alice's post with an ID like Parley's is still not bridged: what
	// comes next shows that both were handled.
	c.write(roomMsg(`<body>ok</body>`+sid+`sid-3"/>`, "id", "a3", "from", testRoom+"/alice", "to", "matrix.localhost"))
	if m := nextMessage(t, h.fakeHost); m.ID != testRoom+"/sid-3" {
		t.Fatalf("dispatched %+v", m.Header)
	}
	want := [2]string{testRoom + "/sid-1", p.attr("id")}
	if got := h.linked(); len(got) != 1 || got[0] != want {
		t.Errorf("linked %v, want only %v", got, want)
	}
}
