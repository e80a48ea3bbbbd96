package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	allocs0 := st.allocatedBytes()
	// RSS is sampled while the run lasts: its peak is what the load costs.
	var rssPeak atomic.Int64
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	stopSampling := sync.OnceFunc(func() { close(sampling); <-sampled })
	defer stopSampling() // also when the benchmark fails
	pid := st.parley.Process.Pid
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if r := rssOf(pid); r > rssPeak.Load() {
				rssPeak.Store(r)
			}
			select {
			case <-t.C:
			case <-sampling:
				return
			}
		}
	}()
	// PARLEY_BENCH_PROFILE_DIR: where to write parley's CPU profile of
	// the run and its allocation profile (go tool pprof FILE).
	profDir := os.Getenv("PARLEY_BENCH_PROFILE_DIR")
	profiled := make(chan struct{})
	if profDir != "" {
		go func() {
			defer close(profiled)
			_, prof := st.get(fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, n/rate)))
			if err := os.WriteFile(filepath.Join(profDir, "sip-cpu.pprof"), []byte(prof), 0o600); err != nil {
				b.Error(err)
			}
		}()
	} else {
		close(profiled)
	}
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
	stopSampling()
	allocated := (st.allocatedBytes() - allocs0) / float64(n)
	<-profiled
	if profDir != "" {
		_, prof := st.get("/debug/pprof/allocs")
		if err := os.WriteFile(filepath.Join(profDir, "sip-allocs.pprof"), []byte(prof), 0o600); err != nil {
			b.Error(err)
		}
	}
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
	b.ReportMetric(allocated, "parley-alloc-B/msg")
	b.ReportMetric(float64(rssPeak.Load())/(1<<20), "parley-RSS-peak-MiB")
	b.Logf("%d MESSAGEs SIP→XMPP at %d/s: %d accepted (202), %d failed, %.1f accepted/s, %.1f delivered/s, p50 %s, p99 %s; "+
		"CPU per message: parley %s, prosody %s (parley alone would saturate one core at ~%.0f msgs/s); "+
		"parley allocated %.0f B per message (each SIP transaction counts twice: the challenge and the MESSAGE), RSS peak %.1f MiB",
		n, rate, out.r.Successful, out.r.Failed, accepted, delivered, pct(0.50).Round(time.Millisecond), pct(0.99).Round(time.Millisecond),
		parleyPer, prosodyPer, float64(time.Second)/float64(max(parleyPer, time.Microsecond)), allocated, float64(rssPeak.Load())/(1<<20))
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

// BenchmarkPresenceNotify: one Matrix user on real Synapse, bob, is watched
// by PARLEY_BENCH_WATCHERS (default 5000) SIP presence keys (one sipp, a
// trusted peer) and PARLEY_BENCH_XMPP_WATCHERS (default 5000) XMPP users
// logged in to real Prosody (peertest.XMPPSwarm), each subscribed to bob's
// ghost. Bob changes presence once per iteration; the time until parley
// has sent every NOTIFY (and the watcher answered it) and every XMPP
// watcher has received the presence stanza is the time of the change. It
// reports NOTIFY/s, presence stanzas/s, and parley's memory per
// subscription: the growth of its live heap (after a forced collection,
// once the transactions of the subscribing are over) and of its RSS.
//
//	go test ./e2e -run '^$' -bench PresenceNotify -benchtime 3x
func BenchmarkPresenceNotify(b *testing.B) {
	sipWatchers := envInt("PARLEY_BENCH_WATCHERS", 5000)
	xmppWatchers := envInt("PARLEY_BENCH_XMPP_WATCHERS", 5000)
	st := newStack(b, stackSettings{homeserver: "synapse", logLevel: "info", sipTrustedDomain: "watchers.localhost"})
	st.prosody.Register(b, "alice", "alicepass")
	st.start(true)
	alice := peertest.ConnectXMPP(b, st.prosody, "alice", "alicepass")
	bob := peertest.ConnectMatrix(b, st.hs, "bob", "bobpassword")
	dm(b, st, alice, bob) // bob shares a room with a ghost: Synapse pushes his presence
	var swarm *peertest.XMPPSwarm
	if xmppWatchers > 0 {
		st.prosody.RegisterMany(b, "w", xmppWatchers, "watcherpass")
		swarm = peertest.ConnectSwarm(b, st.prosody, "w", xmppWatchers, "watcherpass")
	}
	// Online, so that each new watcher is sent his presence at once (there
	// is nothing to send of someone offline); parley knows it once alice,
	// who watches him, sees it. Synapse times out in 30 s the presence of
	// a user whose client does not sync as online (bob's does not), so
	// his client says it again every 10 s until the watchers are in.
	alice.Subscribe(b, bobGhostJID)
	online := func() {
		if err := bob.SetPresence(b.Context(), mautrix.ReqPresence{Presence: mevent.PresenceOnline, StatusMsg: "ready"}); err != nil {
			b.Error(err)
		}
	}
	online()
	waitXMPPPresence(b, alice, bobGhostJID, "", "ready")
	keepOnline := time.NewTicker(10 * time.Second)
	setupDone := make(chan struct{})
	go func() {
		for {
			select {
			case <-keepOnline.C:
				online()
			case <-setupDone:
				return
			}
		}
	}()
	subscribing := time.Now()

	// delivered reads, in one scrape, parley's count of presence delivered
	// to SIP (NOTIFYs answered) and to XMPP (stanzas written).
	delivered := func() (notified, written float64) {
		_, m := st.get("/metrics")
		return metricValue(m, `parley_events_delivered_total{kind="presence",network="sip"}`),
			metricValue(m, `parley_events_delivered_total{kind="presence",network="xmpp"}`)
	}
	// showing counts the XMPP watchers whose last presence of bob had
	// the status text status: each change has its own.
	showing := func(status string) int {
		if swarm == nil {
			return 0
		}
		return swarm.Showing(status)
	}
	heap0, rss0, allocs0 := st.liveHeap(), rssOf(st.parley.Process.Pid), st.allocatedBytes()
	if swarm != nil {
		// Paced: at once, 5,000 subscription requests keep Prosody
		// (on the same two cores as everything else) from reading the
		// component stream for tens of seconds.
		if err := swarm.Subscribe(b.Context(), bobGhostJID, 250); err != nil {
			b.Fatal(err)
		}
	}
	if sipWatchers > 0 {
		keys := peertest.StartSipp(b, peertest.SippOptions{Scenario: scenario(b, "uac_subscribe_many.xml"), Target: st.sipAddr,
			Service: "matrix_bob_localhost", Vars: map[string]string{"domain": "watchers.localhost", "target": sipDomain, "expires": "3600"},
			Calls: sipWatchers, Rate: 1000, Limit: sipWatchers + 10, Timeout: 20 * time.Minute, Name: "presence-keys"})
		// Every key got its initial NOTIFY from the adapter.
		deadline := time.Now().Add(2 * time.Minute)
		for len(keys.Received("NOTIFY")) < sipWatchers {
			if time.Now().After(deadline) {
				b.Fatalf("only %d of %d keys subscribed", len(keys.Received("NOTIFY")), sipWatchers)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	// Every XMPP watcher got bob's current presence on approval.
	deadline := time.Now().Add(2 * time.Minute)
	for showing("ready") < xmppWatchers {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d XMPP watchers got bob's presence", showing("ready"), xmppWatchers)
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Logf("%d SIP and %d XMPP watchers subscribed, and sent bob's presence, in %s",
		sipWatchers, xmppWatchers, time.Since(subscribing).Round(100*time.Millisecond))
	keepOnline.Stop()
	close(setupDone)
	// Past the 5 s NOTIFY interval of every dialog, and past the end of
	// the SIP transactions of the subscribing (32 s over UDP), which are
	// not part of what a subscription costs.
	time.Sleep(35 * time.Second)
	heap1, rss1, allocs1 := st.liveHeap(), rssOf(st.parley.Process.Pid), st.allocatedBytes()
	if path := os.Getenv("PARLEY_BENCH_HEAP_PROFILE"); path != "" {
		// For a look at what the subscriptions hold: go tool pprof path.
		_, prof := st.get("/debug/pprof/heap")
		if err := os.WriteFile(path, []byte(prof), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	base, baseWritten := delivered()

	states := []mevent.Presence{mevent.PresenceUnavailable, mevent.PresenceOnline}
	b.ResetTimer()
	// Per change, summed: until every NOTIFY was answered, until parley
	// had written every XMPP stanza, and until every XMPP client had it.
	var tNotify, tWritten, tReceived time.Duration
	for i := range b.N {
		start := time.Now()
		wantNotify := base + float64((i+1)*sipWatchers)
		wantWritten := baseWritten + float64((i+1)*xmppWatchers)
		status := fmt.Sprint("change ", i)
		if err := bob.SetPresence(b.Context(), mautrix.ReqPresence{Presence: states[i%2], StatusMsg: status}); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		var notifyAt, writtenAt, receivedAt time.Duration
		for notifyAt == 0 || writtenAt == 0 || receivedAt == 0 {
			time.Sleep(5 * time.Millisecond)
			notified, written := delivered()
			now := time.Since(start)
			if time.Now().After(deadline) {
				b.Fatalf("change %d: %v of %d NOTIFYs, %d of %d presence stanzas", i,
					notified-base-float64(i*sipWatchers), sipWatchers, showing(status), xmppWatchers)
			}
			if notifyAt == 0 && notified >= wantNotify {
				notifyAt = now
			}
			if writtenAt == 0 && written >= wantWritten {
				writtenAt = now
			}
			if receivedAt == 0 && showing(status) >= xmppWatchers {
				receivedAt = now
			}
		}
		tNotify, tWritten, tReceived = tNotify+notifyAt, tWritten+writtenAt, tReceived+receivedAt
		if i+1 < b.N {
			b.StopTimer()
			time.Sleep(6 * time.Second) // next change is not held back by the NOTIFY interval
			b.StartTimer()
		}
	}
	b.StopTimer()
	n := time.Duration(b.N)
	tNotify, tWritten, tReceived = tNotify/n, tWritten/n, tReceived/n
	subs := float64(sipWatchers + xmppWatchers)
	b.ReportMetric(float64(max(tNotify, tReceived).Milliseconds()), "ms/change")
	b.ReportMetric(float64(sipWatchers)/tNotify.Seconds(), "NOTIFY/s")
	b.ReportMetric(float64(xmppWatchers)/tWritten.Seconds(), "parley-stanzas/s")
	b.ReportMetric(float64(xmppWatchers)/tReceived.Seconds(), "received-stanzas/s")
	b.ReportMetric(float64(heap1-heap0)/subs, "parley-heap-B/subscription")
	b.ReportMetric(float64(rss1-rss0)/subs, "parley-RSS-B/subscription")
	// Everything parley allocated while the watchers subscribed, garbage
	// included: SUBSCRIBE, the first NOTIFY, the core's records.
	b.ReportMetric((allocs1-allocs0)/subs, "parley-alloc-B/subscription")
	b.Logf("bob on Matrix, watched by %d SIP presence keys and %d XMPP users; one change → every NOTIFY answered in %s (%.0f NOTIFY/s), "+
		"every XMPP stanza written by parley in %s (%.0f/s) and received by its client in %s (%.0f/s); "+
		"parley for the %.0f subscriptions: live heap %+.1f MiB (%.0f B each), RSS %+.1f MiB (%.0f B each)",
		sipWatchers, xmppWatchers, tNotify.Round(time.Millisecond), float64(sipWatchers)/tNotify.Seconds(),
		tWritten.Round(time.Millisecond), float64(xmppWatchers)/tWritten.Seconds(), tReceived.Round(time.Millisecond), float64(xmppWatchers)/tReceived.Seconds(),
		subs, float64(heap1-heap0)/(1<<20), float64(heap1-heap0)/subs, float64(rss1-rss0)/(1<<20), float64(rss1-rss0)/subs)
}

// allocatedBytes returns the bytes parley has allocated on its heap since it
// started (go_gc_heap_allocs_bytes_total), garbage included.
func (st *stack) allocatedBytes() float64 {
	st.t.Helper()
	_, m := st.get("/metrics")
	v := metricValue(m, "go_gc_heap_allocs_bytes_total")
	if v < 0 {
		st.t.Fatal("no go_gc_heap_allocs_bytes_total in /metrics")
	}
	return v
}

// liveHeap returns parley's live heap right after a collection: it asks
// the admin listener's profiler for a heap profile after a GC (pprof is on
// in the test stacks), then reads go_gc_heap_live_bytes.
func (st *stack) liveHeap() int64 {
	st.t.Helper()
	if code, _ := st.get("/debug/pprof/heap?gc=1"); code != 200 {
		st.t.Fatalf("forced collection: /debug/pprof/heap answered %d", code)
	}
	_, m := st.get("/metrics")
	v := metricValue(m, "go_gc_heap_live_bytes")
	if v <= 0 {
		st.t.Fatalf("go_gc_heap_live_bytes = %v", v)
	}
	return int64(v)
}
