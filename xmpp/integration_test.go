package xmpp

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/peertest"
)

// These tests connect the adapter to a real Prosody (started by peertest)
// and talk to it through a real XMPP client (slixmpp). They are skipped in
// short mode, and when Prosody or slixmpp is missing (failed under $CI).

const integrationGhost = "bob@matrix.localhost"

// startProsody starts Prosody with the component domain of validConfig.
func startProsody(t *testing.T) *peertest.Prosody {
	t.Helper()
	if testing.Short() {
		t.Skip("short mode: integration tests need a real Prosody")
	}
	return peertest.StartProsody(t, peertest.ProsodyOptions{ComponentDomain: "matrix.localhost", ComponentSecret: "component-secret"})
}

// waitFor returns the first state reported that is want, failing on any
// state that is not in allowed.
func waitFor(t *testing.T, h *fakeHost, want bridges.State, allowed ...bridges.State) stateChange {
	t.Helper()
	for {
		s := nextState(t, h)
		if s.state == want {
			return s
		}
		ok := false
		for _, a := range allowed {
			ok = ok || s.state == a
		}
		if !ok {
			t.Fatalf("state %s (%v) while waiting for %s", s.state, s.err, want)
		}
	}
}

func nextXMPP(t *testing.T, c *peertest.XMPPClient, ev string) peertest.XMPPEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	e, ok := c.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == ev })
	if !ok {
		t.Fatalf("%s got no %q event", c.JID, ev)
	}
	return e
}

func nextDispatch(t *testing.T, h *fakeHost) *event.Message {
	t.Helper()
	select {
	case evt := <-h.dispatched:
		m, ok := evt.(*event.Message)
		if !ok {
			t.Fatalf("dispatched %T", evt)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("nothing dispatched")
		return nil
	}
}

func TestProsodyMessages(t *testing.T) {
	p := startProsody(t)
	p.Register(t, "alice", "alicepass")
	_, h := startAdapter(t, p.ComponentAddr, p.ComponentSecret)
	wantState(t, h, bridges.Starting)
	waitFor(t, h, bridges.Connected, bridges.Reconnecting)

	alice := peertest.ConnectXMPP(t, p, "alice", "alicepass")

	// XMPP → Parley, acknowledged with a receipt once dispatched.
	alice.Send(t, integrationGhost, "m1", "hello bob", true)
	m := nextDispatch(t, h)
	if m.ID != "alice@localhost/m1" || m.From != xmppAddr("alice@localhost") || m.To != xmppAddr(integrationGhost) || m.Body != "hello bob" {
		t.Fatalf("dispatched %+v", m)
	}
	if r := nextXMPP(t, alice, "receipt"); r.ID != "m1" || r.From != integrationGhost {
		t.Errorf("receipt %+v", r)
	}

	// A message the core cannot route is answered with an error.
	h.setDispatch(func(event.Event) error { return fmt.Errorf("route: %w", bridges.ErrNoRoute) })
	alice.Send(t, integrationGhost, "m2", "anyone?", true)
	nextDispatch(t, h)
	if e := nextXMPP(t, alice, "error"); e.ID != "m2" || e.Condition != "item-not-found" || e.From != integrationGhost {
		t.Errorf("error %+v", e)
	}
	h.setDispatch(nil)
}

func TestProsodySendAndFailure(t *testing.T) {
	p := startProsody(t)
	p.Register(t, "alice", "alicepass")
	cfg := validConfig()
	cfg.Server, cfg.Secret = p.ComponentAddr, p.ComponentSecret
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := newFakeHost()
	if err := a.Start(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	waitFor(t, h, bridges.Connected, bridges.Starting, bridges.Reconnecting)
	alice := peertest.ConnectXMPP(t, p, "alice", "alicepass")

	// Parley → XMPP.
	msg := &event.Message{
		Header: event.Header{ID: "$ev1:matrix.org", From: xmppAddr(integrationGhost), To: xmppAddr("alice@localhost"), FromName: "Bob (Matrix)"},
		Body:   "hi alice",
	}
	id, err := a.Send(t.Context(), msg)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := nextXMPP(t, alice, "message"); got.From != integrationGhost || got.Body != "hi alice" || got.Nick != "Bob (Matrix)" || got.ID != id {
		t.Errorf("alice got %+v", got)
	}

	// A delivery failure reported later reaches the client that sent the
	// message, though Parley addresses it to the bare JID.
	alice.Send(t, integrationGhost, "m3", "this will fail", false)
	m := nextDispatch(t, h)
	f := &event.Failure{
		Header:    event.Header{ID: "f1", From: xmppAddr(integrationGhost), To: xmppAddr("alice@localhost")},
		EventID:   m.ID,
		Reason:    "the Matrix homeserver refused the message",
		Condition: event.Undeliverable,
	}
	if _, err := a.Send(t.Context(), f); err != nil {
		t.Fatalf("Send(failure): %v", err)
	}
	e := nextXMPP(t, alice, "error")
	if e.ID != "m3" || e.Condition != "recipient-unavailable" || e.Text != f.Reason {
		t.Errorf("alice got %+v", e)
	}
}

func TestProsodyBadSecret(t *testing.T) {
	p := startProsody(t)
	_, h := startAdapter(t, p.ComponentAddr, "not-the-secret")
	s := waitFor(t, h, bridges.BadCredentials, bridges.Starting, bridges.Reconnecting)
	t.Logf("reported: %v", s.err)
	// Still retrying, still refused.
	waitFor(t, h, bridges.BadCredentials, bridges.Reconnecting)
}

func TestProsodyRestart(t *testing.T) {
	p := startProsody(t)
	_, h := startAdapter(t, p.ComponentAddr, p.ComponentSecret)
	waitFor(t, h, bridges.Connected, bridges.Starting, bridges.Reconnecting)

	p.Stop(t)
	waitFor(t, h, bridges.Reconnecting)
	p.Start(t)
	waitFor(t, h, bridges.Connected, bridges.Reconnecting)
}
