package media

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"

	"github.com/parleygw/parley/internal/peertest"
)

// sink is an Endpoint that keeps what it is given.
type sink struct {
	mu        sync.Mutex
	rtp, rtcp [][]byte
}

func (s *sink) SetPeer(Endpoint) {}
func (s *sink) WriteRTP(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rtp = append(s.rtp, bytes.Clone(p))
	return nil
}
func (s *sink) WriteRTCP(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rtcp = append(s.rtcp, bytes.Clone(p))
	return nil
}
func (s *sink) LastPacket() time.Time { return time.Time{} }
func (s *sink) Stats() Stats          { return Stats{} }
func (s *sink) Close() error          { return nil }

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rtp)
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A leg forwards to any Endpoint, and a new remote address (a re-INVITE)
// moves the latch: the old address is dropped from then on.
func TestLegSetRemoteMovesLatch(t *testing.T) {
	ports, err := NewPorts(loopback, 30100, 30199)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ports.NewLeg()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := &sink{}
	l.SetPeer(s)
	old, moved := newParty(t), newParty(t)
	l.SetRemote(addr(old.rtp), false)
	to := net.UDPAddrFromAddrPort(l.Addr())
	created := l.LastPacket()

	send(t, old.rtp, packet(t, 8, 1, []byte("a")), to)
	waitFor(t, "the first packet", func() bool { return s.count() == 1 })
	if !l.LastPacket().After(created) {
		t.Error("LastPacket did not move on an accepted packet")
	}
	if p, ok := l.Peer(); !ok || p != addr(old.rtp) {
		t.Fatalf("latched to %v %v", p, ok)
	}

	l.SetRemote(addr(moved.rtp), false)
	send(t, old.rtp, packet(t, 8, 2, []byte("b")), to)
	send(t, moved.rtp, packet(t, 8, 3, []byte("c")), to)
	waitFor(t, "the moved party's packet", func() bool { return s.count() == 2 })
	waitFor(t, "the old party's packet to be dropped", func() bool { return l.Stats().Dropped == 1 })
	if p, _ := l.Peer(); p != addr(moved.rtp) {
		t.Fatalf("latched to %v after the move", p)
	}
	// What the core writes goes to the latched party.
	if err := l.WriteRTP(packet(t, 8, 9, []byte("z"))); err != nil {
		t.Fatal(err)
	}
	if got := read(t, moved.rtp); !bytes.Equal(got, packet(t, 8, 9, []byte("z"))) {
		t.Fatalf("party got %x", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, used := ports.Pairs(); used != 0 {
		t.Fatalf("%d pairs still in use after Close", used)
	}
}

// A party's RTCP reception reports say how the media Parley sent it
// arrived: the leg keeps the worst loss and jitter, in seconds at the
// clock rate of the party's codec.
func TestLegKeepsReportedLossAndJitter(t *testing.T) {
	ports, err := NewPorts(loopback, 30200, 30299)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ports.NewLeg()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := newParty(t)
	l.SetRemote(addr(p.rtp), true)
	to := net.UDPAddrFromAddrPort(l.Addr())
	send(t, p.rtp, packet(t, 8, 1, []byte("a")), to) // PCMA: 8 kHz
	rtcpTo := net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.Addr().Addr(), l.Addr().Port()+1))
	for _, r := range []rtcp.ReceptionReport{{SSRC: 1, FractionLost: 64, Jitter: 800}, {SSRC: 1, FractionLost: 10, Jitter: 80}} {
		b, err := rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 2, Reports: []rtcp.ReceptionReport{r}}})
		if err != nil {
			t.Fatal(err)
		}
		send(t, p.rtcp, b, rtcpTo)
	}
	waitFor(t, "two reports", func() bool { return l.Stats().Reports == 2 })
	s := l.Stats()
	if s.WorstLoss != 0.25 || s.WorstJitter != 100*time.Millisecond {
		t.Fatalf("worst loss %v, jitter %v; want 0.25 and 100ms", s.WorstLoss, s.WorstJitter)
	}
}

// A phone behind a NAT writes its private address in its SDP and sends
// from its public one (where its signalling comes from): the leg latches to
// that, from any port, and to nothing else.
func TestLegLatchesBehindNAT(t *testing.T) {
	ports, err := NewPorts(loopback, 30300, 30399)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ports.NewLeg()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := &sink{}
	l.SetPeer(s)
	private := netip.MustParseAddrPort("192.168.1.10:4000")
	l.SetRemoteVia(private, netip.MustParseAddr("127.0.0.1"))
	to := net.UDPAddrFromAddrPort(l.Addr())

	stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	peertest.Require(t, "a second loopback address (127.0.0.2)", err)
	defer stranger.Close()
	send(t, stranger, packet(t, 8, 1, []byte("x")), to)
	waitFor(t, "the stranger's packet to be dropped", func() bool { return l.Stats().Dropped == 1 })

	phone := newParty(t) // 127.0.0.1, some port
	send(t, phone.rtp, packet(t, 8, 2, []byte("a")), to)
	waitFor(t, "the phone's packet", func() bool { return s.count() == 1 })
	if p, _ := l.Peer(); p != addr(phone.rtp) {
		t.Fatalf("latched to %v", p)
	}
	// What the core sends goes where the phone's packets come from.
	if err := l.WriteRTP(packet(t, 8, 9, []byte("z"))); err != nil {
		t.Fatal(err)
	}
	if got := read(t, phone.rtp); !bytes.Equal(got, packet(t, 8, 9, []byte("z"))) {
		t.Fatalf("phone got %x", got)
	}
}
