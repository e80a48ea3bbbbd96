package e2e

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mevent "maunium.net/go/mautrix/event"

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
	st := newStack(b, stackSettings{homeserver: "synapse", logLevel: "info"})
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

// BenchmarkSIPToXMPP has sipp send b.N MESSAGEs at PARLEY_BENCH_RATE per
// second (default 50) from phone 1001 (digest-authenticated: each MESSAGE
// is challenged once) through parley to alice on real Prosody, and reports
// the rate parley accepted them (202) and delivered them, with latency from
// sipp's scheduled send time (sipp paces calls evenly) to alice's client.
//
//	go test ./e2e -run '^$' -bench SIPToXMPP -benchtime 1000x
func BenchmarkSIPToXMPP(b *testing.B) {
	rate := envInt("PARLEY_BENCH_RATE", 50)
	if rate == 0 {
		rate = 50
	}
	st := newStack(b, stackSettings{homeserver: "synapse", logLevel: "info"})
	st.prosody.Register(b, "alice", "alicepass")
	st.start(true)
	alice := peertest.ConnectXMPP(b, st.prosody, "alice", "alicepass")
	ctx := timeout(b, 20*time.Minute)

	n := b.N
	scenario := strings.ReplaceAll(peertest.SippScenario("uac_message.xml"), "[$body]", "[$body]-[call_number]")
	type outcome struct {
		r peertest.SippResult
	}
	done := make(chan outcome, 1)
	cpu := func() (parley, prosody time.Duration) {
		parley, _ = peertest.CPUTime(st.parley.Process.Pid)
		prosody, _ = peertest.CPUTime(st.prosody.Pid())
		return parley, prosody
	}
	parleyCPU0, prosodyCPU0 := cpu()
	b.ResetTimer()
	start := time.Now()
	go func() {
		r := peertest.RunSipp(b, peertest.SippOptions{Scenario: "bench", ScenarioXML: scenario, Target: st.sipAddr,
			Service: "xmpp_alice_localhost", Vars: map[string]string{"domain": sipDomain, "from": "sip:1001@" + sipDomain, "body": "sipbench",
				"ctype": "text/plain;charset=UTF-8"},
			AuthUser: "1001", AuthPassword: sipUsers["1001"], Calls: n, Rate: float64(rate), Limit: 1000,
			Timeout: time.Duration(n/rate+60) * time.Second, AllowFailure: true, Name: "sip-bench"})
		done <- outcome{r}
	}()
	latencies := make([]time.Duration, 0, n)
	interval := time.Second / time.Duration(rate)
	var (
		last time.Time
		out  outcome
		over bool
	)
	wait := ctx
	for len(latencies) < n {
		select {
		case out = <-done:
			// sipp is done: wait a little longer for what parley accepted.
			over = true
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			wait = c
		default:
		}
		e, ok := alice.Next(wait, func(e peertest.XMPPEvent) bool { return e.Ev == "message" && strings.HasPrefix(e.Body, "sipbench-") })
		if !ok {
			b.Fatalf("alice received %d of %d; sipp: %d accepted, %d failed\n%s", len(latencies), n, out.r.Successful, out.r.Failed, out.r.Diagnostics())
		}
		last = time.Now()
		var i int
		_, _ = fmt.Sscanf(e.Body, "sipbench-%d", &i)
		latencies = append(latencies, last.Sub(start.Add(time.Duration(i-1)*interval)))
	}
	b.StopTimer()
	parleyCPU1, prosodyCPU1 := cpu()
	if !over {
		out = <-done
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) time.Duration { return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))] }
	accepted := float64(out.r.Successful) / out.r.Duration.Seconds()
	delivered := float64(n) / last.Sub(start).Seconds()
	b.ReportMetric(accepted, "accepted/s")
	b.ReportMetric(delivered, "delivered/s")
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	// Where the CPU went: parley's share per message, and the XMPP
	// server's, measured apart.
	parleyPer := (parleyCPU1 - parleyCPU0) / time.Duration(n)
	prosodyPer := (prosodyCPU1 - prosodyCPU0) / time.Duration(n)
	b.ReportMetric(float64(parleyPer.Microseconds()), "parley-cpu-µs/msg")
	b.ReportMetric(float64(prosodyPer.Microseconds()), "prosody-cpu-µs/msg")
	b.Logf("%d MESSAGEs SIP→XMPP at %d/s: %d accepted (202), %d failed, %.1f accepted/s, %.1f delivered/s, p50 %s, p99 %s; "+
		"CPU per message: parley %s, prosody %s (parley alone would saturate one core at ~%.0f msgs/s)",
		n, rate, out.r.Successful, out.r.Failed, accepted, delivered, pct(0.50).Round(time.Millisecond), pct(0.99).Round(time.Millisecond),
		parleyPer, prosodyPer, float64(time.Second)/float64(max(parleyPer, time.Microsecond)))
}

// rssOf returns the resident memory of process pid.
func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// BenchmarkPresenceNotify: PARLEY_BENCH_WATCHERS (default 5000) SIP presence
// keys (one sipp, a trusted peer) watch a Matrix user on real Synapse; the
// user changes presence once per iteration; the time until parley has sent
// every NOTIFY (and the watcher answered it) is measured through parley's
// own delivery counter, with NOTIFY/s and parley's resident memory per
// subscription.
//
//	go test ./e2e -run '^$' -bench PresenceNotify -benchtime 3x
func BenchmarkPresenceNotify(b *testing.B) {
	watchers := envInt("PARLEY_BENCH_WATCHERS", 5000)
	st := newStack(b, stackSettings{homeserver: "synapse", logLevel: "info", sipTrustedDomain: "watchers.localhost"})
	st.prosody.Register(b, "alice", "alicepass")
	st.start(true)
	alice := peertest.ConnectXMPP(b, st.prosody, "alice", "alicepass")
	bob := peertest.ConnectMatrix(b, st.hs, "bob", "bobpassword")
	dm(b, st, alice, bob) // bob shares a room with a ghost: Synapse pushes his presence

	delivered := func() float64 {
		_, m := st.get("/metrics")
		return metricValue(m, `parley_events_delivered_total{kind="presence",network="sip"}`)
	}
	rss0 := rssOf(st.parley.Process.Pid)
	keys := peertest.StartSipp(b, peertest.SippOptions{Scenario: scenario(b, "uac_subscribe_many.xml"), Target: st.sipAddr,
		Service: "matrix_bob_localhost", Vars: map[string]string{"domain": "watchers.localhost", "target": sipDomain, "expires": "3600"},
		Calls: watchers, Rate: 1000, Limit: watchers + 10, Timeout: 20 * time.Minute, Name: "presence-keys"})
	// Every key got its initial NOTIFY from the adapter; wait until the
	// core has recorded every watcher too (each gets bob's last state).
	deadline := time.Now().Add(2 * time.Minute)
	for len(keys.Received("NOTIFY")) < watchers {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d keys subscribed", len(keys.Received("NOTIFY")), watchers)
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(6 * time.Second) // past the 5 s NOTIFY interval of every dialog
	rss1 := rssOf(st.parley.Process.Pid)
	base := delivered()

	states := []mevent.Presence{mevent.PresenceUnavailable, mevent.PresenceOnline}
	b.ResetTimer()
	var elapsed time.Duration // changes only, not the pauses between them
	for i := range b.N {
		start := time.Now()
		want := base + float64((i+1)*watchers)
		if err := bob.SetPresence(b.Context(), mautrix.ReqPresence{Presence: states[i%2], StatusMsg: fmt.Sprint("change ", i)}); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for delivered() < want {
			if time.Now().After(deadline) {
				b.Fatalf("change %d: %v of %d NOTIFYs", i, delivered()-base-float64(i*watchers), watchers)
			}
			time.Sleep(20 * time.Millisecond)
		}
		elapsed += time.Since(start)
		if i+1 < b.N {
			b.StopTimer()
			time.Sleep(6 * time.Second) // next change is not held back by the NOTIFY interval
			b.StartTimer()
		}
	}
	b.StopTimer()
	perChange := elapsed / time.Duration(b.N)
	b.ReportMetric(float64(perChange.Milliseconds()), "ms/change")
	b.ReportMetric(float64(watchers)/perChange.Seconds(), "NOTIFY/s")
	b.ReportMetric(float64(rss1-rss0)/float64(watchers), "parley-RSS-B/subscription")
	b.Logf("%d SIP watchers of a Matrix user: one change → every NOTIFY answered in %s (%.0f NOTIFY/s); parley RSS %+.1f MiB for the subscriptions (%.0f B each)",
		watchers, perChange.Round(time.Millisecond), float64(watchers)/perChange.Seconds(), float64(rss1-rss0)/(1<<20), float64(rss1-rss0)/float64(watchers))
}
