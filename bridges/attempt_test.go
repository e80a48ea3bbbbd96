package bridges_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/store"
)

// TestSendSeesItsAttempt checks what the router tells Send: the retries of
// an entry in this run, and whether the entry was taken back from the
// outbox of an earlier run, so that an adapter knows when an earlier Send
// may have reached its network.
func TestSendSeesItsAttempt(t *testing.T) {
	st := store.NewMemory()
	down := bridgestest.NewNetwork(event.Matrix)
	down.SendFunc = func(context.Context, event.Event) (string, error) { return "", errors.New("down") }
	r := bridges.NewRouter(st, testMap(t), bridges.WithRetry(bridges.Backoff{Min: time.Millisecond, Max: time.Millisecond}, time.Hour))
	r.Add(bridgestest.NewNetwork(event.XMPP))
	r.Add(down)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := r.Dispatch(context.Background(), xmppMessage(fmt.Sprint(i), "bob@example.org", "carol%hs.example@matrix.example.org", "before")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_ = r.Stop(ctx)
	cancel()

	var mu sync.Mutex
	seen := map[string][]bridges.Attempt{}
	h := &harness{xmpp: bridgestest.NewNetwork(event.XMPP), matrix: bridgestest.NewNetwork(event.Matrix), store: st}
	h.matrix.SendFunc = func(ctx context.Context, e event.Event) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		id := e.Head().ID
		seen[id] = append(seen[id], bridges.AttemptOf(ctx))
		if len(seen[id]) < 3 {
			return "", errors.New("try again")
		}
		return id, nil
	}
	h.router = bridges.NewRouter(st, testMap(t), bridges.WithRetry(bridges.Backoff{Min: time.Millisecond, Max: time.Millisecond}, time.Hour))
	h.router.Add(h.xmpp)
	h.router.Add(h.matrix)
	if err := h.router.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = h.router.Stop(ctx)
	})
	if err := h.router.Dispatch(context.Background(), xmppMessage("new", "bob@example.org", "carol%hs.example@matrix.example.org", "after")); err != nil {
		t.Fatal(err)
	}
	h.matrix.WaitSent(waitCtx(t), 3)

	mu.Lock()
	defer mu.Unlock()
	for id, resumed := range map[string]bool{"0": true, "1": true, "new": false} {
		want := []bridges.Attempt{{Retry: 0, Resumed: resumed}, {Retry: 1, Resumed: resumed}, {Retry: 2, Resumed: resumed}}
		if fmt.Sprint(seen[id]) != fmt.Sprint(want) {
			t.Errorf("attempts of %s: %v, want %v", id, seen[id], want)
		}
		if seen[id][0].Repeated() != resumed || !seen[id][1].Repeated() {
			t.Errorf("Repeated of %s: %v then %v", id, seen[id][0].Repeated(), seen[id][1].Repeated())
		}
	}
	if got := bridges.AttemptOf(context.Background()); got != (bridges.Attempt{}) || got.Repeated() {
		t.Errorf("attempt without the router: %+v", got)
	}
}
