package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/peertest"
	"github.com/parleygw/parley/internal/ratelimit"
	"github.com/parleygw/parley/media"
)

// fakeCallHost is a bridges.CallHost: a fakeHost that also takes calls.
// How it takes them is its mode: it answers at once with an echo endpoint,
// rings and waits, or refuses with err.
type fakeCallHost struct {
	*fakeHost
	a    *Adapter
	mode string // "answer", "ring", "early" (183 with SDP, no answer) or "refuse"
	// supported are the codecs the callee answers with (AnswerCodecs);
	// media.Forwardable when nil.
	supported []event.Codec

	// update answers Update; when nil, Update refuses as a network that
	// cannot change codec.
	update func(*event.CallUpdate) (event.Media, error)

	mu     sync.Mutex
	err    error // Call's error in mode "refuse"
	echoes []*echoEndpoint
	calls  chan *event.CallInvite
	events chan event.Event
}

var _ bridges.CallHost = (*fakeCallHost)(nil)

func (h *fakeCallHost) Update(_ context.Context, upd *event.CallUpdate) (event.Media, error) {
	h.events <- upd
	if h.update == nil {
		return event.Media{}, bridges.ErrUpdateRefused
	}
	return h.update(upd)
}

func newFakeCallHost(mode string) *fakeCallHost {
	return &fakeCallHost{fakeHost: newFakeHost(), mode: mode,
		calls: make(chan *event.CallInvite, 10), events: make(chan event.Event, 20)}
}

func (h *fakeCallHost) Call(_ context.Context, inv *event.CallInvite, m media.Endpoint) error {
	h.calls <- inv
	if h.mode == "refuse" {
		_ = m.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.err
	}
	echo := &echoEndpoint{leg: m}
	m.SetPeer(echo)
	h.mu.Lock()
	h.echoes = append(h.echoes, echo)
	h.mu.Unlock()
	supported := h.supported
	if supported == nil {
		supported = media.Forwardable
	}
	go func() {
		ctx := context.Background()
		ringing := &event.CallRinging{Call: inv.Call}
		if h.mode == "early" {
			ringing.EarlyMedia = true
			ringing.Media, _ = media.AnswerCodecs(inv.Offer, supported)
		}
		if err := h.a.Signal(ctx, ringing); err != nil {
			panic(err)
		}
		if h.mode != "answer" {
			return
		}
		answer, ok := media.AnswerCodecs(inv.Offer, supported)
		if !ok {
			panic("no answer codec")
		}
		if err := h.a.Signal(ctx, &event.CallAnswer{Call: inv.Call, Answer: answer}); err != nil {
			panic(err)
		}
	}()
	return nil
}

func (h *fakeCallHost) CallEvent(_ context.Context, evt event.Event) error {
	h.events <- evt
	return nil
}

func (h *fakeCallHost) waitEvent(t *testing.T) event.Event {
	t.Helper()
	select {
	case evt := <-h.events:
		return evt
	case <-time.After(15 * time.Second):
		t.Fatal("no call event")
		return nil
	}
}

func (h *fakeCallHost) echoed() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n uint64
	for _, e := range h.echoes {
		n += e.n.Load()
	}
	return n
}

// echoEndpoint sends what its leg's party sends back to it, and counts the
// RTP packets.
type echoEndpoint struct {
	leg media.Endpoint
	n   atomic.Uint64
}

func (e *echoEndpoint) SetPeer(media.Endpoint) {}
func (e *echoEndpoint) WriteRTP(p []byte) error {
	e.n.Add(1)
	return e.leg.WriteRTP(p)
}
func (e *echoEndpoint) WriteRTCP(p []byte) error { return e.leg.WriteRTCP(p) }
func (e *echoEndpoint) LastPacket() time.Time    { return time.Now() }
func (e *echoEndpoint) Stats() media.Stats       { return media.Stats{} }
func (e *echoEndpoint) Close() error             { return nil }

// startCallAdapter starts an adapter with media ports on loopback and the
// host h; setup runs before Start.
func startCallAdapter(t *testing.T, h *fakeCallHost, edit func(*Config), setup ...func(*Adapter)) *testAdapter {
	t.Helper()
	cfg := testConfig()
	ports, err := media.NewPorts(netip.MustParseAddr("127.0.0.1"), 20000, 20999)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := New(cfg, WithLogger(testLogger(t)), WithCalls(ports))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.a = a
	a.sendTimeout = 5 * time.Second
	for _, f := range setup {
		f(a)
	}
	if err := a.Start(context.Background(), h); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	h.waitState(t, bridges.Connected)
	ta := &testAdapter{Adapter: a, host: h.fakeHost}
	for _, s := range a.Addrs() {
		network, addr, _ := strings.Cut(s, ":")
		switch network {
		case "udp":
			ta.udp = addr
		case "tcp":
			ta.tcp = addr
		}
	}
	return ta
}

const testOffer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"

func newInvite(addr, from, to, sdp string) *sip.Request {
	req := newRequest(sip.INVITE, "UDP", addr, to, from, to)
	req.AppendHeader(sip.NewHeader("Contact", "<sip:phone@127.0.0.1:5999>"))
	if sdp != "" {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody([]byte(sdp))
	}
	return req
}

// TestInviteRefusals: what an INVITE gets before the core sees it.
func TestInviteRefusals(t *testing.T) {
	h := newFakeCallHost("refuse")
	a := startCallAdapter(t, h, func(c *Config) {
		c.TrustedPeers = append(c.TrustedPeers, TrustedPeer{Name: "lo", Addresses: []string{"127.0.0.1"}, Domains: []string{"pbx.example.org"}})
	})
	p := newPeerUA(t)
	alice, bob := "sip:alice@"+testDomain, "sip:bob@"+testDomain
	peerUser := "sip:100@pbx.example.org"
	tests := []struct {
		name     string
		req      *sip.Request
		status   int
		contains string // in the reason phrase or Warning
	}{
		{"toll fraud: unauthenticated, to another domain", newInvite(a.udp, alice, "sip:+441234567@carrier.example.net", testOffer), 403, "Other Domains"},
		{"unauthenticated user of the domain is challenged", newInvite(a.udp, alice, bob, testOffer), 407, ""},
		{"malformed SDP", newInvite(a.udp, peerUser, bob, "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"), 400, "m=audio line 5: no connection address"},
		{"only G.729", newInvite(a.udp, peerUser, bob, strings.Replace(testOffer, "RTP/AVP 0 101", "RTP/AVP 18", 1)), 488, "no offered audio codec"},
		{"SRTP only", newInvite(a.udp, peerUser, bob, strings.Replace(testOffer, "RTP/AVP", "RTP/SAVP", 1)), 488, "RTP/SAVP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := p.do(tt.req)
			if res.StatusCode != tt.status {
				t.Fatalf("%d %s, want %d", res.StatusCode, res.Reason, tt.status)
			}
			got := res.Reason
			if w := res.GetHeader("Warning"); w != nil {
				got += " " + w.Value()
			}
			if !strings.Contains(got, tt.contains) {
				t.Errorf("%q, want it to say %q", got, tt.contains)
			}
		})
	}
	select {
	case inv := <-h.calls:
		t.Errorf("the core got %+v", inv)
	default:
	}

	// The core's refusals.
	for _, tt := range []struct {
		err    error
		status int
	}{
		{fmt.Errorf("route: %w", bridges.ErrNoRoute), 404},
		{bridges.ErrRefused, 403},
		{bridges.ErrCallLimit, 486},
		{errors.New("boom"), 503},
	} {
		h.mu.Lock()
		h.err = tt.err
		h.mu.Unlock()
		res := p.do(newInvite(a.udp, peerUser, bob, testOffer))
		if res.StatusCode != tt.status {
			t.Errorf("core says %v: %d %s, want %d", tt.err, res.StatusCode, res.Reason, tt.status)
		}
		inv := <-h.calls
		if inv.From.ID != peerUser || inv.To.ID != bob || len(inv.Offer.Codecs) != 2 || inv.Call == "" {
			t.Errorf("the core got %+v", inv)
		}
	}
}

// TestInviteWithoutMedia: without WithCalls an INVITE is refused with 503.
func TestInviteWithoutMedia(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, func(c *Config) {
		c.TrustedPeers = append(c.TrustedPeers, TrustedPeer{Name: "lo", Addresses: []string{"127.0.0.1"}, Domains: []string{"pbx.example.org"}})
	}, func(a *Adapter) { a.newLeg = nil }) // as New without WithCalls
	res := newPeerUA(t).do(newInvite(a.udp, "sip:100@pbx.example.org", "sip:bob@"+testDomain, testOffer))
	if res.StatusCode != 503 || !strings.Contains(res.Reason, "Not Configured") {
		t.Errorf("%d %s, want 503 Calls Not Configured", res.StatusCode, res.Reason)
	}
}

func TestParseReason(t *testing.T) {
	for _, tt := range []struct {
		value string
		want  event.HangupReason
		ok    bool
	}{
		{`Q.850;cause=16;text="Normal call clearing"`, event.HangupNormal, true},
		{`SIP;cause=200;text="Call completed elsewhere"`, event.HangupAnsweredElsewhere, true},
		{`SIP ; cause = 486`, event.HangupBusy, true},
		{`Q.850;cause=9999`, 0, false},
		{`preemption;cause=1`, 0, false},
		{`SIP;text="x", Q.850;cause=17`, event.HangupBusy, true},
	} {
		req := sip.NewRequest(sip.BYE, sip.Uri{Scheme: "sip", Host: "x"})
		req.AppendHeader(sip.NewHeader("Reason", tt.value))
		got, ok := parseReason(req)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: %v %v, want %v %v", tt.value, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSessionExpires(t *testing.T) {
	for _, tt := range []struct {
		value string
		want  time.Duration
		uas   bool
	}{
		{"1800;refresher=uac", 1800 * time.Second, false},
		{"600;refresher=uas", 600 * time.Second, true},
		{"30", minSessionExpires * time.Second, false},
		{"x", 0, false},
	} {
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", Host: "x"})
		req.AppendHeader(sip.NewHeader("Session-Expires", tt.value))
		got, uas := sessionExpires(req)
		if got != tt.want || uas != tt.uas {
			t.Errorf("%s: %v %v, want %v %v", tt.value, got, uas, tt.want, tt.uas)
		}
	}
}

// TestSippCall: sipp calls bob through Parley as alice (digest), gets
// 100/180/200, ACKs, plays 236 G.711a packets to the leg of Parley's answer
// and hangs up with BYE; the fake core's echo endpoint counts the packets
// and the BYE's Reason reaches the core.
func TestSippCall(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, nil)
	sipp(t, "call.xml", a.udp, peertest.FreePort(t),
		"-s", "alice", "-au", "alice", "-ap", alicePassword,
		"-set", "domain", testDomain, "-set", "to", "sip:bob@"+testDomain)
	inv := <-h.calls
	if inv.From.ID != "sip:alice@"+testDomain || inv.To.ID != "sip:bob@"+testDomain || inv.FromName != "SIPp Phone" {
		t.Errorf("the core got %+v", inv)
	}
	if len(inv.Offer.Codecs) != 2 || inv.Offer.Codecs[0].Name != "PCMA" {
		t.Errorf("offer %v", inv.Offer.Codecs)
	}
	hang, ok := h.waitEvent(t).(*event.CallHangup)
	if !ok || hang.Reason != event.HangupNormal || hang.Call != inv.Call {
		t.Errorf("event %#v, want a normal hangup of %s", hang, inv.Call)
	}
	if n := h.echoed(); n < 230 {
		t.Errorf("the echo endpoint got %d RTP packets, want about 236; leg %+v", n, h.echoes[0].leg.Stats())
	}
	if a.calls.get(inv.Call) != nil {
		t.Error("the leg is still in the table")
	}
	if _, ok := h.links.Value(callKeyPrefix + inv.Call); ok {
		t.Error("the leg's record is still in the links")
	}
}

// TestSippLateOffer: sipp calls bob through Parley as alice with a late
// offer (an INVITE without SDP): the core is offered every codec Parley
// forwards and its callee answers G.711a; sipp gets 100/180 and a 200 whose
// SDP offers G.711a and telephone-event, ACKs with its answer, plays 236
// G.711a packets to the address of Parley's offer and hangs up with BYE;
// the fake core's echo endpoint counts the packets.
func TestSippLateOffer(t *testing.T) {
	h := newFakeCallHost("answer")
	h.supported = pcmaCallee
	a := startCallAdapter(t, h, nil)
	sipp(t, "late_offer.xml", a.udp, peertest.FreePort(t),
		"-s", "alice", "-au", "alice", "-ap", alicePassword,
		"-set", "domain", testDomain, "-set", "to", "sip:bob@"+testDomain)
	inv := <-h.calls
	if inv.From.ID != "sip:alice@"+testDomain || inv.To.ID != "sip:bob@"+testDomain || len(inv.Offer.Codecs) != len(media.Forwardable) {
		t.Errorf("the core got %+v", inv)
	}
	hang, ok := h.waitEvent(t).(*event.CallHangup)
	if !ok || hang.Reason != event.HangupNormal || hang.Call != inv.Call {
		t.Errorf("event %#v, want a normal hangup of %s", hang, inv.Call)
	}
	if n := h.echoed(); n < 230 {
		t.Errorf("the echo endpoint got %d RTP packets, want about 236; leg %+v", n, h.echoes[0].leg.Stats())
	}
	if a.calls.get(inv.Call) != nil {
		t.Error("the leg is still in the table")
	}
}

// TestSippCancel: sipp gives up while Parley's callee rings: CANCEL, 200,
// 487, and the core hears of a cancelled leg.
func TestSippCancel(t *testing.T) {
	h := newFakeCallHost("ring")
	a := startCallAdapter(t, h, nil)
	sipp(t, "cancel.xml", a.udp, peertest.FreePort(t),
		"-s", "alice", "-au", "alice", "-ap", alicePassword,
		"-set", "domain", testDomain, "-set", "to", "sip:bob@"+testDomain)
	inv := <-h.calls
	hang, ok := h.waitEvent(t).(*event.CallHangup)
	if !ok || hang.Reason != event.HangupCancelled || hang.Call != inv.Call {
		t.Errorf("event %#v, want a cancelled hangup of %s", hang, inv.Call)
	}
}

// TestSippRefusedCalls: 403 for a call to another domain without
// credentials (toll fraud), 400 for SDP without c=, 488 for G.729 only.
func TestSippRefusedCalls(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, func(c *Config) {
		c.TrustedPeers = append(c.TrustedPeers, TrustedPeer{Name: "lo", Addresses: []string{"127.0.0.1"}, Domains: []string{"pbx.example.org"}})
	})
	sipp(t, "toll_fraud.xml", a.udp, peertest.FreePort(t),
		"-s", "alice", "-set", "domain", testDomain, "-set", "to", "sip:+441234567@carrier.example.net")
	sipp(t, "bad_sdp.xml", a.udp, peertest.FreePort(t),
		"-s", "100", "-set", "domain", "pbx.example.org", "-set", "to", "sip:bob@"+testDomain)
	sipp(t, "no_codec.xml", a.udp, peertest.FreePort(t),
		"-s", "100", "-set", "domain", "pbx.example.org", "-set", "to", "sip:bob@"+testDomain)
	select {
	case inv := <-h.calls:
		t.Errorf("the core got %+v", inv)
	default:
	}
}

// TestSippInviteForks: Parley calls bob, registered with two contacts, both
// sipp phones. Both ring; one answers and plays G.711a to the leg Invite
// returned (the fake core echoes it), the other is CANCELled with Reason
// SIP;cause=200. The core hears ringing and the answer; its hangup becomes
// a BYE with Reason Q.850;cause=16.
func TestSippInviteForks(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, nil)
	pAnswer, pRing := peertest.FreePort(t), peertest.FreePort(t)
	register(t, newPeerUA(t), "UDP", a.udp, "bob", bobPassword,
		fmt.Sprintf("<sip:bob@127.0.0.1:%d>, <sip:bob@127.0.0.1:%d>", pAnswer, pRing))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sipp(t, "uas_answer.xml", "", pAnswer) }()
	go func() { defer wg.Done(); sipp(t, "uas_ring.xml", "", pRing) }()
	time.Sleep(500 * time.Millisecond) // sipp binds its ports

	ghostAddr := event.Address{Network: event.SIP, ID: ghost}
	bob := event.Address{Network: event.SIP, ID: "sip:bob@" + testDomain}
	m, err := a.Invite(context.Background(), &event.CallInvite{
		Header: event.Header{ID: "call-1", From: ghostAddr, To: bob, FromName: "Alice"},
		Call:   "leg-1",
		Offer: event.Media{Codecs: []event.Codec{
			{Name: "PCMA", ClockRate: 8000, PayloadType: 8},
			{Name: "telephone-event", ClockRate: 8000, PayloadType: 101},
		}},
	})
	if err != nil {
		t.Fatalf("Invite: %v", err)
	}
	echo := &echoEndpoint{leg: m}
	m.SetPeer(echo)
	if r, ok := h.waitEvent(t).(*event.CallRinging); !ok || r.Call != "leg-1" {
		t.Errorf("first event %#v, want ringing", r)
	}
	ans, ok := h.waitEvent(t).(*event.CallAnswer)
	if !ok || ans.Call != "leg-1" || len(ans.Answer.Codecs) != 1 || ans.Answer.Codecs[0].Name != "PCMA" {
		t.Fatalf("event %#v, want the answer with PCMA", ans)
	}
	time.Sleep(7500 * time.Millisecond) // the pcap lasts 7 s
	if n := echo.n.Load(); n < 230 {
		t.Errorf("the leg forwarded %d RTP packets, want about 236; %+v", n, m.Stats())
	}
	if err := a.Signal(context.Background(), &event.CallHangup{Call: "leg-1", Reason: event.HangupNormal}); err != nil {
		t.Errorf("Signal hangup: %v", err)
	}
	wg.Wait()
	_ = m.Close()
	if a.calls.get("leg-1") != nil {
		t.Error("the leg is still in the table")
	}
}

// TestInviteUnavailable: a user of the domain without a registered contact
// cannot be called: a permanent error.
func TestInviteUnavailable(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, nil)
	_, err := a.Invite(context.Background(), &event.CallInvite{
		Header: event.Header{From: event.Address{Network: event.SIP, ID: ghost}, To: event.Address{Network: event.SIP, ID: "sip:bob@" + testDomain}},
		Call:   "leg-2",
		Offer:  event.Media{Codecs: []event.Codec{{Name: "PCMU", ClockRate: 8000}}},
	})
	if !bridges.IsPermanent(err) || !errors.Is(err, errUnavailable) {
		t.Errorf("Invite: %v, want a permanent error, unavailable", err)
	}
}

// TestReinviteHoldAndSessionTimer: a trusted peer's call with a session
// timer is answered with Session-Expires; a re-INVITE to sendonly from a
// new port is answered recvonly and moves the leg's remote address there;
// a session that lapses ends with a hangup reported to the core.
func TestReinviteHoldAndSessionTimer(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, func(c *Config) {
		c.TrustedPeers = append(c.TrustedPeers, TrustedPeer{Name: "lo", Addresses: []string{"127.0.0.1"}, Domains: []string{"pbx.example.org"}})
	})
	p := newPeerUA(t)
	inv := newInvite(a.udp, "sip:100@pbx.example.org", "sip:bob@"+testDomain, testOffer)
	inv.AppendHeader(sip.NewHeader("Supported", "timer"))
	inv.AppendHeader(sip.NewHeader("Session-Expires", "1800;refresher=uac"))
	res := p.do(inv)
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d %s", res.StatusCode, res.Reason)
	}
	if se := res.GetHeader("Session-Expires"); se == nil || se.Value() != "1800;refresher=uac" {
		t.Errorf("Session-Expires %v, want 1800;refresher=uac", se)
	}
	answer, err := media.ParseSDP(res.Body())
	if err != nil || answer.Direction != media.SendRecv || answer.Media.Codecs[0].Name != "PCMU" {
		t.Fatalf("answer %+v, %v", answer, err)
	}
	callID := inv.CallID().Value()
	inDialog := func(method sip.RequestMethod, cseq uint32, sdp string) *sip.Request {
		req := sip.NewRequest(method, res.Contact().Address)
		req.AppendHeader(sip.HeaderClone(inv.From()))
		req.AppendHeader(sip.HeaderClone(res.To()))
		cid := sip.CallIDHeader(callID)
		req.AppendHeader(&cid)
		req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
		req.AppendHeader(sip.NewHeader("Contact", "<sip:phone@127.0.0.1:5999>"))
		if sdp != "" {
			req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			req.SetBody([]byte(sdp))
		}
		req.SetTransport("UDP")
		req.SetDestination(a.udp)
		return req
	}
	if err := p.client.WriteRequest(inDialog(sip.ACK, 1, "")); err != nil {
		t.Fatal(err)
	}

	// Hold from a new port.
	rtp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rtp.Close()
	port := rtp.LocalAddr().(*net.UDPAddr).Port
	hold := strings.Replace(testOffer, "m=audio 16000", "m=audio "+strconv.Itoa(port), 1) + "a=sendonly\r\n"
	res = p.do(inDialog(sip.INVITE, 2, hold))
	if res.StatusCode != 200 {
		t.Fatalf("re-INVITE: %d %s", res.StatusCode, res.Reason)
	}
	again, err := media.ParseSDP(res.Body())
	if err != nil || again.Direction != media.RecvOnly || again.Addr != answer.Addr || again.Version <= answer.Version {
		t.Errorf("re-INVITE answer %+v, %v; want recvonly at %s, a newer version", again, err, answer.Addr)
	}
	if err := p.client.WriteRequest(inDialog(sip.ACK, 2, "")); err != nil {
		t.Fatal(err)
	}
	// RTP from the new port passes the leg and comes back there.
	pkt := []byte{0x80, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7, 0xd5, 0xd5}
	if _, err := rtp.WriteToUDPAddrPort(pkt, answer.Addr); err != nil {
		t.Fatal(err)
	}
	_ = rtp.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	if n, _, err := rtp.ReadFromUDPAddrPort(buf); err != nil || n != len(pkt) {
		t.Errorf("no echo at the new address: %d bytes, %v", n, err)
	}

	// The session lapses.
	c := a.calls.byDialog(callID)
	if c == nil {
		t.Fatal("no leg")
	}
	if v, ok := h.links.Value(callKeyPrefix + callID); !ok || !strings.Contains(v, `"answered":true`) {
		t.Errorf("the live leg's record: %q", v)
	}
	c.mu.Lock()
	if c.lapse == nil {
		t.Error("no session timer armed")
	}
	c.expires = 30 * time.Millisecond
	a.armLapseLocked(c)
	c.mu.Unlock()
	if hang, ok := h.waitEvent(t).(*event.CallHangup); !ok || hang.Call != callID || hang.Reason != event.HangupFailure {
		t.Errorf("event %#v, want the leg's hangup", hang)
	}
}

// TestLeftoverCallsEnded: a leg recorded by an earlier run (answered, so
// its dialog is known) gets a BYE with a Reason when the adapter starts,
// and its record goes.
func TestLeftoverCallsEnded(t *testing.T) {
	p := newPeerUA(t)
	byes := make(chan *sip.Request, 2)
	p.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		byes <- req
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	p.listenUDP()
	h := newFakeCallHost("answer")
	h.links.Set(callKeyPrefix+"old-leg", `{"call_id":"old-leg@x","local_tag":"lt","remote_tag":"rt",`+
		`"local_uri":"sip:bob@`+testDomain+`","remote_uri":"sip:100@pbx.example.org",`+
		`"target":"sip:100@`+p.addr+`","transport":"UDP","cseq":4,"answered":true}`)
	startCallAdapter(t, h, nil)
	select {
	case bye := <-byes:
		if bye.CallID().Value() != "old-leg@x" || bye.CSeq().SeqNo != 5 || toTagOf(bye) != "rt" {
			t.Errorf("BYE %s", bye)
		}
		if r := bye.GetHeader("Reason"); r == nil || !strings.HasPrefix(r.Value(), "Q.850;cause=41") {
			t.Errorf("Reason %v, want Q.850;cause=41", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no BYE for the leftover leg")
	}
	for range 50 {
		if _, ok := h.links.Value(callKeyPrefix + "old-leg"); !ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Error("the leftover leg's record is still there")
}

// TestOKRetransmittedUntilACK: over UDP, the 2xx of an INVITE is sent
// again until the ACK comes (RFC 3261 §13.3.1.4), and not after it.
func TestOKRetransmittedUntilACK(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, func(c *Config) {
		c.TrustedPeers = append(c.TrustedPeers, TrustedPeer{Name: "lo", Addresses: []string{"127.0.0.1"}, Domains: []string{"pbx.example.org"}})
	})
	conn := dialUDP(t, a.udp)
	local := conn.LocalAddr().String()
	bob := "sip:bob@" + testDomain
	head := func(method, branch, to string, cseq int) []string {
		return []string{method + " " + bob + " SIP/2.0",
			"Via: SIP/2.0/UDP " + local + ";rport;branch=z9hG4bK-" + branch,
			"From: <sip:100@pbx.example.org>;tag=r1",
			"To: " + to,
			"Call-ID: retrans-1",
			"CSeq: " + strconv.Itoa(cseq) + " " + method,
			"Contact: <sip:100@" + local + ">",
			"Max-Forwards: 70"}
	}
	invite := rawSIP(append(head("INVITE", "i1", "<"+bob+">", 1), "Content-Type: application/sdp")...)(testOffer)
	for res := exchange(t, conn, invite); !strings.HasPrefix(res, "SIP/2.0 200 "); res = exchange(t, conn, "") {
		if !strings.HasPrefix(res, "SIP/2.0 1") {
			t.Fatalf("got %q", firstLine(res))
		}
	}
	again := exchange(t, conn, "")
	if !strings.HasPrefix(again, "SIP/2.0 200 ") {
		t.Fatalf("after the 200, got %q; want it again", firstLine(again))
	}
	toHeader := ""
	for _, l := range strings.Split(again, "\r\n") {
		if strings.HasPrefix(l, "To: ") {
			toHeader = strings.TrimPrefix(l, "To: ")
		}
	}
	if !strings.Contains(toHeader, "tag=") {
		t.Fatalf("no To tag in the 200: %q", toHeader)
	}
	if _, err := conn.Write([]byte(rawSIP(head("ACK", "a1", toHeader, 1)...)(""))); err != nil {
		t.Fatal(err)
	}
	// A retransmission may cross the ACK; none comes after it.
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	if _, err := conn.Read(buf); err == nil {
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		if n, err := conn.Read(buf); err == nil {
			t.Fatalf("after the ACK, still %q", firstLine(string(buf[:n])))
		}
	}
	c := a.calls.byDialog("retrans-1")
	if c == nil {
		t.Fatal("no leg")
	}
	c.mu.Lock()
	state := c.state
	c.mu.Unlock()
	if state != callConfirmed {
		t.Errorf("state %d after the ACK, want confirmed", state)
	}
}

// TestInviteRateLimit: an authenticated user's INVITEs beyond the limit of
// their source are answered 503 with Retry-After before the core sees them.
func TestInviteRateLimit(t *testing.T) {
	h := newFakeCallHost("refuse")
	h.err = bridges.ErrNoRoute
	a := startCallAdapter(t, h, nil, func(a *Adapter) {
		a.inviteLimiter = ratelimit.New[netip.Addr](0.01, 1, 10)
	})
	p := newPeerUA(t)
	alice, bob := "sip:alice@"+testDomain, "sip:bob@"+testDomain
	if res := p.doAuth(newInvite(a.udp, alice, bob, testOffer), "alice", alicePassword); res.StatusCode != 404 {
		t.Fatalf("first INVITE: %d %s, want the core's 404", res.StatusCode, res.Reason)
	}
	<-h.calls
	res := p.doAuth(newInvite(a.udp, alice, bob, testOffer), "alice", alicePassword)
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("second INVITE: %d %s, want 503 with Retry-After", res.StatusCode, res.Reason)
	}
	select {
	case inv := <-h.calls:
		t.Errorf("the core got %+v", inv)
	default:
	}
}

// FuzzCallHeaders: the Reason (RFC 3326) and Session-Expires (RFC 4028)
// parsers never panic, and what they return is in range.
func FuzzCallHeaders(f *testing.F) {
	for _, s := range []string{`Q.850;cause=16;text="Normal call clearing"`, `SIP;cause=200;text="Call completed elsewhere"`,
		"1800;refresher=uac", "90;refresher=uas", "SIP ; cause = 486", ";;;", "cause=", "-5", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		req := sip.NewRequest(sip.BYE, sip.Uri{Scheme: "sip", Host: "x"})
		req.AppendHeader(sip.NewHeader("Reason", v))
		req.AppendHeader(sip.NewHeader("Session-Expires", v))
		if r, ok := parseReason(req); ok && !r.Valid() {
			t.Fatalf("reason %d from %q", r, v)
		}
		if d, _ := sessionExpires(req); d != 0 && (d < minSessionExpires*time.Second || d > maxSessionExpires*time.Second) {
			t.Fatalf("session interval %v from %q", d, v)
		}
	})
}

// answeringPhone is a sipgo user agent registered for bob that answers
// every INVITE with 200 at once, and records ACKs and BYEs.
type answeringPhone struct {
	*peerUA
	invites, acks, byes chan *sip.Request
}

func newAnsweringPhone(t *testing.T) *answeringPhone { return newPhoneAnswering(t, nil) }

// newPhoneAnswering returns an answeringPhone that answers each INVITE
// with what answer returns for it, or as newAnsweringPhone's when answer
// is nil.
func newPhoneAnswering(t *testing.T, answer func(p *answeringPhone, req *sip.Request) *sip.Response) *answeringPhone {
	p := &answeringPhone{peerUA: newPeerUA(t), invites: make(chan *sip.Request, 5), acks: make(chan *sip.Request, 5), byes: make(chan *sip.Request, 5)}
	p.srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		p.invites <- req
		if answer != nil {
			_ = tx.Respond(answer(p, req))
			return
		}
		sdp := "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16010 RTP/AVP 8\r\n"
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte(sdp))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.AppendHeader(sip.NewHeader("Contact", "<sip:bob@"+p.addr+">"))
		_ = tx.Respond(res)
	})
	p.srv.OnAck(func(req *sip.Request, _ sip.ServerTransaction) { p.acks <- req })
	p.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		p.byes <- req
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	p.listenUDP()
	return p
}

func waitRequest(t *testing.T, ch chan *sip.Request, what string) *sip.Request {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s", what)
		return nil
	}
}

// TestInviteLateAnswer: both of bob's phones answer at once. The first 2xx
// wins; the other is ACKed and ended with a BYE with Reason SIP;cause=200.
// The core's hangup ends the winner with a BYE.
func TestInviteLateAnswer(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, nil)
	p1, p2 := newAnsweringPhone(t), newAnsweringPhone(t)
	register(t, newPeerUA(t), "UDP", a.udp, "bob", bobPassword, "<sip:bob@"+p1.addr+">, <sip:bob@"+p2.addr+">")
	m, err := a.Invite(context.Background(), &event.CallInvite{
		Header: event.Header{From: event.Address{Network: event.SIP, ID: ghost}, To: event.Address{Network: event.SIP, ID: "sip:bob@" + testDomain}},
		Call:   "leg-late",
		Offer:  event.Media{Codecs: []event.Codec{{Name: "PCMA", ClockRate: 8000, PayloadType: 8}}},
	})
	if err != nil {
		t.Fatalf("Invite: %v", err)
	}
	defer m.Close()
	if ans, ok := h.waitEvent(t).(*event.CallAnswer); !ok || ans.Call != "leg-late" {
		t.Fatalf("event %#v, want the answer", ans)
	}
	waitRequest(t, p1.acks, "ACK at the first phone")
	waitRequest(t, p2.acks, "ACK at the second phone")
	var loser, winner *answeringPhone
	select {
	case bye := <-p1.byes:
		loser, winner = p1, p2
		p1.byes <- bye
	case bye := <-p2.byes:
		loser, winner = p2, p1
		p2.byes <- bye
	case <-time.After(5 * time.Second):
		t.Fatal("no BYE for the late answer")
	}
	bye := waitRequest(t, loser.byes, "BYE")
	if r := bye.GetHeader("Reason"); r == nil || !strings.HasPrefix(r.Value(), "SIP;cause=200") {
		t.Errorf("late answer's BYE has Reason %v, want SIP;cause=200", r)
	}
	if err := a.Signal(context.Background(), &event.CallHangup{Call: "leg-late", Reason: event.HangupNormal}); err != nil {
		t.Fatal(err)
	}
	bye = waitRequest(t, winner.byes, "BYE of the winner")
	if r := bye.GetHeader("Reason"); r == nil || !strings.HasPrefix(r.Value(), "Q.850;cause=16") {
		t.Errorf("winner's BYE has Reason %v, want Q.850;cause=16", r)
	}
}

// TestInviteThroughProxy: a callee outside the domain (a PBX user) is
// called at their AOR through the outbound proxy, as MESSAGE reaches them.
func TestInviteThroughProxy(t *testing.T) {
	proxy := newAnsweringPhone(t)
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, func(c *Config) { c.OutboundProxy = "sip:" + proxy.addr })
	m, err := a.Invite(context.Background(), &event.CallInvite{
		Header: event.Header{From: event.Address{Network: event.SIP, ID: ghost}, To: event.Address{Network: event.SIP, ID: "sip:100@pbx.example.org"}},
		Call:   "leg-pbx",
		Offer:  event.Media{Codecs: []event.Codec{{Name: "PCMU", ClockRate: 8000}}},
	})
	if err != nil {
		t.Fatalf("Invite: %v", err)
	}
	defer m.Close()
	inv := waitRequest(t, proxy.invites, "INVITE at the proxy")
	if inv.Recipient.String() != "sip:100@pbx.example.org" {
		t.Errorf("Request-URI %s, want the AOR", inv.Recipient.String())
	}
	if r := inv.GetHeader("Route"); r == nil || !strings.Contains(r.Value(), proxy.addr) {
		t.Errorf("Route %v, want the proxy", r)
	}
	if ans, ok := h.waitEvent(t).(*event.CallAnswer); !ok || ans.Answer.Codecs[0].Name != "PCMA" {
		t.Errorf("event %#v, want the answer (PCMA, from the phone's SDP)", ans)
	}
}

// TestEarlyMedia: a CallRinging with early media is a 183 with SDP whose
// address is the leg's.
func TestEarlyMedia(t *testing.T) {
	h := newFakeCallHost("early")
	a := startCallAdapter(t, h, func(c *Config) {
		c.TrustedPeers = append(c.TrustedPeers, TrustedPeer{Name: "lo", Addresses: []string{"127.0.0.1"}, Domains: []string{"pbx.example.org"}})
	})
	p := newPeerUA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tx, err := p.client.TransactionRequest(ctx, newInvite(a.udp, "sip:100@pbx.example.org", "sip:bob@"+testDomain, testOffer))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode != 183 {
				continue
			}
			s, err := media.ParseSDP(res.Body())
			if err != nil || !s.Addr.IsValid() || s.Addr.Port() < 20000 || s.Media.Codecs[0].Name != "PCMU" {
				t.Errorf("183 SDP %+v, %v", s, err)
			}
			return
		case <-ctx.Done():
			t.Fatal("no 183")
		}
	}
}

// TestSippInviteGlobalFailure: bob has two phones; one declines (603, a
// global failure, RFC 3261 §16.7): Parley cancels the other at once, with
// the reason, instead of letting it ring, and the core hears the decline.
func TestSippInviteGlobalFailure(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, nil)
	pDecline, pRing := peertest.FreePort(t), peertest.FreePort(t)
	register(t, newPeerUA(t), "UDP", a.udp, "bob", bobPassword,
		fmt.Sprintf("<sip:bob@127.0.0.1:%d>, <sip:bob@127.0.0.1:%d>", pRing, pDecline))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sipp(t, "uas_ring_declined.xml", "", pRing) }()
	time.Sleep(300 * time.Millisecond) // the ringing phone first
	go func() { defer wg.Done(); sipp(t, "uas_decline.xml", "", pDecline) }()
	time.Sleep(500 * time.Millisecond) // sipp binds its ports

	start := time.Now()
	m, err := a.Invite(context.Background(), &event.CallInvite{
		Header: event.Header{ID: "call-g", From: event.Address{Network: event.SIP, ID: ghost}, To: event.Address{Network: event.SIP, ID: "sip:bob@" + testDomain}},
		Call:   "leg-g",
		Offer:  event.Media{Codecs: []event.Codec{{Name: "PCMA", ClockRate: 8000, PayloadType: 8}}},
	})
	if err != nil {
		t.Fatalf("Invite: %v", err)
	}
	defer m.Close()
	var hangup *event.CallHangup
	for hangup == nil {
		switch e := h.waitEvent(t).(type) {
		case *event.CallRinging:
		case *event.CallHangup:
			hangup = e
		default:
			t.Fatalf("event %#v", e)
		}
	}
	if hangup.Reason != event.HangupDeclined {
		t.Errorf("the core heard %s, want declined", hangup.Reason)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the decline took %s: the other phone was left to ring", d)
	}
	wg.Wait() // the ringing phone got its CANCEL with Q.850;cause=21
}

// rawCall is a phone that speaks raw SIP over UDP to the adapter, for the
// tests that need to see each retransmission or to send what no user agent
// library would (an ACK with a body, an ACK with an old CSeq).
type rawCall struct {
	t      *testing.T
	conn   net.Conn
	local  string
	callID string
	to     string // the To header of requests in the dialog, once known
}

func newRawCall(t *testing.T, addr, callID string) *rawCall {
	conn := dialUDP(t, addr)
	return &rawCall{t: t, conn: conn, local: conn.LocalAddr().String(), callID: callID, to: "<sip:bob@" + testDomain + ">"}
}

// send sends a request of method with cseq, extra headers, and body as
// application/sdp when it is not empty.
func (r *rawCall) send(method string, cseq int, body string, extra ...string) {
	r.t.Helper()
	lines := []string{method + " sip:bob@" + testDomain + " SIP/2.0",
		"Via: SIP/2.0/UDP " + r.local + ";rport;branch=z9hG4bK-" + sip.GenerateTagN(10),
		"From: <sip:100@pbx.example.org>;tag=r1",
		"To: " + r.to,
		"Call-ID: " + r.callID,
		"CSeq: " + strconv.Itoa(cseq) + " " + method,
		"Contact: <sip:100@" + r.local + ">",
		"Max-Forwards: 70"}
	lines = append(lines, extra...)
	if body != "" {
		lines = append(lines, "Content-Type: application/sdp")
	}
	if _, err := r.conn.Write([]byte(rawSIP(lines...)(body))); err != nil {
		r.t.Fatal(err)
	}
}

// read returns the next message, or "" when none comes within d.
func (r *rawCall) read(d time.Duration) string {
	_ = r.conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 65536)
	n, err := r.conn.Read(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// until returns the first message that starts with prefix and whose CSeq
// is cseq, skipping others (provisional responses, retransmissions).
func (r *rawCall) until(prefix, cseq string) string {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m := r.read(time.Until(deadline))
		if strings.HasPrefix(m, prefix) && rawHeader(m, "CSeq") == cseq {
			return m
		}
	}
	r.t.Fatalf("no %q with CSeq %s", prefix, cseq)
	return ""
}

// answered takes the To header (with Parley's tag) of a response, for the
// requests that follow in the dialog.
func (r *rawCall) answered(res string) {
	r.t.Helper()
	r.to = rawHeader(res, "To")
	if !strings.Contains(r.to, "tag=") {
		r.t.Fatalf("no To tag in %q", firstLine(res))
	}
}

// rawHeader returns the value of the first header name of a raw message.
func rawHeader(msg, name string) string {
	head, _, _ := strings.Cut(msg, "\r\n\r\n")
	for _, l := range strings.Split(head, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func rawBody(msg string) string {
	_, body, _ := strings.Cut(msg, "\r\n\r\n")
	return body
}

// answerSDP is a phone's SDP at port with the payload types pts.
func answerSDP(port int, pts string) string {
	return "v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio " + strconv.Itoa(port) + " RTP/AVP " + pts +
		"\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
}

func listenRTP(t *testing.T) (*net.UDPConn, int) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, c.LocalAddr().(*net.UDPAddr).Port
}

var pcmaCallee = []event.Codec{{Name: "PCMA", ClockRate: 8000}, {Name: event.TelephoneEvent, ClockRate: 8000}}

// TestLateOffer: an INVITE without SDP (RFC 3261 §13.2.1). The core gets
// an offer of every codec Parley forwards; the caller gets 180, then a 200
// whose SDP offers the codecs of the core's answer at the leg's address,
// sent again until the ACK, which brings the answer. RTP then flows
// between the address of the answer and the core; a BYE ends the call.
func TestLateOffer(t *testing.T) {
	h := newFakeCallHost("answer")
	h.supported = pcmaCallee
	a := startCallAdapter(t, h, trustLoopback)
	r := newRawCall(t, a.udp, "late-1")
	r.send("INVITE", 1, "")
	var statuses []string
	var ok string
	for ok == "" {
		m := r.read(10 * time.Second)
		switch {
		case m == "":
			t.Fatalf("no 200; got %v", statuses)
		case strings.HasPrefix(m, "SIP/2.0 200 "):
			ok = m
		case strings.HasPrefix(m, "SIP/2.0 1"):
			statuses = append(statuses, firstLine(m))
		default:
			t.Fatalf("got %q", firstLine(m))
		}
	}
	if len(statuses) == 0 || !strings.HasPrefix(statuses[len(statuses)-1], "SIP/2.0 180 ") {
		t.Errorf("provisional responses %v, want 180 last", statuses)
	}

	inv := <-h.calls
	var offered []string
	for _, c := range inv.Offer.Codecs {
		offered = append(offered, c.String())
	}
	if got, want := strings.Join(offered, ", "), "111 opus/48000/2, 9 G722/8000, 0 PCMU/8000, 8 PCMA/8000, 101 telephone-event/8000, 110 telephone-event/48000"; got != want {
		t.Errorf("the core was offered %s, want %s", got, want)
	}
	if err := inv.Offer.Validate(); err != nil {
		t.Errorf("the core's offer: %v", err)
	}

	if ct := rawHeader(ok, "Content-Type"); ct != "application/sdp" {
		t.Errorf("200 Content-Type %q", ct)
	}
	offer, err := media.ParseSDP([]byte(rawBody(ok)))
	if err != nil {
		t.Fatalf("the 200's SDP: %v", err)
	}
	var got []string
	for _, c := range offer.Media.Codecs {
		got = append(got, c.String())
	}
	if strings.Join(got, ", ") != "8 PCMA/8000, 101 telephone-event/8000" || offer.Direction != media.SendRecv ||
		!offer.Addr.IsValid() || offer.Addr.Port() < 20000 || offer.Addr.Port() > 20999 {
		t.Errorf("the 200 offers %v %s at %s; want PCMA and telephone-event, sendrecv, at the leg", got, offer.Direction, offer.Addr)
	}
	r.answered(ok)
	if again := r.until("SIP/2.0 200 ", "1 INVITE"); rawBody(again) != rawBody(ok) {
		t.Errorf("the retransmitted 200 has another SDP:\n%s", rawBody(again))
	}

	rtp, port := listenRTP(t)
	r.send("ACK", 1, answerSDP(port, "8 101"))
	c := a.calls.byDialog("late-1")
	if c == nil {
		t.Fatal("no leg")
	}
	waitConfirmed(t, c)
	// The leg takes RTP from the answer's address only, now.
	other, _ := listenRTP(t)
	if rtpEchoed(t, other, offer.Addr, 500*time.Millisecond) {
		t.Error("the leg echoed RTP from an address the answer does not give")
	}
	if !rtpEchoed(t, rtp, offer.Addr, 5*time.Second) {
		t.Error("no echo at the answer's address")
	}

	r.send("BYE", 2, "")
	r.until("SIP/2.0 200 ", "2 BYE")
	if hang, ok := h.waitEvent(t).(*event.CallHangup); !ok || hang.Call != "late-1" || hang.Reason != event.HangupNormal {
		t.Errorf("event %#v, want a normal hangup", hang)
	}
}

// TestLateOfferBadACK: a late offer's ACK without an answer, or with an
// answer Parley cannot take, ends the call: a BYE with Reason
// Q.850;cause=88, and the core hears of incompatible media.
func TestLateOfferBadACK(t *testing.T) {
	h := newFakeCallHost("answer")
	h.supported = pcmaCallee
	a := startCallAdapter(t, h, trustLoopback)
	for i, tt := range []struct {
		name, ack string
	}{
		{"no SDP", ""},
		{"none of the offered codecs", answerSDP(16000, "0")},
		{"audio refused", answerSDP(0, "8")},
		{"malformed SDP", "v=0\r\nm=audio 16000 RTP/AVP 8\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			callID := "late-bad-" + strconv.Itoa(i)
			r := newRawCall(t, a.udp, callID)
			r.send("INVITE", 1, "")
			r.answered(r.until("SIP/2.0 200 ", "1 INVITE"))
			<-h.calls
			r.send("ACK", 1, tt.ack)
			bye := r.until("BYE ", "1 BYE")
			if reason := rawHeader(bye, "Reason"); !strings.HasPrefix(reason, "Q.850;cause=88") {
				t.Errorf("BYE with Reason %q, want Q.850;cause=88", reason)
			}
			if _, err := r.conn.Write([]byte(rawSIP("SIP/2.0 200 OK",
				"Via: "+rawHeader(bye, "Via"), "From: "+rawHeader(bye, "From"), "To: "+rawHeader(bye, "To"),
				"Call-ID: "+callID, "CSeq: 1 BYE")(""))); err != nil {
				t.Fatal(err)
			}
			hang, ok := h.waitEvent(t).(*event.CallHangup)
			if !ok || hang.Call != callID || hang.Reason != event.HangupIncompatibleMedia || hang.Text == "" {
				t.Errorf("event %#v, want a hangup for incompatible media, with why", hang)
			}
			if a.calls.get(callID) != nil {
				t.Error("the leg is still in the table")
			}
		})
	}
}

// TestLateOfferNoEarlyMedia: early media for a late offer would be an offer
// in a provisional response, which needs 100rel: the caller gets 180.
func TestLateOfferNoEarlyMedia(t *testing.T) {
	h := newFakeCallHost("early")
	a := startCallAdapter(t, h, trustLoopback)
	r := newRawCall(t, a.udp, "late-early")
	r.send("INVITE", 1, "")
	<-h.calls
	for {
		m := r.read(10 * time.Second)
		if m == "" {
			t.Fatal("no ringing")
		}
		if strings.HasPrefix(m, "SIP/2.0 100 ") {
			continue
		}
		if !strings.HasPrefix(m, "SIP/2.0 180 ") || rawBody(m) != "" {
			t.Fatalf("got %q with body %q, want 180 without SDP", firstLine(m), rawBody(m))
		}
		return
	}
}

// TestReinviteOKRetransmittedUntilACK: the 2xx of a re-INVITE is sent
// again until its ACK (RFC 3261 §13.3.1.4), which has the re-INVITE's
// CSeq: a late copy of the first ACK does not stop it. A re-INVITE without
// SDP gets Parley's offer, and the answer in its ACK moves the leg.
func TestReinviteOKRetransmittedUntilACK(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, trustLoopback)
	r := newRawCall(t, a.udp, "reinvite-retrans")
	r.send("INVITE", 1, testOffer)
	first := r.until("SIP/2.0 200 ", "1 INVITE")
	r.answered(first)
	r.send("ACK", 1, "")

	r.send("INVITE", 2, strings.Replace(testOffer, "m=audio 16000", "m=audio 16002", 1))
	ok := r.until("SIP/2.0 200 ", "2 INVITE")
	if again := r.until("SIP/2.0 200 ", "2 INVITE"); rawBody(again) != rawBody(ok) {
		t.Errorf("the retransmitted 200 differs:\n%s", again)
	}
	r.send("ACK", 1, "") // the first ACK again
	r.until("SIP/2.0 200 ", "2 INVITE")
	r.send("ACK", 2, "")
	// A retransmission may cross the ACK; none comes after it.
	if m := r.read(1500 * time.Millisecond); m != "" {
		if m := r.read(3 * time.Second); m != "" {
			t.Fatalf("after the ACK, still %q", firstLine(m))
		}
	}

	// Without SDP: Parley offers, the ACK answers from a new address.
	r.send("INVITE", 3, "")
	ok = r.until("SIP/2.0 200 ", "3 INVITE")
	offer, err := media.ParseSDP([]byte(rawBody(ok)))
	if err != nil || offer.Media.Codecs[0].Name != "PCMU" {
		t.Fatalf("the 200 offers %+v, %v; want the call's codec", offer, err)
	}
	// Another re-INVITE while Parley's offer waits for its answer.
	r.send("INVITE", 4, testOffer)
	if res := r.until("SIP/2.0 491 ", "4 INVITE"); res == "" {
		t.Fatal("no 491")
	}
	rtp, port := listenRTP(t)
	r.send("ACK", 3, strings.Replace(testOffer, "m=audio 16000", "m=audio "+strconv.Itoa(port), 1))
	if !rtpEchoed(t, rtp, offer.Addr, 5*time.Second) {
		t.Error("no echo at the answer's address")
	}
	c := a.calls.byDialog("reinvite-retrans")
	if c == nil {
		t.Fatal("the leg ended")
	}
	waitConfirmed(t, c)
}

// waitConfirmed waits until c's last 2xx is ACKed.
func waitConfirmed(t *testing.T, c *call) {
	t.Helper()
	for range 250 {
		c.mu.Lock()
		state, pending := c.state, c.pending
		c.mu.Unlock()
		if state == callConfirmed && pending == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Error("the leg's 2xx is not ACKed")
}

// rtpEchoed sends RTP from rtp to a leg at addr, as a phone does every
// 20 ms, until the leg sends it back (it may have dropped the first packets
// while the ACK that names rtp's address was on its way), for d at most.
func rtpEchoed(t *testing.T, rtp *net.UDPConn, addr netip.AddrPort, d time.Duration) bool {
	t.Helper()
	pkt := []byte{0x80, 8, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7, 0xd5, 0xd5}
	buf := make([]byte, 100)
	for range d / (20 * time.Millisecond) {
		if _, err := rtp.WriteToUDPAddrPort(pkt, addr); err != nil {
			t.Fatal(err)
		}
		_ = rtp.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if n, _, err := rtp.ReadFromUDPAddrPort(buf); err == nil && n == len(pkt) {
			return true
		}
	}
	return false
}

// TestNoByeBeforeACK: the core hangs up a caller leg whose 200 is not yet
// ACKed: the BYE waits for the ACK (RFC 3261 §15), then goes.
func TestNoByeBeforeACK(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, func(c *Config) {
		c.TrustedPeers = append(c.TrustedPeers, TrustedPeer{Name: "lo", Addresses: []string{"127.0.0.1"}, Domains: []string{"pbx.example.org"}})
	})
	conn := dialUDP(t, a.udp)
	local := conn.LocalAddr().String()
	bob := "sip:bob@" + testDomain
	head := func(method, branch, to string, cseq int) []string {
		return []string{method + " " + bob + " SIP/2.0",
			"Via: SIP/2.0/UDP " + local + ";rport;branch=z9hG4bK-" + branch,
			"From: <sip:100@pbx.example.org>;tag=r1",
			"To: " + to,
			"Call-ID: bye-after-ack",
			"CSeq: " + strconv.Itoa(cseq) + " " + method,
			"Contact: <sip:100@" + local + ">",
			"Max-Forwards: 70"}
	}
	invite := rawSIP(append(head("INVITE", "i1", "<"+bob+">", 1), "Content-Type: application/sdp")...)(testOffer)
	res := exchange(t, conn, invite)
	for !strings.HasPrefix(res, "SIP/2.0 200 ") {
		res = exchange(t, conn, "")
	}
	to := rawHeader(res, "To")
	if err := a.Signal(context.Background(), &event.CallHangup{Call: "bye-after-ack", Reason: event.HangupNormal}); err != nil {
		t.Fatal(err)
	}
	// Until the ACK only the 200 comes again, no BYE.
	for deadline := time.Now().Add(1200 * time.Millisecond); time.Now().Before(deadline); {
		if m := exchange(t, conn, ""); strings.HasPrefix(m, "BYE ") {
			t.Fatal("a BYE before the ACK")
		}
	}
	if _, err := conn.Write([]byte(rawSIP(head("ACK", "a1", to, 1)...)(""))); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if m := exchange(t, conn, ""); strings.HasPrefix(m, "BYE ") {
			if !strings.Contains(m, "Reason: Q.850;cause=16") {
				t.Errorf("BYE without the reason: %q", m)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no BYE after the ACK")
		}
	}
}
