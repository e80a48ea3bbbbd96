package e2e

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/internal/peertest"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

// BenchmarkXMPPToMatrix pushes b.N messages from slixmpp clients on real
// Prosody through parley to a Matrix client on real Synapse and reports the
// throughput and the latency from the XMPP send to the Matrix client's sync.
//
//	go test ./e2e -run '^$' -bench XMPPToMatrix -benchtime 1000x
//
// PARLEY_BENCH_SENDERS (default 1) XMPP users write at once, each its own
// conversation (and Matrix room); PARLEY_BENCH_RATE (default 0: as fast as
// the clients can) paces the total send rate in messages per second.
func BenchmarkXMPPToMatrix(b *testing.B) {
	senders, rate := max(1, envInt("PARLEY_BENCH_SENDERS", 1)), envInt("PARLEY_BENCH_RATE", 0)
	st := newStack(b, stackSettings{homeserver: "synapse"})
	st.start(true)
	bob := peertest.ConnectMatrix(b, st.hs, "bob", "bobpassword")
	clients := make([]*peertest.XMPPClient, senders)
	for i := range clients {
		user := fmt.Sprintf("sender%d", i)
		st.prosody.Register(b, user, "senderpass")
		clients[i] = peertest.ConnectXMPP(b, st.prosody, user, "senderpass")
	}
	ctx := timeout(b, 20*time.Minute)
	// Open every conversation first, so room creation is not measured.
	for i, c := range clients {
		c.Send(b, bobGhostJID, fmt.Sprintf("warm-%d", i), fmt.Sprintf("warm-%d", i), false)
	}
	for range clients {
		if _, ok := bob.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return strings.HasPrefix(m.Body, "warm-") }); !ok {
			b.Fatal("a conversation did not open")
		}
	}

	n := b.N
	sent := make([]time.Time, n)
	latencies := make([]time.Duration, 0, n)
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	b.ResetTimer()
	start := time.Now()
	go func() {
		next := time.Now()
		for i := range n {
			if interval > 0 {
				time.Sleep(time.Until(next))
				next = next.Add(interval)
			}
			sent[i] = time.Now()
			clients[i%senders].Send(b, bobGhostJID, fmt.Sprintf("bench-%d", i), fmt.Sprintf("bench-%d", i), false)
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
	b.Logf("%d messages XMPP→Matrix, %d senders, rate %s: %s, %.1f msgs/s, p50 %s, p99 %s", n, senders,
		map[bool]string{true: "unpaced", false: strconv.Itoa(rate) + "/s"}[rate == 0], elapsed.Round(time.Millisecond),
		float64(n)/elapsed.Seconds(), pct(0.50).Round(time.Millisecond), pct(0.99).Round(time.Millisecond))
}
