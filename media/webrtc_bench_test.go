//go:build linux

package media

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/parleygw/parley/event"
)

// BenchmarkWebRTCCalls measures what a SIP ↔ Matrix call costs Parley: N
// calls (1, 10, 100 and 200, or the comma-separated PARLEY_BENCH_CALLS),
// each a plain RTP leg (the SIP phone's) connected to a WebRTC leg (the
// Matrix client's), with real media for PARLEY_BENCH_SECONDS (default 10):
// the phone sends 50 packets/s of 20 ms PCMU into each plain leg, the
// client receives them over DTLS-SRTP and sends each back, and the phone
// receives them.
//
// The phones and the clients (one pion PeerConnection each, with pion's
// default interceptors, as a browser has) run in a second process, this
// test binary started again as a peer (see TestMain), so that the
// benchmark's own process holds Parley's legs and nothing else: its live
// heap, goroutine stacks, RSS and CPU time are Parley's alone. It reports,
// per call:
//   - webrtc-KiB/leg: live heap and goroutine stacks a connected WebRTC
//     leg holds (after a forced collection with every call up and media
//     having flowed), the figure of the goal of 256 KiB; its heap and stack
//     parts, and goroutines/leg;
//   - plain-KiB/leg: the same for the SIP side's plain leg;
//   - RSS-KiB/call: growth of the process's resident memory, after
//     returning freed memory to the system;
//   - peer-KiB/call: live heap and stacks of a call's phone and client in
//     the other process, for comparison: what a pion PeerConnection with
//     pion's defaults holds;
//   - cpu-%/call: Parley's CPU time over the window, in % of one core; and
//     peer-cpu-%/call, the phone and pion client of one call in the other
//     process, for comparison;
//   - pkt/s: packets Parley's legs took in over the window (100 per call:
//     50 from the phone, 50 from the client), loss-% (phone → client →
//     phone, packets of the window that did not come back) and the round
//     trip's p50 and p99 (two passes through Parley and the client's echo).
//
// With PARLEY_BENCH_PROFILES set to a directory, it writes there the
// profile of the live heap with every call up. Run it in a network
// namespace of its own, as root:
//
//	unshare -n sh -c 'ip link set lo up; exec go test ./media -run "^$" -bench WebRTC -benchtime 1x -count 1 -timeout 10m'
func BenchmarkWebRTCCalls(b *testing.B) {
	sizes := []int{1, 10, 100, 200}
	if s := os.Getenv("PARLEY_BENCH_CALLS"); s != "" {
		sizes = nil
		for f := range strings.SplitSeq(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 5000 {
				b.Fatalf("PARLEY_BENCH_CALLS=%q: want numbers of calls from 1 to 5000, comma-separated", s)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("calls=%d", n), func(b *testing.B) { benchWebRTCCalls(b, n) })
	}
}

// benchPeerEnv, when set, makes the test binary a bench peer (TestMain).
const benchPeerEnv = "PARLEY_WEBRTC_BENCH_PEER"

func TestMain(m *testing.M) {
	if os.Getenv(benchPeerEnv) != "" {
		runBenchPeer(os.Stdin, os.Stdout)
		return
	}
	m.Run()
}

// peerMsg is one line between the benchmark and its peer process, JSON.
// To the peer: "call" (Call, Leg: the plain leg's address, SDP: the WebRTC
// leg's offer), "start" (Seconds of window). From the peer: "answer" (SDP:
// the client's answer, Phone: where the phone receives), "window" (the
// window begins), "end" (it ended), "stats", "error".
type peerMsg struct {
	Op      string     `json:"op"`
	Call    int        `json:"call,omitempty"`
	Leg     string     `json:"leg,omitempty"`
	SDP     string     `json:"sdp,omitempty"`
	Phone   string     `json:"phone,omitempty"`
	Seconds float64    `json:"seconds,omitempty"`
	Error   string     `json:"error,omitempty"`
	Stats   *peerStats `json:"stats,omitempty"`
}

// peerStats counts the packets the phones sent in the window, those the
// clients received and those back at the phones.
type peerStats struct {
	Sent, ClientGot, PhoneGot int64
	RTTp50, RTTp99            time.Duration
	CPU, Window               time.Duration
	// Mem is the live heap and stacks the peer's calls hold.
	Mem int64
}

func benchWebRTCCalls(b *testing.B, n int) {
	seconds := 10.0
	if s := os.Getenv("PARLEY_BENCH_SECONDS"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 {
			b.Fatalf("PARLEY_BENCH_SECONDS=%q", s)
		}
		seconds = v
	}
	peer := startBenchPeer(b)
	ports, err := NewPorts(loopback, 42000, 42000+4*n+9)
	if err != nil {
		b.Fatal(err)
	}
	cfg := WebRTCConfig{Ports: ports, Loopback: true, GatherTimeout: 5 * time.Second}
	codecs := event.Media{Codecs: []event.Codec{
		{Name: "PCMU", ClockRate: 8000, PayloadType: 0},
		{Name: "telephone-event", ClockRate: 8000, PayloadType: 101, FMTP: "0-16"},
	}}

	m0 := benchMem()
	plain := make([]*Leg, n)
	for i := range plain {
		if plain[i], err = ports.NewLeg(); err != nil {
			b.Fatal(err)
		}
		defer plain[i].Close()
	}
	m1 := benchMem()
	legs := make([]*WebRTCLeg, n)
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()
	for i := range legs {
		w, err := NewWebRTCLeg(cfg, codecs)
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		legs[i] = w
		offer, err := w.Offer(ctx)
		if err != nil {
			b.Fatal(err)
		}
		ans := peer.ask(b, peerMsg{Op: "call", Call: i, Leg: plain[i].Addr().String(), SDP: offer}, "answer")
		if _, err := w.SetAnswer(ans.SDP); err != nil {
			b.Fatal(err)
		}
		phone, err := netip.ParseAddrPort(ans.Phone)
		if err != nil {
			b.Fatal(err)
		}
		plain[i].SetRemote(phone, false)
		Connect(plain[i], w)
	}

	var parleyCPU, window time.Duration
	var packets uint64
	var st peerStats
	for range b.N {
		peer.send(b, peerMsg{Op: "start", Seconds: seconds})
		peer.expect(b, "window")
		in0, c0, t0 := packetsIn(plain, legs), cpuTime(), time.Now()
		peer.expect(b, "end")
		in1, c1, t1 := packetsIn(plain, legs), cpuTime(), time.Now()
		s := *peer.expect(b, "stats").Stats
		packets += in1 - in0
		parleyCPU += c1 - c0
		window += t1.Sub(t0)
		st.Sent += s.Sent
		st.ClientGot += s.ClientGot
		st.PhoneGot += s.PhoneGot
		st.CPU += s.CPU
		st.Window += s.Window
		st.RTTp50, st.RTTp99 = max(st.RTTp50, s.RTTp50), max(st.RTTp99, s.RTTp99)
		st.Mem = max(st.Mem, s.Mem)
	}
	m2 := benchMem()
	if dir := os.Getenv("PARLEY_BENCH_PROFILES"); dir != "" {
		writeHeapProfile(b, filepath.Join(dir, fmt.Sprintf("webrtc-calls-%d.heap.pprof", n)))
	}
	for _, w := range legs {
		select {
		case <-w.Failed():
			b.Fatalf("a WebRTC leg failed: %v", w.FailErr())
		default:
		}
	}
	if st.Sent == 0 || st.PhoneGot == 0 {
		b.Fatalf("no media: phones sent %d in the window, got %d back", st.Sent, st.PhoneGot)
	}
	if want := 50 * float64(n) * st.Window.Seconds(); float64(st.Sent) < 0.95*want {
		b.Logf("the phones sent %d packets of %.0f: the machine is too busy for %d calls, the figures are not at 50 packets/s", st.Sent, want, n)
	}

	perLeg := func(a, z benchMemStats) (heap, stack, goroutines float64) {
		return float64(z.heap-a.heap) / float64(n) / 1024, float64(z.stack-a.stack) / float64(n) / 1024,
			float64(z.goroutines-a.goroutines) / float64(n)
	}
	wHeap, wStack, wG := perLeg(m1, m2)
	pHeap, pStack, _ := perLeg(m0, m1)
	cpuPct := func(cpu, win time.Duration) float64 { return 100 * cpu.Seconds() / win.Seconds() / float64(n) }
	pkts := float64(packets) / window.Seconds()
	loss := 100 * (1 - float64(st.PhoneGot)/float64(st.Sent))
	b.ReportMetric(wHeap+wStack, "webrtc-KiB/leg")
	b.ReportMetric(wHeap, "webrtc-heap-KiB/leg")
	b.ReportMetric(wStack, "webrtc-stack-KiB/leg")
	b.ReportMetric(wG, "goroutines/leg")
	b.ReportMetric(pHeap+pStack, "plain-KiB/leg")
	b.ReportMetric(float64(m2.rss-m0.rss)/float64(n)/1024, "RSS-KiB/call")
	b.ReportMetric(float64(st.Mem)/float64(n)/1024, "peer-KiB/call")
	b.ReportMetric(cpuPct(parleyCPU, window), "cpu-%/call")
	b.ReportMetric(cpuPct(st.CPU, st.Window), "peer-cpu-%/call")
	b.ReportMetric(pkts, "pkt/s")
	b.ReportMetric(loss, "loss-%")
	b.ReportMetric(float64(st.RTTp50.Microseconds())/1000, "rtt-p50-ms")
	b.ReportMetric(float64(st.RTTp99.Microseconds())/1000, "rtt-p99-ms")
	b.Logf("%d calls, %.1f s of media: phones sent %d, clients got %d, phones got %d back; Parley took in %.0f pkt/s "+
		"with %.2f%% of a core per call (the phones and clients: %.2f%%); per WebRTC leg %.1f KiB heap + %.1f KiB stacks "+
		"(%.1f goroutines), per plain leg %.1f KiB; RSS %+.1f MiB; per phone and client %.1f KiB",
		n, window.Seconds(), st.Sent, st.ClientGot, st.PhoneGot, pkts, cpuPct(parleyCPU, window), cpuPct(st.CPU, st.Window),
		wHeap, wStack, wG, pHeap+pStack, float64(m2.rss-m0.rss)/(1<<20), float64(st.Mem)/float64(n)/1024)
}

// writeHeapProfile writes the live heap's profile to name: where a leg's
// memory goes (go tool pprof -sample_index=inuse_space).
func writeHeapProfile(b *testing.B, name string) {
	f, err := os.Create(name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

func packetsIn(plain []*Leg, legs []*WebRTCLeg) uint64 {
	var sum uint64
	for i := range plain {
		sum += plain[i].Stats().PacketsIn + legs[i].Stats().PacketsIn
	}
	return sum
}

type benchMemStats struct {
	heap, stack, rss int64
	goroutines       int
}

// benchMem returns the live heap and stacks after a forced collection, and
// the resident memory once freed memory went back to the system.
func benchMem() benchMemStats {
	time.Sleep(100 * time.Millisecond) // let goroutines that are ending end
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return benchMemStats{heap: int64(ms.HeapAlloc), stack: int64(ms.StackInuse), rss: selfRSS(), goroutines: runtime.NumGoroutine()}
}

// selfRSS returns the process's resident memory.
func selfRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// cpuTime returns the CPU time (user and system) the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchPeer is the benchmark's side of the peer process.
type benchPeer struct {
	enc *json.Encoder
	dec *json.Decoder
}

func startBenchPeer(b *testing.B) *benchPeer {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), benchPeerEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the peer hangs up its calls and ends
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				b.Errorf("bench peer: %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			b.Error("bench peer did not end")
		}
	})
	return &benchPeer{enc: json.NewEncoder(stdin), dec: json.NewDecoder(bufio.NewReader(stdout))}
}

func (p *benchPeer) send(b *testing.B, m peerMsg) {
	b.Helper()
	if err := p.enc.Encode(m); err != nil {
		b.Fatalf("to bench peer: %v", err)
	}
}

func (p *benchPeer) expect(b *testing.B, op string) peerMsg {
	b.Helper()
	var m peerMsg
	if err := p.dec.Decode(&m); err != nil {
		b.Fatalf("from bench peer: %v", err)
	}
	if m.Op == "error" {
		b.Fatalf("bench peer: %s", m.Error)
	}
	if m.Op != op || op == "stats" && m.Stats == nil {
		b.Fatalf("bench peer said %q, want %q", m.Op, op)
	}
	return m
}

func (p *benchPeer) ask(b *testing.B, m peerMsg, op string) peerMsg {
	b.Helper()
	p.send(b, m)
	return p.expect(b, op)
}

// The peer process: the phones (one UDP socket for all) and the Matrix
// clients (a pion PeerConnection per call, echoing what it receives).

// Payload marks: the send time (8 bytes), the window flag, the call.
const (
	markTime   = 0
	markWindow = 8
	markCall   = 9
)

type peerCall struct {
	leg       netip.AddrPort // the plain leg the phone sends to
	pc        *webrtc.PeerConnection
	track     *webrtc.TrackLocalStaticRTP
	seq       uint16
	echoed    atomic.Bool // the phone got a packet back
	clientGot atomic.Int64
}

type peerProc struct {
	phone  *net.UDPConn
	mu     sync.Mutex // guards calls' growth and rtts
	calls  []*peerCall
	window atomic.Bool
	sent   atomic.Int64
	got    atomic.Int64
	rtts   []time.Duration
	mem0   benchMemStats // before the first call
}

func runBenchPeer(in io.Reader, out io.Writer) {
	enc := json.NewEncoder(out)
	if err := benchPeerLoop(json.NewDecoder(bufio.NewReader(in)), enc); err != nil {
		_ = enc.Encode(peerMsg{Op: "error", Error: err.Error()})
	}
}

func benchPeerLoop(dec *json.Decoder, enc *json.Encoder) error {
	phone, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	_ = phone.SetReadBuffer(8 << 20)
	_ = phone.SetWriteBuffer(8 << 20)
	p := &peerProc{phone: phone, mem0: benchMem()}
	defer func() {
		for _, c := range p.calls {
			_ = c.pc.Close()
		}
		phone.Close()
	}()
	go p.receive()
	for {
		var m peerMsg
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var reply []peerMsg
		switch m.Op {
		case "call":
			answer, err := p.call(m)
			if err != nil {
				return fmt.Errorf("call %d: %w", m.Call, err)
			}
			reply = []peerMsg{{Op: "answer", Call: m.Call, SDP: answer, Phone: phone.LocalAddr().String()}}
		case "start":
			if err := p.run(enc, time.Duration(m.Seconds*float64(time.Second))); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown op %q", m.Op)
		}
		for _, r := range reply {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
	}
}

// call makes the client of one call and answers the WebRTC leg's offer.
func (p *peerProc) call(m peerMsg) (string, error) {
	leg, err := netip.ParseAddrPort(m.Leg)
	if err != nil {
		return "", err
	}
	pcmu := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: pcmu, PayloadType: 0}, webrtc.RTPCodecTypeAudio); err != nil {
		return "", err
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		return "", err
	}
	se := webrtc.SettingEngine{LoggerFactory: quietLogger{}}
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", err
	}
	c := &peerCall{leg: leg, pc: pc}
	p.mu.Lock()
	p.calls = append(p.calls, c)
	p.mu.Unlock()
	if c.track, err = webrtc.NewTrackLocalStaticRTP(pcmu, "audio", "client"); err != nil {
		return "", err
	}
	sender, err := pc.AddTrack(c.track)
	if err != nil {
		return "", err
	}
	go func() { // RTCP, read for the interceptors
		buf := make([]byte, maxPacket)
		for {
			if _, _, err := sender.Read(buf); err != nil {
				return
			}
		}
	}()
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { go c.echo(tr) })
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: m.SDP}); err != nil {
		return "", err
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-time.After(5 * time.Second):
		return "", errors.New("client gathering timed out")
	}
	return pc.LocalDescription().SDP, nil
}

// echo sends back every packet the client receives.
func (c *peerCall) echo(tr *webrtc.TrackRemote) {
	for {
		pkt, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		if len(pkt.Payload) > markCall && pkt.Payload[markWindow] == 1 {
			c.clientGot.Add(1)
		}
		if err := c.track.WriteRTP(pkt); err != nil {
			return
		}
	}
}

// receive is the phones' receiver: it counts the packets of the window that
// came back, and their round trip.
func (p *peerProc) receive() {
	buf := make([]byte, maxPacket)
	var h rtp.Header
	for {
		n, err := p.phone.Read(buf)
		if err != nil {
			return
		}
		off, err := h.Unmarshal(buf[:n])
		if err != nil || n-off <= markCall+1 {
			continue
		}
		pl := buf[off:n]
		rtt := time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(pl[markTime:])))
		p.mu.Lock()
		if i := int(binary.BigEndian.Uint16(pl[markCall:])); i < len(p.calls) {
			p.calls[i].echoed.Store(true)
		}
		if pl[markWindow] == 1 {
			p.got.Add(1)
			p.rtts = append(p.rtts, rtt)
		}
		p.mu.Unlock()
	}
}

// run sends media from every phone until every call echoes, then for a
// window of d, and reports.
func (p *peerProc) run(enc *json.Encoder, d time.Duration) error {
	p.sent.Store(0)
	p.got.Store(0)
	p.mu.Lock()
	p.rtts = p.rtts[:0]
	p.mu.Unlock()
	for _, c := range p.calls {
		c.clientGot.Store(0)
	}
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go p.send(stop, stopped)
	defer func() {
		close(stop)
		<-stopped
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !p.allEchoed() {
		if time.Now().After(deadline) {
			return errors.New("not every call echoes after 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // settle
	if err := enc.Encode(peerMsg{Op: "window"}); err != nil {
		return err
	}
	c0, t0 := cpuTime(), time.Now()
	p.window.Store(true)
	time.Sleep(d)
	p.window.Store(false)
	c1, t1 := cpuTime(), time.Now()
	if err := enc.Encode(peerMsg{Op: "end"}); err != nil {
		return err
	}
	time.Sleep(time.Second) // what is on its way arrives
	st := &peerStats{Sent: p.sent.Load(), PhoneGot: p.got.Load(), CPU: c1 - c0, Window: t1.Sub(t0)}
	for _, c := range p.calls {
		st.ClientGot += c.clientGot.Load()
	}
	p.mu.Lock()
	slices.Sort(p.rtts)
	if len(p.rtts) > 0 {
		st.RTTp50 = p.rtts[len(p.rtts)/2]
		st.RTTp99 = p.rtts[len(p.rtts)*99/100]
	}
	p.rtts = nil
	p.mu.Unlock()
	m := benchMem()
	st.Mem = m.heap + m.stack - p.mem0.heap - p.mem0.stack
	return enc.Encode(peerMsg{Op: "stats", Stats: st})
}

func (p *peerProc) allEchoed() bool {
	for _, c := range p.calls {
		if !c.echoed.Load() {
			return false
		}
	}
	return true
}

// send is the phones' sender: every 20 ms one PCMU packet of 160 bytes to
// each plain leg. When it was not scheduled in time it catches up, by up
// to 100 ms.
func (p *peerProc) send(stop <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	payload := make([]byte, 160)
	for i := range payload {
		payload[i] = 0xff // µ-law silence
	}
	buf := make([]byte, maxPacket)
	const ptime = 20 * time.Millisecond
	tick := time.NewTicker(ptime)
	defer tick.Stop()
	start, ticks := time.Now(), 0
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		due := int(time.Since(start) / ptime)
		ticks = max(ticks, due-5)
		for ; ticks < due; ticks++ {
			p.sendAll(payload, buf)
		}
	}
}

func (p *peerProc) sendAll(payload, buf []byte) {
	for i, c := range p.calls {
		c.seq++
		h := rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: c.seq, Timestamp: uint32(c.seq) * 160, SSRC: 0x10000 + uint32(i)}
		inWindow := p.window.Load()
		binary.BigEndian.PutUint64(payload[markTime:], uint64(time.Now().UnixNano()))
		payload[markWindow] = 0
		if inWindow {
			payload[markWindow] = 1
		}
		binary.BigEndian.PutUint16(payload[markCall:], uint16(i))
		hdr, err := h.MarshalTo(buf)
		if err != nil {
			return
		}
		n := copy(buf[hdr:], payload)
		if _, err := p.phone.WriteToUDPAddrPort(buf[:hdr+n], c.leg); err == nil && inWindow {
			p.sent.Add(1)
		}
	}
}
