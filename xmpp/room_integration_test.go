package xmpp

import (
	"context"
	"fmt"
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

// nextRoomEvent returns the next room post or membership change
// dispatched, skipping other events.
func nextRoomEvent(t *testing.T, h *fakeHost) event.Event {
	t.Helper()
	return nextEvent(t, h, func(e event.Event) bool {
		switch e := e.(type) {
		case *event.Message:
			return e.Room
		case *event.Member:
			return true
		}
		return false
	})
}

// wantMember checks that the next room event dispatched is the change of
// participant to name.
func wantMember(t *testing.T, h *fakeHost, room, participant string, change event.MemberChange, name string) {
	t.Helper()
	m, ok := nextRoomEvent(t, h).(*event.Member)
	if !ok || m.Change != change || m.From != xmppAddr(participant) || m.To != xmppAddr(room) || m.Name != name || !m.Room {
		t.Fatalf("dispatched %+v, want %s %s as %q", m, participant, change, name)
	}
}

func TestProsodyRoomMembers(t *testing.T) {
	p := startProsody(t)
	p.Register(t, "alice", "alicepass")
	p.Register(t, "bob", "bobpass")
	alice := peertest.ConnectXMPP(t, p, "alice", "alicepass")
	bob := peertest.ConnectXMPP(t, p, "bob", "bobpass")
	room := "club@" + peertest.MUCDomain
	enterRoom(t, alice, room, "Alice", "anyone")
	a, h := startInRoom(t, p, alice, room)

	// Inbound: alice was there; bob comes, changes nick, leaves.
	wantMember(t, h, room, "alice@localhost", event.MemberJoined, "Alice")
	enterRoom(t, bob, room, "Bob", "")
	wantMember(t, h, room, "bob@localhost", event.MemberJoined, "Bob")
	bob.ChangeNick(t, room, "Bobby")
	wantMember(t, h, room, "bob@localhost", event.MemberRenamed, "Bobby")
	bob.LeaveRoom(t, room, "Bobby", "later")
	wantMember(t, h, room, "bob@localhost", event.MemberLeft, "")

	// Outbound: a ghost joins, changes nick, leaves; alice sees it.
	member := func(change event.MemberChange, name, reason string) *event.Member {
		return &event.Member{Header: event.Header{ID: "$m-" + change.String(), From: xmppAddr(roomGhost), To: xmppAddr(room), Room: true},
			Change: change, Name: name, Reason: reason}
	}
	presence := func(what, nick, typ string) peertest.XMPPEvent {
		t.Helper()
		return next(t, alice, what, func(e peertest.XMPPEvent) bool {
			return e.Ev == "presence" && e.From == room+"/"+nick && (e.Type == typ || typ == "" && e.Type == "available")
		})
	}
	if _, err := a.Send(t.Context(), member(event.MemberJoined, "Bob (Matrix)", "")); err != nil {
		t.Fatalf("Send joined: %v", err)
	}
	presence("the ghost's join", "Bob (Matrix)", "")
	if _, err := a.Send(t.Context(), member(event.MemberRenamed, "Robert (Matrix)", "")); err != nil {
		t.Fatalf("Send renamed: %v", err)
	}
	presence("the ghost's old nick leaving", "Bob (Matrix)", "unavailable")
	presence("the ghost's new nick", "Robert (Matrix)", "")
	if _, err := a.Send(t.Context(), member(event.MemberLeft, "", "gone fishing")); err != nil {
		t.Fatalf("Send left: %v", err)
	}
	if e := presence("the ghost's leave", "Robert (Matrix)", "unavailable"); e.Status != "gone fishing" {
		t.Errorf("the ghost left with status %q", e.Status)
	}

	// None of the ghost's moves was dispatched: the next room event is
	// alice's post.
	alice.SendGroupchat(t, room, "a1", "after the ghost")
	if m, ok := nextRoomEvent(t, h).(*event.Message); !ok || m.Body != "after the ghost" {
		t.Fatalf("dispatched %+v, want alice's post", m)
	}
}

// TestProsodyRoomCatchUp restarts Parley's adapter around posts in a room:
// what was posted while it was away is dispatched once, and a post resumed
// after a restart that reached the room already is not posted again.
func TestProsodyRoomCatchUp(t *testing.T) {
	p := startProsody(t)
	p.Register(t, "alice", "alicepass")
	alice := peertest.ConnectXMPP(t, p, "alice", "alicepass")
	room := "history@" + peertest.MUCDomain
	enterRoom(t, alice, room, "Alice", "anyone")
	a, h := startInRoom(t, p, alice, room)
	links := h.links
	stop := func(a *Adapter) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	restart := func() (*Adapter, *fakeHost) {
		t.Helper()
		h := &fakeRoomHost{fakeHost: newFakeHost(), rooms: []event.Address{xmppAddr(room)}}
		h.links = links
		a := startAdapterWith(t, p.ComponentAddr, p.ComponentSecret, h)
		waitFor(t, h.fakeHost, bridges.Connected, bridges.Starting, bridges.Reconnecting)
		return a, h.fakeHost
	}
	posts := func(h *fakeHost, n int) []string {
		t.Helper()
		var got []string
		for range n {
			got = append(got, nextRoomPost(t, h).Body)
		}
		select {
		case evt := <-h.dispatched:
			if m, ok := evt.(*event.Message); ok {
				t.Fatalf("dispatched %q too", m.Body)
			}
		case <-time.After(time.Second):
		}
		return got
	}

	alice.SendGroupchat(t, room, "c1", "before")
	if got := posts(h, 1); got[0] != "before" {
		t.Fatalf("dispatched %q", got)
	}
	// (a) Parley is away while alice posts twice.
	stop(a)
	alice.SendGroupchat(t, room, "c2", "while away 1")
	alice.SendGroupchat(t, room, "c3", "while away 2")
	a, h = restart()
	if got := posts(h, 2); got[0] != "while away 1" || got[1] != "while away 2" {
		t.Fatalf("dispatched %q after a restart, want the two posts made while away", got)
	}

	// (b) A ghost's post reached the room, then Parley restarted before
	// the router knew: the resumed Send finds it and does not post again.
	post := roomPost("$once", roomGhost, "Bob (Matrix)", "exactly once")
	post.To = xmppAddr(room)
	if _, err := a.Send(t.Context(), post); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := next(t, alice, "the ghost's post", func(e peertest.XMPPEvent) bool { return e.Ev == "groupchat" && e.Nick != "Alice" })
	if got.Body != "exactly once" {
		t.Fatalf("alice got %q", got.Body)
	}
	stop(a)
	a, _ = restart()
	resumed := bridges.WithAttempt(t.Context(), bridges.Attempt{Resumed: true})
	if _, err := a.Send(resumed, post); err != nil {
		t.Fatalf("resumed Send: %v", err)
	}
	// A resumed post that never reached the room is posted: alice's next
	// post from the ghost is that one, not the first again.
	other := roomPost("$new", roomGhost, "Bob (Matrix)", "resumed, not delivered before")
	other.To = xmppAddr(room)
	if _, err := a.Send(resumed, other); err != nil {
		t.Fatalf("resumed Send: %v", err)
	}
	got = next(t, alice, "the ghost's next post", func(e peertest.XMPPEvent) bool {
		return e.Ev == "groupchat" && e.Nick != "Alice" && !e.Delayed
	})
	if got.Body != other.Body {
		t.Fatalf("alice got %q, want %q only once before it", got.Body, other.Body)
	}

	// (c) A ghost's post reached the room, then more posts than the
	// room's history keeps (Prosody gives 20): the resumed Send still
	// finds it, in the room's archive.
	buried := roomPost("$buried", roomGhost, "Bob (Matrix)", "buried")
	buried.To = xmppAddr(room)
	if _, err := a.Send(t.Context(), buried); err != nil {
		t.Fatalf("Send: %v", err)
	}
	next(t, alice, "the buried post", func(e peertest.XMPPEvent) bool { return e.Ev == "groupchat" && e.Body == "buried" })
	stop(a)
	for i := range 25 {
		alice.SendGroupchat(t, room, fmt.Sprintf("b%d", i), fmt.Sprintf("after the buried post %d", i))
	}
	next(t, alice, "alice's last post", func(e peertest.XMPPEvent) bool {
		return e.Ev == "groupchat" && e.Body == "after the buried post 24"
	})
	a, _ = restart()
	if _, err := a.Send(resumed, buried); err != nil {
		t.Fatalf("resumed Send: %v", err)
	}
	last := roomPost("$last", roomGhost, "Bob (Matrix)", "last")
	last.To = xmppAddr(room)
	if _, err := a.Send(t.Context(), last); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got = next(t, alice, "the ghost's last post", func(e peertest.XMPPEvent) bool {
		return e.Ev == "groupchat" && e.Nick != "Alice" && !e.Delayed
	})
	if got.Body != "last" {
		t.Fatalf("alice got %q, want %q: the buried post was posted again", got.Body, "last")
	}
}
