package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/internal/peertest"
)

// BenchmarkXMPPToMatrix pushes b.N messages from a slixmpp client on real
// Prosody through parley to a Matrix client on real Synapse, as fast as the
// client can write, and reports the throughput and the latency from the
// XMPP send to the Matrix client's sync. Fix N with -benchtime, e.g.
//
//	go test ./e2e -run '^$' -bench XMPPToMatrix -benchtime 1000x
func BenchmarkXMPPToMatrix(b *testing.B) {
	st := newStack(b, stackSettings{homeserver: "synapse"})
	st.prosody.Register(b, "alice", "alicepass")
	st.start(true)
	alice := peertest.ConnectXMPP(b, st.prosody, "alice", "alicepass")
	bob := peertest.ConnectMatrix(b, st.hs, "bob", "bobpassword")
	dm(b, st, alice, bob)
	ctx := timeout(b, 20*time.Minute)

	n := b.N
	sent := make([]time.Time, n)
	latencies := make([]time.Duration, 0, n)
	b.ResetTimer()
	start := time.Now()
	go func() {
		for i := range n {
			sent[i] = time.Now()
			alice.Send(b, bobGhostJID, fmt.Sprintf("bench-%d", i), fmt.Sprintf("bench-%d", i), false)
		}
	}()
	var last time.Time
	for len(latencies) < n {
		m, ok := bob.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return strings.HasPrefix(m.Body, "bench-") })
		if !ok {
			b.Fatalf("received %d of %d messages", len(latencies), n)
		}
		last = time.Now()
		var i int
		_, _ = fmt.Sscanf(m.Body, "bench-%d", &i)
		latencies = append(latencies, last.Sub(sent[i]))
	}
	b.StopTimer()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) time.Duration { return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))] }
	elapsed := last.Sub(start)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(pct(0.50).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(pct(0.99).Milliseconds()), "p99-ms")
	b.Logf("%d messages XMPP→Matrix in %s: %.0f msgs/s, p50 %s, p99 %s", n, elapsed.Round(time.Millisecond),
		float64(n)/elapsed.Seconds(), pct(0.50).Round(time.Millisecond), pct(0.99).Round(time.Millisecond))
}
