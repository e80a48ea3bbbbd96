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
