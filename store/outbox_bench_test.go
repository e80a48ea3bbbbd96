package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/parleygw/parley/internal/peertest"
	"github.com/parleygw/parley/store"
)

// BenchmarkOutbox measures the outbox's write path on SQLite, as the router
// uses it: Enqueue of an accepted event, then Done once it is delivered.
//
//	go test ./store -run '^$' -bench Outbox -benchmem
//
// "sequential" is one caller at a time (each waits for its commit);
// "concurrent-N" is N callers at once, as when many messages arrive
// together (each still returns only once its own entry is committed).
// Every op is one Enqueue and one Done.
func BenchmarkOutbox(b *testing.B) {
	for _, callers := range []int{1, 16, 64} {
		name := "sequential"
		if callers > 1 {
			name = fmt.Sprintf("concurrent-%d", callers)
		}
		b.Run(name, func(b *testing.B) {
			s, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "parley.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			ctx := context.Background()
			now := time.Now()
			entries := make([]*store.Entry, b.N)
			for i := range entries {
				entries[i] = entry(fmt.Sprintf("bench-%d", i), "a benchmark message of a typical length", now)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0, _ := peertest.CPUTime(os.Getpid())
			var wg sync.WaitGroup
			for c := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := c; i < b.N; i += callers {
						if dup, err := s.Enqueue(ctx, entries[i]); err != nil || dup {
							b.Errorf("Enqueue: dup=%v err=%v", dup, err)
							return
						}
						if err := s.Done(ctx, entries[i].Seq); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			cpu1, _ := peertest.CPUTime(os.Getpid())
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			// CPU time is less sensitive than ns/op to other load.
			b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
