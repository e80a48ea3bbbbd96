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
