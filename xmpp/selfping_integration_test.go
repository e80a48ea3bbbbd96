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

// A real Prosody drops the listener from a room without telling it (its
// occupant removed through the admin shell): the listener's self-ping
// finds it out, it joins again, and alice's posts are dispatched again.
func TestProsodySelfPing(t *testing.T) {
	p := startProsody(t)
	p.Register(t, "alice", "alicepass")
	alice := peertest.ConnectXMPP(t, p, "alice", "alicepass")
	room := "pinged@" + peertest.MUCDomain
	enterRoom(t, alice, room, "Alice", "anyone")
	h := &fakeRoomHost{fakeHost: newFakeHost(), rooms: []event.Address{xmppAddr(room)}}
	startSelfPinging(t, p.ComponentAddr, p.ComponentSecret, h)
	waitFor(t, h.fakeHost, bridges.Connected, bridges.Starting, bridges.Reconnecting)
	next(t, alice, "listener", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == room+"/"+listenerNick && e.Type != "unavailable" && e.Type != "error"
	})
	alice.SendGroupchat(t, room, "p1", "before")
	if m := nextRoomPost(t, h.fakeHost); m.Body != "before" {
		t.Fatalf("dispatched %q", m.Body)
	}

	// The room forgets the listener and tells no one.
	out := p.Shell(t, `>local r = prosody.hosts["`+peertest.MUCDomain+`"].modules.muc.get_room_from_jid("`+room+`"); `+
		`r._occupants["`+room+`/`+listenerNick+`"] = nil; return "removed"`)
	if !strings.Contains(out, "removed") {
		t.Fatalf("admin shell: %s", out)
	}
	alice.SendGroupchat(t, room, "p2", "while out")
	// The listener joins again: alice sees it come back.
	next(t, alice, "listener back", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == room+"/"+listenerNick && e.Type != "unavailable" && e.Type != "error"
	})
	alice.SendGroupchat(t, room, "p3", "after")
	var got []string
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	for !containsAll(got, "while out", "after") {
		select {
		case evt := <-h.dispatched:
			if m, ok := evt.(*event.Message); ok {
				got = append(got, m.Body)
			}
		case <-ctx.Done():
			t.Fatalf("dispatched %q, want the post made while out (from the room's archive) and the one after", got)
		}
	}
}

func containsAll(got []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			return false
		}
	}
	return true
}
