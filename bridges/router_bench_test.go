package bridges_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/store"
)

// BenchmarkRouter measures the routing core alone: Dispatch (mapping,
// outbox, queue) and delivery to an in-memory network, over 64
// conversations. It reports events/s; -benchmem gives allocs per event.
func BenchmarkRouter(b *testing.B) {
	h := start(b, store.NewMemory())
	const conversations = 64
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = fmt.Sprint(i)
	}
	ghosts := make([]string, conversations)
	for i := range ghosts {
		ghosts[i] = fmt.Sprintf("user%d%%hs.example@matrix.example.org", i)
	}
	msgs := make([]event.Message, b.N)
	for i := range msgs {
		msgs[i] = *xmppMessage(ids[i], "bob@example.org", ghosts[i%conversations], "hello")
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range msgs {
		if err := h.router.Dispatch(ctx, &msgs[i]); err != nil {
			b.Fatal(err)
		}
	}
	h.matrix.WaitSent(waitCtx(b), b.N)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
