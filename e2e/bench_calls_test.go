package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/parleygw/parley/internal/peertest"
)

// rtpLoad is the benchmark's media: one socket plays every caller (it sends
// a 20 ms G.711 packet to each call's caller leg in turn), another every
// callee (it echoes what it gets). A packet carries its call and the time
// it was sent, so its round trip (caller → Parley → callee → Parley →
// caller) is measured when it comes back.
type rtpLoad struct {
	caller, callee *net.UDPConn
	mu             sync.Mutex
	legs           []netip.AddrPort // Parley's caller legs
	sent, back     atomic.Int64
	echoed         atomic.Int64
	rtts           []time.Duration
	recording      atomic.Bool
	start          time.Time
}

func newRTPLoad(t testing.TB) *rtpLoad {
	t.Helper()
	l := &rtpLoad{start: time.Now()}
	for _, c := range []**net.UDPConn{&l.caller, &l.callee} {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadBuffer(8 << 20)
		_ = conn.SetWriteBuffer(8 << 20)
		*c = conn
	}
	t.Cleanup(func() { _ = l.caller.Close(); _ = l.callee.Close() })
	go l.echo()
	go l.receive()
	return l
}

func port(c *net.UDPConn) int { return c.LocalAddr().(*net.UDPAddr).Port }

func (l *rtpLoad) echo() {
	pc := ipv4.NewPacketConn(l.callee)
	msgs := batch(64)
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		for i := range n {
			msgs[i].Buffers[0] = msgs[i].Buffers[0][:msgs[i].N]
		}
		l.echoed.Add(int64(n))
		_, _ = pc.WriteBatch(msgs[:n], 0)
		for i := range n {
			msgs[i].Buffers[0] = msgs[i].Buffers[0][:cap(msgs[i].Buffers[0])]
		}
	}
}

// batch returns n messages of one 2 KiB buffer each, for ReadBatch and
// WriteBatch (recvmmsg, sendmmsg): the load costs few system calls, so
// that the machine's cores go to Parley.
func batch(n int) []ipv4.Message {
	msgs := make([]ipv4.Message, n)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	return msgs
}

func (l *rtpLoad) receive() {
	pc := ipv4.NewPacketConn(l.caller)
	msgs := batch(64)
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		now := time.Since(l.start)
		l.back.Add(int64(n))
		if !l.recording.Load() {
			continue
		}
		l.mu.Lock()
		for i := range n {
			if msgs[i].N >= 12+8 {
				l.rtts = append(l.rtts, now-time.Duration(binary.BigEndian.Uint64(msgs[i].Buffers[0][12:])))
			}
		}
		l.mu.Unlock()
	}
}

// play sends one packet every 20 ms to every known caller leg (to, when
// set, instead: the direct baseline) until stop is closed. The calls are
// spread over the 20 ms, a twentieth of them each millisecond, as
// independent phones would send, not in one burst.
func (l *rtpLoad) play(stop <-chan struct{}, to *netip.AddrPort) {
	pc := ipv4.NewPacketConn(l.caller)
	var msgs []ipv4.Message
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var seq uint16
	for slot := 0; ; slot = (slot + 1) % 20 {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		l.mu.Lock()
		legs := l.legs
		l.mu.Unlock()
		if to != nil {
			legs = []netip.AddrPort{*to}
		}
		if slot == 0 {
			seq++
		}
		msgs = msgs[:0]
		for i := slot; i < len(legs); i += 20 {
			pkt := make([]byte, 12+160)
			pkt[0], pkt[1] = 0x80, 8 // RTP version 2, PCMA
			binary.BigEndian.PutUint16(pkt[2:], seq)
			binary.BigEndian.PutUint32(pkt[4:], uint32(seq)*160)
			binary.BigEndian.PutUint32(pkt[8:], uint32(i))
			binary.BigEndian.PutUint64(pkt[12:], uint64(time.Since(l.start)))
			msgs = append(msgs, ipv4.Message{Buffers: [][]byte{pkt}, Addr: net.UDPAddrFromAddrPort(legs[i])})
		}
		for sent := 0; sent < len(msgs); {
			n, err := pc.WriteBatch(msgs[sent:], 0)
			if err != nil {
				break
			}
			sent += n
			l.sent.Add(int64(n))
		}
	}
}

func (l *rtpLoad) percentiles() (p50, p99 time.Duration, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.rtts) == 0 {
		return 0, 0, 0
	}
	sort.Slice(l.rtts, func(i, j int) bool { return l.rtts[i] < l.rtts[j] })
	at := func(p float64) time.Duration { return l.rtts[min(len(l.rtts)-1, int(p*float64(len(l.rtts))))] }
	return at(0.50), at(0.99), len(l.rtts)
}

// BenchmarkCalls: sipp places PARLEY_BENCH_CALLS (default 1000) concurrent
// SIP → SIP G.711 calls through Parley to a registered sipp phone; the
// benchmark sends 50 packets/s per call into each caller leg and echoes
// them at the callee, for PARLEY_BENCH_SECONDS (default 10) once every
// call is up. It reports the calls held, packets/s Parley relayed, the
// latency Parley adds to each relayed packet (half of the round trip beyond
// the direct round trip, p50/p99), loss, Parley's CPU per 1,000 calls and
// its memory per call.
//
//	make bench-calls CALLS=1000
func BenchmarkCalls(b *testing.B) {
	calls := envInt("PARLEY_BENCH_CALLS", 1000)
	seconds := envInt("PARLEY_BENCH_SECONDS", 10)
	// Two legs a call, two ports a leg, and room to spare.
	st := newStack(b, stackSettings{logLevel: "info", sipTrustedDomain: sipDomain, mediaPorts: 4*calls + 1000, callsPerUser: calls})
	st.start(true)
	load := newRTPLoad(b)

	// The direct round trip, without Parley: the baseline.
	direct := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port(load.callee)))
	stop := make(chan struct{})
	load.recording.Store(true)
	go load.play(stop, &direct)
	time.Sleep(2 * time.Second)
	close(stop)
	time.Sleep(100 * time.Millisecond)
	load.recording.Store(false)
	d50, d99, _ := load.percentiles()
	load.rtts = nil

	heap0, rss0 := st.liveHeap(), rssOf(st.parley.Process.Pid)
	abs := testdataPath(b, "uas_call.xml")
	// Each call lasts its setup (sipp starts 100 a second), the measured
	// window and a margin; the media must flow all along, or Parley hangs
	// the calls up for silence.
	hold := time.Duration(seconds)*time.Second + time.Duration(calls/100+5)*time.Second
	callee := peertest.StartSipp(b, peertest.SippOptions{
		Scenario: "uac_register_then_uas.xml", OOCScenario: abs, Target: st.sipAddr,
		Service: "1002", AuthPassword: sipUsers["1002"], Name: "bench-callee",
		Vars: map[string]string{"domain": sipDomain, "messages": fmt.Sprint(calls), "rtp_ip": "127.0.0.1",
			"rtp_port": fmt.Sprint(port(load.callee)), "talk": "0", "hangup": "caller"},
		Timeout: hold + 2*time.Minute, Args: []string{"-max_socket", "60000"},
	})
	waitLog(b, callee, "REGISTERED", 10*time.Second)
	caller := peertest.StartSipp(b, peertest.SippOptions{
		Scenario: testdataPath(b, "uac_call_bench.xml"), Target: st.sipAddr, Name: "bench-caller",
		Vars: map[string]string{"domain": sipDomain, "from": "1001", "to": "1002", "rtp_ip": "127.0.0.1",
			"rtp_port": fmt.Sprint(port(load.caller)), "hold": fmt.Sprint(hold.Milliseconds())},
		Calls: calls, Limit: calls, Rate: 100, Timeout: hold + 2*time.Minute,
	})

	// Learn each call's caller leg from sipp's log, and send into it.
	stop = make(chan struct{})
	go load.play(stop, nil)
	stopPlaying := sync.OnceFunc(func() { close(stop) })
	defer stopPlaying()
	setupStart := time.Now()
	for seen := 0; seen < calls; {
		legs := mediaPorts(caller.Logs())
		if len(legs) > seen {
			load.mu.Lock()
			load.legs = legs
			load.mu.Unlock()
			seen = len(legs)
		}
		if caller.Exited() || time.Since(setupStart) > hold {
			b.Fatalf("%d of %d calls up; caller sipp: %v", seen, calls, caller.Logs()[max(0, len(caller.Logs())-5):])
		}
		time.Sleep(200 * time.Millisecond)
	}
	setup := time.Since(setupStart)
	time.Sleep(time.Second) // every leg latched

	cpu0, _ := peertest.CPUTime(st.parley.Process.Pid)
	sent0, back0, echoed0 := load.sent.Load(), load.back.Load(), load.echoed.Load()
	load.recording.Store(true)
	b.ResetTimer()
	window := time.Duration(seconds) * time.Second
	time.Sleep(window)
	load.recording.Store(false)
	b.StopTimer()
	cpu1, _ := peertest.CPUTime(st.parley.Process.Pid)
	sentEnd, echoed := load.sent.Load(), load.echoed.Load()-echoed0
	// What was sent in the window and is still on its way comes back in the
	// next moments, together with what is sent meanwhile: count the window's
	// packets back as all that came back by then but those sent later.
	time.Sleep(200 * time.Millisecond)
	sent := sentEnd - sent0
	back := load.back.Load() - back0 - (load.sent.Load() - sentEnd)
	heap1, rss1 := st.liveHeap(), rssOf(st.parley.Process.Pid)
	_, m := st.get("/metrics")
	active := metricValue(m, "parley_calls_active")

	p50, p99, samples := load.percentiles()
	relayed := float64(echoed+back) / window.Seconds()
	loss := 1 - float64(back)/float64(max(sent, 1))
	cpuPer1000 := time.Duration(float64(cpu1-cpu0) / window.Seconds() / float64(calls) * 1000)
	b.ReportMetric(active, "calls-held")
	b.ReportMetric(relayed, "packets/s")
	b.ReportMetric(float64((p50-d50)/2)/1e6, "added-p50-ms")
	b.ReportMetric(float64((p99-d99)/2)/1e6, "added-p99-ms")
	b.ReportMetric(loss*100, "loss-%")
	b.ReportMetric(cpuPer1000.Seconds()*100, "cpu-%-per-1000-calls")
	b.ReportMetric(float64(heap1-heap0)/float64(calls)/1024, "heap-KiB/call")
	b.ReportMetric(float64(rss1-rss0)/float64(calls)/1024, "rss-KiB/call")
	b.Logf("%d calls set up in %s (%.0f calls/s); %d held by Parley; over %s: %.0f packets/s relayed, %d sent, %d echoed, %d back (loss %.3f%%); "+
		"round trip through Parley p50 %s p99 %s (%d samples), direct p50 %s p99 %s: Parley adds p50 %s p99 %s per relayed packet; "+
		"Parley's CPU %.1f%% of a core per 1,000 calls; memory per call: live heap %.1f KiB, RSS %.1f KiB",
		calls, setup.Round(time.Millisecond), float64(calls)/setup.Seconds(), int(active), window, relayed, sent, echoed, back, loss*100,
		p50, p99, samples, d50, d99, (p50-d50)/2, (p99-d99)/2,
		cpuPer1000.Seconds()*100, float64(heap1-heap0)/float64(calls)/1024, float64(rss1-rss0)/float64(calls)/1024)
	caller.Wait(b)
	stopPlaying()
	callee.Wait(b)
}

// mediaPorts returns Parley's caller legs that sipp logged ("MEDIA <port>").
func mediaPorts(lines []string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, l := range lines {
		if i := strings.Index(l, "MEDIA "); i >= 0 {
			if p, err := strconv.Atoi(strings.TrimSpace(l[i+6:])); err == nil {
				out = append(out, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p)))
			}
		}
	}
	return out
}
