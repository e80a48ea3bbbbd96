package bridges_test

import (
	"context"
	"fmt"
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
