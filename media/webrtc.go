package media

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/parleygw/parley/event"
)

// WebRTC legs. A WebRTCLeg is the media of one call leg with a WebRTC
// client (a Matrix client's m.call.*, a Jingle client's ICE-UDP with
// DTLS-SRTP): ICE, DTLS-SRTP and RTCP are pion's; Parley's part is the
// offer and answer, the codecs and their payload types, and the
// forwarding of RTP between the client and the leg's peer endpoint.
//
// Each leg takes one port pair from the media range (Ports) and gathers its
// host candidate on the pair's first port, through an ICE UDP mux: the
// range counts WebRTC legs with the plain RTP ones, and a leg needs no
// other local port. The second port of the pair stays reserved, unused
// (WebRTC muxes RTCP with RTP).
//
// The core numbers a leg's codecs as the event.Media the leg was made with.
// When the WebRTC side negotiates other payload types for the same codecs
// (a remote offer numbers opus 111 where the core says 96), the leg
// rewrites the payload type of every packet, both ways.

// ICEServer is a STUN or TURN server a WebRTC leg gathers candidates with.
type ICEServer struct {
	// URLs are stun:, turn: or turns: URIs (RFC 7064, RFC 7065).
	URLs []string
	// Username and Credential authenticate to a TURN server.
	Username   string
	Credential string
}

// WebRTCConfig configures WebRTC legs; one config serves every leg.
type WebRTCConfig struct {
	// Ports is the media port range; each leg takes one pair from it.
	Ports *Ports
	// PublicIP, when valid, replaces the host candidate's address in
	// offers and answers: the address a 1:1 NAT maps to the range's.
	PublicIP netip.Addr
	// ICEServers are STUN and TURN servers for reflexive and relayed
	// candidates.
	ICEServers []ICEServer
	// Loopback offers loopback host candidates (127.0.0.1), which WebRTC
	// stacks leave out by default; for machines with only loopback, such
	// as tests.
	Loopback bool
	// GatherTimeout bounds how long an offer or answer waits for candidate
	// gathering (non-trickle); 0 means 10 s.
	GatherTimeout time.Duration
	// FailedTimeout is how long ICE may find no path before the leg fails;
	// 0 means pion's default (25 s).
	FailedTimeout time.Duration
}

// WebRTCLeg is one WebRTC call leg; it implements Endpoint. Make it with
// NewWebRTCLeg, then either Offer and SetAnswer (a callee leg Parley
// invites) or Answer (a caller leg that offered).
type WebRTCLeg struct {
	cfg    WebRTCConfig
	codecs event.Media
	port   int
	rtp    *net.UDPConn
	rtcp   *net.UDPConn
	mux    ice.UDPMux
	pc     *webrtc.PeerConnection
	track  *localTrack
	start  time.Time

	mu         sync.Mutex
	remoteSet  bool
	pending    []webrtc.ICECandidateInit
	candidates map[string]bool
	closed     bool

	peer atomic.Pointer[endpointBox]
	// toCore maps a payload type the WebRTC side sends to the core's;
	// toRemote the reverse. An entry 0xff is no rewrite.
	toCore, toRemote atomic.Pointer[[128]uint8]
	last             atomic.Int64 // nanoseconds since start

	packetsIn, bytesIn, packetsOut, bytesOut, dropped, malformed atomic.Uint64
	// what the client's RTCP reception reports said of the media it got
	quality reception

	failOnce sync.Once
	failed   chan struct{}
	done     chan struct{} // closed by Close
	failErr  atomic.Pointer[error]
	wg       sync.WaitGroup
}

type endpointBox struct{ e Endpoint }

var _ Endpoint = (*WebRTCLeg)(nil)

// ErrMediaFailed is what Failed's error wraps: ICE found no path, or DTLS
// failed.
var ErrMediaFailed = errors.New("webrtc media failed")

// NewWebRTCLeg makes a leg that offers or accepts codecs (in the core's
// numbering). It takes a port pair from cfg.Ports.
func NewWebRTCLeg(cfg WebRTCConfig, codecs event.Media) (*WebRTCLeg, error) {
	if cfg.Ports == nil {
		return nil, errors.New("webrtc leg: no media port range")
	}
	if err := codecs.Validate(); err != nil {
		return nil, fmt.Errorf("webrtc leg: %w", err)
	}
	if cfg.GatherTimeout <= 0 {
		cfg.GatherTimeout = 10 * time.Second
	}
	rtpConn, rtcpConn, err := cfg.Ports.Open()
	if err != nil {
		return nil, fmt.Errorf("webrtc leg: %w", err)
	}
	l := &WebRTCLeg{
		cfg: cfg, codecs: codecs, rtp: rtpConn, rtcp: rtcpConn,
		port:       rtpConn.LocalAddr().(*net.UDPAddr).Port,
		start:      time.Now(),
		candidates: map[string]bool{},
		failed:     make(chan struct{}),
		done:       make(chan struct{}),
	}
	identity := identityMap()
	l.toCore.Store(identity)
	l.toRemote.Store(identityMap())
	if err := l.setup(); err != nil {
		l.release()
		return nil, fmt.Errorf("webrtc leg: %w", err)
	}
	return l, nil
}

func identityMap() *[128]uint8 {
	var m [128]uint8
	for i := range m {
		m[i] = 0xff
	}
	return &m
}

func (l *WebRTCLeg) release() {
	if l.mux != nil {
		_ = l.mux.Close()
	}
	_ = l.rtp.Close()
	_ = l.rtcp.Close()
	l.cfg.Ports.release(l.port)
}

func (l *WebRTCLeg) setup() error {
	me := &webrtc.MediaEngine{}
	for _, c := range l.codecs.Codecs {
		if err := me.RegisterCodec(codecParameters(c), webrtc.RTPCodecTypeAudio); err != nil {
			return fmt.Errorf("register codec %s: %w", c, err)
		}
	}
	reg := &interceptor.Registry{}
	if err := webrtc.ConfigureRTCPReports(reg); err != nil {
		return err
	}
	se := webrtc.SettingEngine{LoggerFactory: quietLogger{}}
	l.mux = webrtc.NewICEUDPMux(quietLogger{}.NewLogger("mux"), l.rtp)
	se.SetICEUDPMux(l.mux)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(l.cfg.Loopback)
	if l.cfg.PublicIP.IsValid() {
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External: []string{l.cfg.PublicIP.String()}, AsCandidateType: webrtc.ICECandidateTypeHost,
		}); err != nil {
			return fmt.Errorf("public address %s: %w", l.cfg.PublicIP, err)
		}
	}
	if l.cfg.FailedTimeout > 0 {
		se.SetICETimeouts(l.cfg.FailedTimeout/2, l.cfg.FailedTimeout, 2*time.Second)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	var servers []webrtc.ICEServer
	for _, s := range l.cfg.ICEServers {
		servers = append(servers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{ICEServers: servers, BundlePolicy: webrtc.BundlePolicyMaxBundle})
	if err != nil {
		return err
	}
	l.pc = pc
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed {
			l.fail(fmt.Errorf("%w: connection state %s", ErrMediaFailed, s))
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		l.wg.Add(1)
		go l.readTrack(tr)
	})
	l.track = &localTrack{id: "audio", stream: "parley"}
	sender, err := pc.AddTrack(l.track)
	if err != nil {
		_ = pc.Close()
		return err
	}
	l.wg.Add(1)
	go l.readRTCP(sender)
	return nil
}

// codecParameters is c as pion registers it.
func codecParameters(c event.Codec) webrtc.RTPCodecParameters {
	ch := uint16(c.Channels)
	if strings.EqualFold(c.Name, "opus") && ch == 0 {
		ch = 2 // WebRTC writes opus/48000/2 whatever is sent
	}
	return webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: "audio/" + c.Name, ClockRate: c.ClockRate, Channels: ch, SDPFmtpLine: c.FMTP,
		},
		PayloadType: webrtc.PayloadType(c.PayloadType),
	}
}

// Failed is closed when ICE or DTLS failed; FailErr then says why. The
// adapter hangs the call up with event.HangupMediaFailed.
func (l *WebRTCLeg) Failed() <-chan struct{} { return l.failed }

// Done is closed when the leg is closed.
func (l *WebRTCLeg) Done() <-chan struct{} { return l.done }

// FailErr returns why the leg failed, or nil.
func (l *WebRTCLeg) FailErr() error {
	if p := l.failErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (l *WebRTCLeg) fail(err error) {
	l.failOnce.Do(func() {
		l.failErr.Store(&err)
		close(l.failed)
	})
}

// Offer makes the leg's SDP offer, with every candidate gathered
// (non-trickle).
func (l *WebRTCLeg) Offer(ctx context.Context) (string, error) {
	offer, err := l.pc.CreateOffer(nil)
	if err != nil {
		return "", fmt.Errorf("webrtc offer: %w", err)
	}
	return l.setLocal(ctx, offer)
}

// Answer takes the remote offer and makes the leg's answer, with every
// candidate gathered (non-trickle). The answer is restricted to the codecs
// of want (the core's numbering; empty means the leg's own), and returns
// the codecs the answer chose, in the core's numbering.
func (l *WebRTCLeg) Answer(ctx context.Context, offer string, want event.Media) (string, event.Media, error) {
	if err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", event.Media{}, fmt.Errorf("webrtc answer: remote offer: %w", err)
	}
	l.remoteReady()
	if len(want.Codecs) > 0 {
		if err := l.restrict(want); err != nil {
			return "", event.Media{}, fmt.Errorf("webrtc answer: %w", err)
		}
	}
	answer, err := l.pc.CreateAnswer(nil)
	if err != nil {
		return "", event.Media{}, fmt.Errorf("webrtc answer: %w", err)
	}
	sdp, err := l.setLocal(ctx, answer)
	if err != nil {
		return "", event.Media{}, err
	}
	chosen, err := l.negotiated(sdp)
	if err != nil {
		return "", event.Media{}, fmt.Errorf("webrtc answer: %w", err)
	}
	return sdp, chosen, nil
}

// Renegotiate answers a new offer from the remote during the call (hold,
// resume, a new address), keeping the codecs the call negotiated.
func (l *WebRTCLeg) Renegotiate(ctx context.Context, offer string) (string, error) {
	if err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("webrtc renegotiation: remote offer: %w", err)
	}
	answer, err := l.pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("webrtc renegotiation: %w", err)
	}
	sdp, err := l.setLocal(ctx, answer)
	if err != nil {
		return "", err
	}
	if _, err := l.negotiated(sdp); err != nil {
		return "", fmt.Errorf("webrtc renegotiation: %w", err)
	}
	return sdp, nil
}

// restrict limits the audio transceiver's codecs to want.
func (l *WebRTCLeg) restrict(want event.Media) error {
	var prefs []webrtc.RTPCodecParameters
	for _, c := range want.Codecs {
		prefs = append(prefs, codecParameters(c))
	}
	for _, t := range l.pc.GetTransceivers() {
		if t.Kind() == webrtc.RTPCodecTypeAudio {
			if err := t.SetCodecPreferences(prefs); err != nil {
				return fmt.Errorf("codec preferences: %w", err)
			}
		}
	}
	return nil
}

// SetAnswer takes the remote answer to the leg's offer and returns the
// codecs it chose, in the core's numbering.
func (l *WebRTCLeg) SetAnswer(answer string) (event.Media, error) {
	if err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return event.Media{}, fmt.Errorf("webrtc remote answer: %w", err)
	}
	l.remoteReady()
	chosen, err := l.negotiated(answer)
	if err != nil {
		return event.Media{}, fmt.Errorf("webrtc remote answer: %w", err)
	}
	return chosen, nil
}

func (l *WebRTCLeg) setLocal(ctx context.Context, desc webrtc.SessionDescription) (string, error) {
	gathered := webrtc.GatheringCompletePromise(l.pc)
	if err := l.pc.SetLocalDescription(desc); err != nil {
		return "", fmt.Errorf("webrtc local %s: %w", desc.Type, err)
	}
	t := time.NewTimer(l.cfg.GatherTimeout)
	defer t.Stop()
	select {
	case <-gathered:
	case <-t.C: // send what was gathered
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return l.pc.LocalDescription().SDP, nil
}

// negotiated maps the payload types of an answer to the core's and returns
// the answer's codecs in the core's numbering.
func (l *WebRTCLeg) negotiated(answer string) (event.Media, error) {
	m, err := ParseWebRTCMedia(answer)
	if err != nil {
		return event.Media{}, err
	}
	toCore, toRemote := identityMap(), identityMap()
	var chosen event.Media
	for _, c := range m.Codecs {
		for _, own := range l.codecs.Codecs {
			if !sameCodec(c, own) {
				continue
			}
			if c.PayloadType != own.PayloadType {
				toCore[c.PayloadType] = own.PayloadType
				toRemote[own.PayloadType] = c.PayloadType
			}
			chosen.Codecs = append(chosen.Codecs, own)
			break
		}
	}
	if err := chosen.Validate(); err != nil {
		return event.Media{}, fmt.Errorf("no common codec: %w", err)
	}
	l.toCore.Store(toCore)
	l.toRemote.Store(toRemote)
	return chosen, nil
}

// sameCodec compares as WebRTC does: opus is opus whatever channels are
// written.
func sameCodec(a, b event.Codec) bool {
	if strings.EqualFold(a.Name, "opus") && strings.EqualFold(b.Name, "opus") {
		return a.ClockRate == b.ClockRate
	}
	return a.Same(b)
}

// AddCandidate adds a remote ICE candidate (an a=candidate value, with or
// without "candidate:"), for the m-line mid or index. An empty candidate
// (end of candidates) and a repeated one are ignored; candidates that come
// before the remote description are kept until it comes.
func (l *WebRTCLeg) AddCandidate(candidate, mid string, index *uint16) error {
	cand, err := parseCandidate(candidate)
	if err != nil || cand == "" {
		return err
	}
	init := webrtc.ICECandidateInit{Candidate: cand, SDPMLineIndex: index}
	if mid != "" {
		init.SDPMid = &mid
	}
	l.mu.Lock()
	if l.closed || l.candidates[cand] || len(l.candidates) >= maxRemoteCandidates {
		l.mu.Unlock()
		return nil
	}
	l.candidates[cand] = true
	if !l.remoteSet {
		l.pending = append(l.pending, init)
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	return l.pc.AddICECandidate(init)
}

// maxRemoteCandidates bounds what a remote party can make a leg keep and
// check: a client gathers a handful (host, reflexive and relayed, per
// interface); more only makes Parley send checks where the remote says.
const maxRemoteCandidates = 32

// parseCandidate checks a remote candidate line and returns it as pion
// takes it ("candidate:..."), or "" for end of candidates.
func parseCandidate(s string) (string, error) {
	s = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), "a="))
	if s == "" || s == "end-of-candidates" {
		return "", nil
	}
	if !strings.HasPrefix(s, "candidate:") {
		s = "candidate:" + s
	}
	if strings.ContainsAny(s, "\r\n") {
		return "", errors.New("candidate has a line break")
	}
	if _, err := ice.UnmarshalCandidate(s); err != nil {
		return "", fmt.Errorf("candidate %q: %w", s, err)
	}
	return s, nil
}

func (l *WebRTCLeg) remoteReady() {
	l.mu.Lock()
	pending := l.pending
	l.pending, l.remoteSet = nil, true
	l.mu.Unlock()
	for _, c := range pending {
		_ = l.pc.AddICECandidate(c) // checked when it came
	}
}

func (l *WebRTCLeg) readTrack(tr *webrtc.TrackRemote) {
	defer l.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, _, err := tr.Read(buf)
		switch {
		case err != nil && (n == 0 || l.isClosed()):
			return // the track or the leg ended
		case err != nil || n < 12:
			l.malformed.Add(1) // a payload type nobody negotiated, a runt
			continue
		}
		b := buf[:n]
		if m := l.toCore.Load()[b[1]&0x7f]; m != 0xff {
			b[1] = b[1]&0x80 | m
		}
		l.packetsIn.Add(1)
		l.bytesIn.Add(uint64(n))
		l.last.Store(int64(time.Since(l.start)))
		box := l.peer.Load()
		if box == nil || box.e == nil {
			l.dropped.Add(1)
			continue
		}
		_ = box.e.WriteRTP(b)
	}
}

func (l *WebRTCLeg) readRTCP(sender *webrtc.RTPSender) {
	defer l.wg.Done()
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		l.last.Store(int64(time.Since(l.start)))
		rate := uint64(l.track.rate.Load())
		if rate == 0 {
			rate = 48000
		}
		l.quality.note(pkts, rate)
	}
}

func (l *WebRTCLeg) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// SetPeer implements Endpoint.
func (l *WebRTCLeg) SetPeer(peer Endpoint) { l.peer.Store(&endpointBox{peer}) }

// WriteRTP implements Endpoint: it sends pkt to the client, numbered as the
// WebRTC side negotiated, with the leg's own SSRC. Before negotiation ends
// it drops the packet.
func (l *WebRTCLeg) WriteRTP(pkt []byte) error {
	var h rtp.Header
	n, err := h.Unmarshal(pkt)
	if err != nil {
		l.malformed.Add(1)
		return fmt.Errorf("webrtc write: %w", err)
	}
	if m := l.toRemote.Load()[h.PayloadType&0x7f]; m != 0xff {
		h.PayloadType = m
	}
	if err := l.track.write(&h, pkt[n:]); err != nil {
		l.dropped.Add(1)
		return err
	}
	l.packetsOut.Add(1)
	l.bytesOut.Add(uint64(len(pkt)))
	return nil
}

// WriteRTCP implements Endpoint: the WebRTC transport makes its own RTCP,
// so pkt is dropped.
func (l *WebRTCLeg) WriteRTCP([]byte) error { return nil }

// LastPacket implements Endpoint.
func (l *WebRTCLeg) LastPacket() time.Time {
	return l.start.Add(time.Duration(l.last.Load()))
}

// Stats implements Endpoint.
func (l *WebRTCLeg) Stats() Stats {
	s := Stats{
		PacketsIn: l.packetsIn.Load(), BytesIn: l.bytesIn.Load(), PacketsOut: l.packetsOut.Load(),
		BytesOut: l.bytesOut.Load(), Dropped: l.dropped.Load(), Malformed: l.malformed.Load(),
	}
	l.quality.fill(&s)
	return s
}

// Close implements Endpoint: it closes the peer connection and gives the
// port pair back to the range.
func (l *WebRTCLeg) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.done)
	err := l.pc.Close()
	l.wg.Wait()
	l.release()
	return err
}

// localTrack is the leg's sending track: unlike pion's static tracks it
// keeps the payload type of each packet, so telephone events go out with
// their own.
type localTrack struct {
	id, stream string
	mu         sync.RWMutex
	w          webrtc.TrackLocalWriter
	ssrc       uint32
	rate       atomic.Uint32 // the clock rate of the negotiated codec

	// The track is one stream to the client whatever feeds it: when the
	// source changes (early media from one device, the answer from
	// another), its sequence numbers and timestamps are shifted to go on
	// from the last ones sent. Otherwise a jump back would look like
	// replayed SRTP, and the client would drop every packet until the new
	// source caught up.
	smu             sync.Mutex
	source          uint32
	started         bool
	seqOff          uint16
	tsOff           uint32
	lastSeq, lastTS uint32 // the last sent, after the shift
}

var errNotBound = errors.New("webrtc track not negotiated yet")

func (t *localTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	for _, c := range ctx.CodecParameters() {
		if !strings.EqualFold(c.MimeType, "audio/"+event.TelephoneEvent) {
			t.mu.Lock()
			t.w, t.ssrc = ctx.WriteStream(), uint32(ctx.SSRC())
			t.mu.Unlock()
			t.rate.Store(c.ClockRate)
			return c, nil
		}
	}
	return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
}

func (t *localTrack) Unbind(webrtc.TrackLocalContext) error {
	t.mu.Lock()
	t.w = nil
	t.mu.Unlock()
	return nil
}

func (t *localTrack) ID() string                { return t.id }
func (t *localTrack) RID() string               { return "" }
func (t *localTrack) StreamID() string          { return t.stream }
func (t *localTrack) Kind() webrtc.RTPCodecType { return webrtc.RTPCodecTypeAudio }

func (t *localTrack) write(h *rtp.Header, payload []byte) error {
	t.mu.RLock()
	w, ssrc := t.w, t.ssrc
	t.mu.RUnlock()
	if w == nil {
		return errNotBound
	}
	t.smu.Lock()
	if !t.started {
		t.started, t.source = true, h.SSRC
	} else if h.SSRC != t.source {
		t.source = h.SSRC
		t.seqOff = uint16(t.lastSeq) + 1 - h.SequenceNumber
		t.tsOff = t.lastTS + 160 - h.Timestamp // a little ahead: a new talkspurt
		h.Marker = true
	}
	h.SequenceNumber += t.seqOff
	h.Timestamp += t.tsOff
	t.lastSeq, t.lastTS = uint32(h.SequenceNumber), h.Timestamp
	t.smu.Unlock()
	h.SSRC = ssrc
	_, err := w.WriteRTP(h, payload)
	return err
}

// quietLogger keeps pion's logs out of Parley's: a leg's failure is
// reported through Failed.
type quietLogger struct{}

// silent is the one logger every scope of every leg gets: it writes
// nothing, so one serves all (a logger per scope cost about 5 KiB a leg).
var silent = logging.NewDefaultLeveledLoggerForScope("", logging.LogLevelDisabled, nopWriter{})

func (quietLogger) NewLogger(string) logging.LeveledLogger { return silent }

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
