package bridges_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/store"
)

func presence(from, to string, s event.PresenceState, status string) *event.Presence {
	return &event.Presence{
		Header: event.Header{From: event.Address{Network: event.XMPP, ID: from}, To: event.Address{Network: event.XMPP, ID: to}},
		State:  s, Status: status,
	}
}

func presences(evts []event.Event) []*event.Presence {
	var out []*event.Presence
	for _, e := range evts {
		if p, ok := e.(*event.Presence); ok {
			out = append(out, p)
		}
	}
	return out
}

// A flood of presence updates to a slow network costs one Send at a time and
// the latest state wins; chat messages are not held up meanwhile.
func TestPresenceIsCoalescedAndNeverBlocksMessages(t *testing.T) {
	h := start(t, store.NewMemory())
	release := make(chan struct{})
	var presenceSends atomic.Int32
	h.matrix.SendFunc = func(ctx context.Context, e event.Event) (string, error) {
		if _, ok := e.(*event.Presence); ok && presenceSends.Add(1) == 1 {
			select {
			case <-release:
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		return e.Head().ID, nil
	}
	ctx := context.Background()
	const to = "carol%hs.example@matrix.example.org"
	states := []event.PresenceState{event.Away, event.DoNotDisturb, event.ExtendedAway, event.Available}
	for i := range 40 {
		if err := h.router.Dispatch(ctx, presence("bob@example.org", to, states[i%len(states)], fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.router.Dispatch(ctx, xmppMessage("m1", "bob@example.org", to, "chat goes on")); err != nil {
		t.Fatal(err)
	}
	sent := h.matrix.WaitSent(waitCtx(t), 1)
	if m, ok := sent[0].(*event.Message); !ok || m.Body != "chat goes on" {
		t.Fatalf("while presence was stuck the network got %v", sent)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ps := presences(h.matrix.Sent())
		if len(ps) > 0 && ps[len(ps)-1].Status == "39" {
			if len(ps) > 2 {
				t.Errorf("40 updates cost %d Sends; want the one in flight and the latest", len(ps))
			}
			if ps[len(ps)-1].State != event.Available || ps[len(ps)-1].To.ID != "carol@hs.example" {
				t.Errorf("latest presence = %+v", ps[len(ps)-1])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("latest presence never delivered: %v", ps)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// One person with two accounts is shown with one merged state.
func TestPresenceOfAnIdentityIsMerged(t *testing.T) {
	m, err := mapping.New(mapping.Config{
		Identities: []mapping.Identity{{Name: "alice", Accounts: []string{"xmpp:alice@example.org", "xmpp:alice@work.example.org"}}},
		Ghosts: map[event.Network]map[event.Network]string{
			event.Matrix: {event.XMPP: "_xmpp_{user}_{domain}@hs.example"},
			event.XMPP:   {event.Matrix: "{user}%{domain}@matrix.example.org"},
		},
	}, map[event.Network]mapping.Codec{event.XMPP: bridgestest.Codec{}, event.Matrix: bridgestest.Codec{}})
	if err != nil {
		t.Fatal(err)
	}
	xmppNet, matrixNet := bridgestest.NewNetwork(event.XMPP), bridgestest.NewNetwork(event.Matrix)
	r := bridges.NewRouter(store.NewMemory(), m)
	r.Add(xmppNet)
	r.Add(matrixNet)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop(context.Background()) })

	const to = "carol%hs.example@matrix.example.org"
	steps := []struct {
		from  string
		state event.PresenceState
		want  event.PresenceState
	}{
		{"alice@example.org", event.DoNotDisturb, event.DoNotDisturb},
		{"alice@work.example.org", event.Available, event.Available},
		{"alice@work.example.org", event.OnThePhone, event.OnThePhone},
		{"alice@example.org", event.Available, event.OnThePhone},
		{"alice@work.example.org", event.Offline, event.Available},
	}
	for i, s := range steps {
		if err := r.Dispatch(context.Background(), presence(s.from, to, s.state, s.from)); err != nil {
			t.Fatal(err)
		}
		got := presences(matrixNet.WaitSent(waitCtx(t), i+1))
		if len(got) != i+1 {
			t.Fatalf("step %d: %d presences delivered", i, len(got))
		}
		if last := got[i]; last.State != s.want {
			t.Errorf("step %d (%s reports %s): shown %s, want %s", i, s.from, s.state, last.State, s.want)
		}
	}
}

func subscription(from, to string, active bool) *event.Subscription {
	return &event.Subscription{Header: event.Header{From: event.Address{Network: event.XMPP, ID: from},
		To: event.Address{Network: event.XMPP, ID: to}}, Active: active}
}

func broadcast(from string, s event.PresenceState) *event.Presence {
	return &event.Presence{Header: event.Header{From: event.Address{Network: event.Matrix, ID: from}}, State: s}
}

// waitPresences waits until net has delivered n presences.
func waitPresences(t *testing.T, net *bridgestest.Network, n int) []*event.Presence {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ps := presences(net.Sent())
		if len(ps) >= n || time.Now().After(deadline) {
			return ps
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A watcher subscribes; the subscription reaches the presentity's network;
// the presentity's broadcast presence reaches the watcher; after
// unsubscribing it no longer does; and the registry survives a restart.
func TestSubscriptionsAndBroadcastPresence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "parley.db")
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, st)
	ctx := context.Background()
	const ghost = "carol%hs.example@matrix.example.org"

	if err := h.router.Dispatch(ctx, subscription("bob@example.org", ghost, true)); err != nil {
		t.Fatal(err)
	}
	sent := h.matrix.WaitSent(waitCtx(t), 1)
	sub, ok := sent[0].(*event.Subscription)
	if !ok || !sub.Active || sub.To.ID != "carol@hs.example" || sub.From.ID != "_xmpp_bob_example.org@hs.example" {
		t.Fatalf("presentity's network got %+v", sent[0])
	}
	if err := h.router.Dispatch(ctx, broadcast("carol@hs.example", event.Away)); err != nil {
		t.Fatal(err)
	}
	ps := waitPresences(t, h.xmpp, 1)
	if len(ps) != 1 || ps[0].From.ID != ghost || ps[0].To.ID != "bob@example.org" || ps[0].State != event.Away {
		t.Fatalf("watcher got %+v", ps)
	}

	// A second watcher is answered at once with the last known state.
	if err := h.router.Dispatch(ctx, subscription("dave@example.org", ghost, true)); err != nil {
		t.Fatal(err)
	}
	ps = waitPresences(t, h.xmpp, 2)
	if len(ps) != 2 || ps[1].To.ID != "dave@example.org" || ps[1].State != event.Away {
		t.Fatalf("new watcher got %+v", ps)
	}

	// bob unsubscribes: the next broadcast reaches dave only.
	if err := h.router.Dispatch(ctx, subscription("bob@example.org", ghost, false)); err != nil {
		t.Fatal(err)
	}
	if err := h.router.Dispatch(ctx, broadcast("carol@hs.example", event.Available)); err != nil {
		t.Fatal(err)
	}
	waitPresences(t, h.xmpp, 3)
	time.Sleep(20 * time.Millisecond)
	ps = presences(h.xmpp.Sent())
	if len(ps) != 3 || ps[2].To.ID != "dave@example.org" || ps[2].State != event.Available {
		t.Fatalf("after bob unsubscribed: %+v", ps)
	}

	// A new router on the same store still knows dave watches carol.
	_ = h.router.Stop(ctx)
	h2 := start(t, st)
	if err := h2.router.Dispatch(ctx, broadcast("carol@hs.example", event.DoNotDisturb)); err != nil {
		t.Fatal(err)
	}
	ps = waitPresences(t, h2.xmpp, 1)
	if len(ps) != 1 || ps[0].To.ID != "dave@example.org" || ps[0].State != event.DoNotDisturb {
		t.Fatalf("after a restart: %+v", ps)
	}
}

// A subscription the presentity's network refuses is dropped quietly: the
// watcher sent no message, so there is nothing to report to them.
func TestRefusedSubscriptionIsNotReportedAsAFailedMessage(t *testing.T) {
	h := start(t, store.NewMemory())
	h.matrix.SendFunc = func(context.Context, event.Event) (string, error) {
		return "", bridges.Permanent(errors.New("not supported"))
	}
	if err := h.router.Dispatch(context.Background(), subscription("bob@example.org", "carol%hs.example@matrix.example.org", true)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if sent := h.xmpp.Sent(); len(sent) != 0 {
		t.Fatalf("the watcher got %v", sent)
	}
}

// The presence policy of the YAML decides who may watch whom.
func TestWatchPolicy(t *testing.T) {
	m, err := mapping.New(mapping.Config{
		Ghosts: map[event.Network]map[event.Network]string{
			event.Matrix: {event.XMPP: "_xmpp_{user}_{domain}@hs.example"},
			event.XMPP:   {event.Matrix: "{user}%{domain}@matrix.example.org"},
		},
		Watch: []mapping.WatchRule{
			{Watcher: "xmpp:*@example.org", Presentity: "matrix:boss@*", Allow: false},
			{Watcher: "*", Presentity: "*", Allow: true},
		},
	}, map[event.Network]mapping.Codec{event.XMPP: bridgestest.Codec{}, event.Matrix: bridgestest.Codec{}})
	if err != nil {
		t.Fatal(err)
	}
	xmppNet, matrixNet := bridgestest.NewNetwork(event.XMPP), bridgestest.NewNetwork(event.Matrix)
	r := bridges.NewRouter(store.NewMemory(), m)
	r.Add(xmppNet)
	r.Add(matrixNet)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	ctx := context.Background()
	err = r.Dispatch(ctx, subscription("bob@example.org", "boss%hs.example@matrix.example.org", true))
	if !errors.Is(err, bridges.ErrRefused) {
		t.Fatalf("watching the boss: %v, want ErrRefused", err)
	}
	if err := r.Dispatch(ctx, subscription("bob@example.org", "carol%hs.example@matrix.example.org", true)); err != nil {
		t.Fatalf("watching carol: %v", err)
	}
	if err := r.Dispatch(ctx, broadcast("boss@hs.example", event.Available)); err != nil {
		t.Fatal(err)
	}
	if err := r.Dispatch(ctx, broadcast("carol@hs.example", event.Away)); err != nil {
		t.Fatal(err)
	}
	waitPresences(t, xmppNet, 1)
	time.Sleep(20 * time.Millisecond)
	ps := presences(xmppNet.Sent())
	if len(ps) != 1 || ps[0].From.ID != "carol%hs.example@matrix.example.org" {
		t.Fatalf("bob saw %+v", ps)
	}
}
