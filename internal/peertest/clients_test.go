package peertest

import (
	"context"
	"testing"
	"time"
)

func TestXMPPClient(t *testing.T) {
	p := StartProsody(t, ProsodyOptions{})
	p.Register(t, "alice", "alicepass")
	p.Register(t, "bob", "bobpass1")
	alice := ConnectXMPP(t, p, "alice", "alicepass")
	bob := ConnectXMPP(t, p, "bob", "bobpass1")
	alice.Send(t, bob.JID, "m1", "hello bob", false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, ok := bob.Next(ctx, func(e XMPPEvent) bool { return e.Ev == "message" })
	if !ok || e.Body != "hello bob" || e.ID != "m1" {
		t.Fatalf("bob got %+v, %v", e, ok)
	}
}

func TestXMPPClientPresence(t *testing.T) {
	p := StartProsody(t, ProsodyOptions{})
	p.Register(t, "alice", "alicepass")
	p.Register(t, "bob", "bobpass1")
	alice := ConnectXMPP(t, p, "alice", "alicepass")
	bob := ConnectXMPP(t, p, "bob", "bobpass1")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	alice.Subscribe(t, bob.JID) // bob's client approves on its own
	bob.SetPresence(t, "away", "lunch")
	e, ok := alice.Next(ctx, func(e XMPPEvent) bool { return e.Ev == "presence" && e.Show == "away" })
	if !ok || e.Status != "lunch" {
		t.Fatalf("alice saw %+v, %v", e, ok)
	}
}

func TestXMPPSwarm(t *testing.T) {
	p := StartProsody(t, ProsodyOptions{})
	p.Register(t, "bob", "bobpass1")
	bob := ConnectXMPP(t, p, "bob", "bobpass1") // approves subscriptions on its own
	p.RegisterMany(t, "w", 20, "swarmpass")
	s := ConnectSwarm(t, p, "w", 20, "swarmpass")
	if s.Len() != 20 {
		t.Fatalf("swarm of %d clients, want 20", s.Len())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := s.Subscribe(ctx, bob.JID, 0); err != nil {
		t.Fatal(err)
	}
	// On approval each client gets bob's presence; after his change,
	// each gets it again.
	waitCount := func(want int64) {
		t.Helper()
		for s.Presences(bob.JID) < want {
			if ctx.Err() != nil {
				t.Fatalf("swarm received %d presences of %s, want %d", s.Presences(bob.JID), bob.JID, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCount(20)
	bob.SetPresence(t, "away", "lunch")
	for s.Showing("lunch") < 20 {
		if ctx.Err() != nil {
			t.Fatalf("%d clients show bob's status \"lunch\", want 20", s.Showing("lunch"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
