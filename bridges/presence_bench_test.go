package bridges_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/store"
)

// BenchmarkPresenceFanout measures the routing core's side of one presence
// change of a presentity with 10,000 watchers (5,000 on each of two
// networks, fake adapters that only count): the time until every watcher's
// presence left the core, presences/s, and the memory per subscription
// (watcher registry and presence slots). Adapters' own work (NOTIFY
// encoding, stanza writes) is not in it.
func BenchmarkPresenceFanout(b *testing.B) {
	const perNetwork = 5000
	h := start(b, store.NewMemory())
	var delivered atomic.Int64
	count := func(_ context.Context, e event.Event) (string, error) {
		if _, ok := e.(*event.Presence); ok {
			delivered.Add(1)
		}
		return "", nil
	}
	h.xmpp.SendFunc, h.matrix.SendFunc = count, count
	ctx := context.Background()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	// Watchers on XMPP watch carol's ghost there; watchers on Matrix watch
	// an XMPP user's ghost: both are the presentity carol@hs.example, once
	// as herself (Matrix) and once through XMPP.
	for i := range perNetwork {
		if err := h.router.Dispatch(ctx, subscription(fmt.Sprintf("w%d@example.org", i), "carol%hs.example@matrix.example.org", true)); err != nil {
			b.Fatal(err)
		}
		s := &event.Subscription{Header: event.Header{From: event.Address{Network: event.Matrix, ID: fmt.Sprintf("m%d@hs.example", i)},
			To: event.Address{Network: event.Matrix, ID: "_xmpp_dave_example.org@hs.example"}}, Active: true}
		if err := h.router.Dispatch(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
	for len(h.matrix.Sent())+len(h.xmpp.Sent()) < 2*perNetwork { // forwarded subscriptions
		time.Sleep(time.Millisecond)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	states := []event.PresenceState{event.Away, event.Available}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		delivered.Store(0)
		if err := h.router.Dispatch(ctx, broadcast("carol@hs.example", states[i%2])); err != nil {
			b.Fatal(err)
		}
		dave := &event.Presence{Header: event.Header{From: event.Address{Network: event.XMPP, ID: "dave@example.org"}}, State: states[i%2]}
		if err := h.router.Dispatch(ctx, dave); err != nil {
			b.Fatal(err)
		}
		for delivered.Load() < 2*perNetwork {
			runtime.Gosched()
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	perChange := elapsed / time.Duration(b.N)
	b.ReportMetric(float64(perChange.Microseconds())/1000, "ms/change")
	b.ReportMetric(float64(2*perNetwork)/perChange.Seconds(), "presences/s")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(2*perNetwork), "B/subscription")
}

// BenchmarkSubscribeSQLite records b.N watchers of one presentity in a
// SQLite store: each subscription writes one row, so the cost per
// subscription does not grow with the number of watchers.
func BenchmarkSubscribeSQLite(b *testing.B) {
	st, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "parley.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	h := start(b, st)
	h.matrix.SendFunc = func(context.Context, event.Event) (string, error) { return "", nil }
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if err := h.router.Dispatch(ctx, subscription(fmt.Sprintf("w%d@example.org", i), "carol%hs.example@matrix.example.org", true)); err != nil {
			b.Fatal(err)
		}
	}
}
