package xmpp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/peertest"
)

// These tests put the adapter in a real Prosody MUC (peertest.MUCDomain)
// with a real user (slixmpp).

// nextRoomPost returns the next message dispatched, skipping other events;
// it must be a room post.
func nextRoomPost(t *testing.T, h *fakeHost) *event.Message {
	t.Helper()
	m, ok := nextEvent(t, h, func(e event.Event) bool { _, ok := e.(*event.Message); return ok }).(*event.Message)
	if !ok || !m.Room {
		t.Fatalf("dispatched %+v, want a room post", m)
	}
	return m
}

// next waits for the client's next event that match accepts.
func next(t *testing.T, c *peertest.XMPPClient, what string, match func(peertest.XMPPEvent) bool) peertest.XMPPEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	e, ok := c.Next(ctx, match)
	if !ok {
		t.Fatalf("%s: no %s", c.JID, what)
	}
	return e
}

// enterRoom has a real user join room as nick and, with whois set,
// configure it.
func enterRoom(t *testing.T, c *peertest.XMPPClient, room, nick, whois string) {
	t.Helper()
	c.JoinRoom(t, room, nick)
	next(t, c, "join of "+room, func(e peertest.XMPPEvent) bool { return e.Ev == "joined" && e.Room == room })
	if whois != "" {
		c.ConfigureRoom(t, room, whois)
		e := next(t, c, "configuration of "+room, func(e peertest.XMPPEvent) bool {
			return (e.Ev == "configured" && e.Room == room) || (e.Ev == "error" && e.From == room)
		})
		if e.Ev == "error" {
			t.Fatalf("configure %s: %s %s", room, e.Condition, e.Text)
		}
	}
}

// startInRoom starts the adapter with a host whose only portal room is
// room, and waits until its listener is an occupant (as c sees it).
func startInRoom(t *testing.T, p *peertest.Prosody, c *peertest.XMPPClient, room string) (*Adapter, *fakeHost) {
	t.Helper()
	h := &fakeRoomHost{fakeHost: newFakeHost(), rooms: []event.Address{xmppAddr(room)}}
	a := startAdapterWith(t, p.ComponentAddr, p.ComponentSecret, h)
	waitFor(t, h.fakeHost, bridges.Connected, bridges.Starting, bridges.Reconnecting)
	next(t, c, "listener", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == room+"/"+listenerNick && e.Type != "unavailable" && e.Type != "error"
	})
	return a, h.fakeHost
}

func TestProsodyRoom(t *testing.T) {
	p := startProsody(t)
	p.Register(t, "alice", "alicepass")
	alice := peertest.ConnectXMPP(t, p, "alice", "alicepass")
	room := "team@" + peertest.MUCDomain
	// A non-anonymous room: the listener learns alice's real JID.
	enterRoom(t, alice, room, "Alice", "anyone")
	a, h := startInRoom(t, p, alice, room)

	// XMPP → Parley: alice's post, once, from her bare JID.
	alice.SendGroupchat(t, room, "a1", "hello room")
	m := nextRoomPost(t, h)
	if m.From != xmppAddr("alice@localhost") || m.To != xmppAddr(room) || m.FromName != "Alice" || m.Body != "hello room" ||
		!strings.HasPrefix(m.ID, room+"/") {
		t.Fatalf("dispatched %+v", m)
	}

	// Parley → XMPP: two ghosts post; alice sees them under their
	// display names.
	posts := []*event.Message{
		roomPost("$m1", roomGhost, "Bob (Matrix)", "hi from bob"),
		roomPost("$m2", roomGhost2, "Robert", "hi from robert"),
	}
	for _, post := range posts {
		if _, err := a.Send(t.Context(), post); err != nil {
			t.Fatalf("Send: %v", err)
		}
		got := next(t, alice, "post of "+post.FromName, func(e peertest.XMPPEvent) bool { return e.Ev == "groupchat" && e.Nick != "Alice" })
		if got.Room != room || got.Nick != post.FromName || got.Body != post.Body || got.Delayed {
			t.Fatalf("alice got %+v, want %q from %q", got, post.Body, post.FromName)
		}
	}

	// Neither the reflections of the ghosts' posts nor the ghosts' copies
	// of alice's next post are dispatched: the next two dispatched are
	// alice's two posts.
	alice.SendGroupchat(t, room, "a2", "welcome")
	alice.SendGroupchat(t, room, "a3", "both of you")
	for _, want := range []string{"welcome", "both of you"} {
		if m := nextRoomPost(t, h); m.Body != want || m.From != xmppAddr("alice@localhost") {
			t.Fatalf("dispatched %+v, want alice's %q", m, want)
		}
	}
	select {
	case evt := <-h.dispatched:
		if m, ok := evt.(*event.Message); ok {
			t.Fatalf("dispatched %+v too", m)
		}
	case <-time.After(500 * time.Millisecond):
	}

	// Parley restarts: the room still holds its occupants. The new
	// listener and the ghost join again under the nicks they hold, and
	// the ghost's post is still not taken for someone else's.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	h2 := &fakeRoomHost{fakeHost: newFakeHost(), rooms: []event.Address{xmppAddr(room)}}
	a = startAdapterWith(t, p.ComponentAddr, p.ComponentSecret, h2)
	waitFor(t, h2.fakeHost, bridges.Connected, bridges.Starting, bridges.Reconnecting)
	if _, err := a.Send(t.Context(), roomPost("$m3", roomGhost, "Bob (Matrix)", "still here")); err != nil {
		t.Fatalf("Send after a restart: %v", err)
	}
	got := next(t, alice, "post after a restart", func(e peertest.XMPPEvent) bool { return e.Ev == "groupchat" && e.Nick != "Alice" })
	if got.Nick != "Bob (Matrix)" || got.Body != "still here" {
		t.Fatalf("alice got %q from %q after a restart", got.Body, got.Nick)
	}
	alice.SendGroupchat(t, room, "a4", "welcome back")
	if m := nextRoomPost(t, h2.fakeHost); m.Body != "welcome back" || m.From != xmppAddr("alice@localhost") {
		t.Fatalf("dispatched %+v after a restart, want alice's post", m)
	}
}

// TestProsodyRoomNickCollision has two ghosts with the same display name,
// and a third whose name a real user holds, post in a room.
func TestProsodyRoomNickCollision(t *testing.T) {
	p := startProsody(t)
	p.Register(t, "alice", "alicepass")
	alice := peertest.ConnectXMPP(t, p, "alice", "alicepass")
	room := "lobby@" + peertest.MUCDomain
	// The default room shows nobody's real JID to the listener.
	enterRoom(t, alice, room, "Carol", "")
	a, h := startInRoom(t, p, alice, room)

	posts := []struct {
		post *event.Message
		nick string
	}{
		{roomPost("$c1", roomGhost, "Bob", "first bob"), "Bob"},
		{roomPost("$c2", roomGhost2, "Bob", "second bob"), "Bob 2"},
		{roomPost("$c3", "carol%localhost@matrix.localhost", "Carol", "another carol"), "Carol 2"},
		{roomPost("$c4", roomGhost, "Bob", "first bob again"), "Bob"},
	}
	for _, tt := range posts {
		tt.post.To = xmppAddr(room)
		if _, err := a.Send(t.Context(), tt.post); err != nil {
			t.Fatalf("Send: %v", err)
		}
		got := next(t, alice, "post "+tt.post.Body, func(e peertest.XMPPEvent) bool { return e.Ev == "groupchat" && e.Nick != "Carol" })
		if got.Nick != tt.nick || got.Body != tt.post.Body {
			t.Fatalf("alice got %q from %q, want %q from %q", got.Body, got.Nick, tt.post.Body, tt.nick)
		}
	}

	// An anonymous occupant is known by their occupant JID.
	alice.SendGroupchat(t, room, "c5", "who are you all?")
	m := nextRoomPost(t, h)
	if m.From != xmppAddr(room+"/Carol") || m.FromName != "Carol" || m.Body != "who are you all?" {
		t.Fatalf("dispatched %+v", m)
	}
}
