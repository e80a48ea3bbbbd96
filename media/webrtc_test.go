package media

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/parleygw/parley/event"
)

// rtpSink is an Endpoint that keeps what it is written.
type rtpSink struct {
	mu   sync.Mutex
	pkts []rtp.Packet
}

func (s *rtpSink) SetPeer(Endpoint)       {}
func (s *rtpSink) WriteRTCP([]byte) error { return nil }
func (s *rtpSink) LastPacket() time.Time  { return time.Time{} }
func (s *rtpSink) Stats() Stats           { return Stats{} }
func (s *rtpSink) Close() error           { return nil }
func (s *rtpSink) WriteRTP(b []byte) error {
	var p rtp.Packet
	if err := p.Unmarshal(append([]byte(nil), b...)); err != nil { // b is the leg's buffer
		return err
	}
	s.mu.Lock()
	s.pkts = append(s.pkts, p)
	s.mu.Unlock()
	return nil
}

// waitFor returns the first packet of payload type pt that s got.
func (s *rtpSink) waitFor(t *testing.T, pt uint8) rtp.Packet {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		for _, p := range s.pkts {
			if p.PayloadType == pt {
				s.mu.Unlock()
				return p
			}
		}
		s.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Fatalf("no packet of payload type %d among %d", pt, len(s.pkts))
	return rtp.Packet{}
}

func webrtcPorts(t *testing.T) *Ports {
	t.Helper()
	p, err := NewPorts(loopback, 41000, 41019)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func opusDTMF(opus, dtmf uint8) event.Media {
	return event.Media{Codecs: []event.Codec{
		{Name: "opus", ClockRate: 48000, Channels: 2, PayloadType: opus, FMTP: "minptime=10;useinbandfec=1"},
		{Name: "telephone-event", ClockRate: 48000, PayloadType: dtmf, FMTP: "0-16"},
		{Name: "PCMU", ClockRate: 8000, PayloadType: 0},
	}}
}

// Two legs numbered differently reach each other through loopback: RTP
// passes both ways, with each side's payload types, DTMF included.
func TestWebRTCLegsExchangeRTP(t *testing.T) {
	ports := webrtcPorts(t)
	cfg := WebRTCConfig{Ports: ports, Loopback: true, GatherTimeout: 5 * time.Second}
	a, err := NewWebRTCLeg(cfg, opusDTMF(96, 101))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewWebRTCLeg(cfg, opusDTMF(111, 126))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, used := ports.Pairs(); used != 2 {
		t.Fatalf("pairs in use = %d, want 2", used)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(offer, "a=candidate:") || !strings.Contains(offer, "127.0.0.1 4100") {
		t.Fatalf("offer lacks a loopback candidate from the range:\n%s", offer)
	}
	answer, chosenB, err := b.Answer(ctx, offer, event.Media{})
	if err != nil {
		t.Fatal(err)
	}
	if chosenB.Codecs[0].PayloadType != 111 {
		t.Fatalf("answer's codecs, in b's numbering = %v", chosenB.Codecs)
	}
	chosenA, err := a.SetAnswer(answer)
	if err != nil {
		t.Fatal(err)
	}
	if chosenA.Codecs[0].PayloadType != 96 {
		t.Fatalf("answer's codecs, in a's numbering = %v", chosenA.Codecs)
	}
	sa, sb := &rtpSink{}, &rtpSink{}
	a.SetPeer(sa)
	b.SetPeer(sb)
	send := func(l *WebRTCLeg, pt uint8, seq uint16) {
		pkt, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 7}, Payload: []byte{0xf8, 0xff, 0xfe}}).Marshal()
		if err := l.WriteRTP(pkt); err != nil && !errors.Is(err, errNotBound) {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		for seq := uint16(1); ; seq++ {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			send(a, 96, seq)
			// one sequence for both formats, as SRTP's replay check wants
			send(b, 111, 2*seq)
			send(b, 126, 2*seq+1)
		}
	}()
	defer close(done)
	if p := sb.waitFor(t, 111); !bytesEqual(p.Payload, []byte{0xf8, 0xff, 0xfe}) {
		t.Fatalf("b got payload %x", p.Payload)
	}
	sa.waitFor(t, 96)
	sa.waitFor(t, 101) // b's 126 arrives as a's telephone-event
	if st := b.Stats(); st.PacketsIn == 0 || st.PacketsOut == 0 {
		t.Fatalf("b stats %+v", st)
	}
	if time.Since(a.LastPacket()) > 5*time.Second {
		t.Fatal("a's last packet is old")
	}
	select {
	case <-a.Failed():
		t.Fatalf("a failed: %v", a.FailErr())
	default:
	}
	a.Close()
	b.Close()
	if _, used := ports.Pairs(); used != 0 {
		t.Fatalf("pairs in use after close = %d", used)
	}
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// A leg whose remote candidates lead nowhere fails, and says so.
func TestWebRTCLegFails(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("waits for ICE to fail; runs in make test and in CI")
	}
	cfg := WebRTCConfig{Ports: webrtcPorts(t), Loopback: true, FailedTimeout: 2 * time.Second}
	a, err := NewWebRTCLeg(cfg, opusDTMF(96, 101))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewWebRTCLeg(cfg, opusDTMF(96, 101))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	answer, _, err := b.Answer(ctx, offer, event.Media{})
	if err != nil {
		t.Fatal(err)
	}
	b.Close() // nobody answers a's checks
	if _, err := a.SetAnswer(answer); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Failed():
		if !errors.Is(a.FailErr(), ErrMediaFailed) {
			t.Fatalf("fail error %v", a.FailErr())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("leg did not fail")
	}
}

func TestWebRTCLegCandidates(t *testing.T) {
	cfg := WebRTCConfig{Ports: webrtcPorts(t), Loopback: true}
	a, err := NewWebRTCLeg(cfg, opusDTMF(96, 101))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c := "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host"
	var zero uint16
	for _, s := range []string{c, c, strings.TrimPrefix(c, "candidate:"), "", "a=end-of-candidates"} {
		if err := a.AddCandidate(s, "0", &zero); err != nil {
			t.Fatalf("AddCandidate(%q) = %v", s, err)
		}
	}
	if len(a.pending) != 1 {
		t.Fatalf("pending = %d, want 1", len(a.pending))
	}
	if err := a.AddCandidate("candidate:nonsense", "0", &zero); err == nil {
		t.Fatal("a malformed candidate was taken")
	}
}

func TestNewWebRTCLegRefuses(t *testing.T) {
	if _, err := NewWebRTCLeg(WebRTCConfig{}, opusDTMF(96, 101)); err == nil {
		t.Fatal("no port range accepted")
	}
	if _, err := NewWebRTCLeg(WebRTCConfig{Ports: webrtcPorts(t)}, event.Media{}); err == nil {
		t.Fatal("no codec accepted")
	}
}

// With a public address, the offer's host candidate carries it.
func TestWebRTCLegPublicIP(t *testing.T) {
	cfg := WebRTCConfig{Ports: webrtcPorts(t), Loopback: true, PublicIP: netip.MustParseAddr("192.0.2.10")}
	a, err := NewWebRTCLeg(cfg, opusDTMF(96, 101))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	offer, err := a.Offer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(offer, "192.0.2.10 4100") || strings.Contains(offer, "127.0.0.1 4100") {
		t.Fatalf("offer's candidates do not carry the public address only:\n%s", offer)
	}
}
