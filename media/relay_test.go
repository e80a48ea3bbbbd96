package media

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/parleygw/parley/event"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// party is a phone: an RTP and an RTCP socket on loopback.
type party struct {
	rtp, rtcp *net.UDPConn
}

func newParty(t testing.TB) *party {
	t.Helper()
	p := &party{rtp: listen(t), rtcp: listen(t)}
	return p
}

func listen(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t testing.TB, c *net.UDPConn, b []byte, to *net.UDPAddr) {
	t.Helper()
	if _, err := c.WriteToUDP(b, to); err != nil {
		t.Fatal(err)
	}
}

func addr(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

func packet(t testing.TB, pt uint8, seq uint16, payload []byte) []byte {
	t.Helper()
	b, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 0x1234}, Payload: payload}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func read(t testing.TB, c *net.UDPConn) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read on %s: %v", c.LocalAddr(), err)
	}
	return buf[:n]
}

// pair sets up a relay whose leg a expects pa and leg b expects pb.
func pair(t testing.TB, pa, pb *party, batch int, cfg RelayConfig) (*Relay, *Leg, *Leg) {
	t.Helper()
	ports, err := NewPorts(loopback, 30000, 30099, WithBatch(batch))
	if err != nil {
		t.Fatal(err)
	}
	a, err := ports.NewLeg()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ports.NewLeg()
	if err != nil {
		t.Fatal(err)
	}
	if pa != nil {
		a.SetRemote(addr(pa.rtp), false)
	} else {
		a.SetRemote(netip.AddrPort{}, true)
	}
	b.SetRemote(addr(pb.rtp), false)
	r := NewRelay(a, b, cfg)
	t.Cleanup(func() { r.Close() })
	return r, a, b
}

// expectRTCP makes l expect its party's RTCP at a, not on the port after its
// RTP.
func expectRTCP(l *Leg, a netip.AddrPort) {
	l.rtcp.remote.Store(&remote{addr: newAddr(a)})
	l.rtcp.peer.Store(nil)
}

func TestRelayBothWaysByteExact(t *testing.T) {
	for _, batch := range []int{1, 8} {
		t.Run(map[int]string{1: "single", 8: "batched"}[batch], func(t *testing.T) {
			pa, pb := newParty(t), newParty(t)
			// pb's RTP and RTCP ports must be adjacent for the RTCP default:
			// take RTCP from the expected address explicitly instead.
			_, a, b := pair(t, pa, pb, batch, RelayConfig{})
			expectRTCP(b, addr(pb.rtcp))
			expectRTCP(a, addr(pa.rtcp))
			toA := net.UDPAddrFromAddrPort(a.Addr())
			toB := net.UDPAddrFromAddrPort(b.Addr())
			for i := range 20 {
				pcmu := bytes.Repeat([]byte{byte(i), 0xff, 0x00, 0x7f}, 40)
				want := packet(t, 0, uint16(i), pcmu)
				if _, err := pa.rtp.WriteToUDP(want, toA); err != nil {
					t.Fatal(err)
				}
				if got := read(t, pb.rtp); !bytes.Equal(got, want) {
					t.Fatalf("a→b packet %d changed: %x, want %x", i, got, want)
				}
				// RFC 4733 event (digit 5, end bit, volume 10, duration 800).
				dtmf := packet(t, 101, uint16(1000+i), []byte{5, 0x80 | 10, 0x03, 0x20})
				if _, err := pb.rtp.WriteToUDP(dtmf, toB); err != nil {
					t.Fatal(err)
				}
				if got := read(t, pa.rtp); !bytes.Equal(got, dtmf) {
					t.Fatalf("b→a telephone-event %d changed: %x, want %x", i, got, dtmf)
				}
			}
			// RTCP: an empty receiver report each way, on the next port.
			rr := []byte{0x80, 201, 0x00, 0x01, 0, 0, 0x12, 0x34}
			if _, err := pa.rtcp.WriteToUDP(rr, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(a.Addr().Port()) + 1}); err != nil {
				t.Fatal(err)
			}
			if got := read(t, pb.rtcp); !bytes.Equal(got, rr) {
				t.Fatalf("RTCP a→b: %x", got)
			}
			if _, err := pb.rtcp.WriteToUDP(rr, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(b.Addr().Port()) + 1}); err != nil {
				t.Fatal(err)
			}
			if got := read(t, pa.rtcp); !bytes.Equal(got, rr) {
				t.Fatalf("RTCP b→a: %x", got)
			}
			// A leg counts a packet out after its write returns, so the
			// last packet may be read before it is counted: wait for the
			// counts to settle, within a bound.
			want := func(sa, sb Stats) bool {
				return sa.PacketsIn == 21 && sb.PacketsIn == 21 && sa.PacketsOut == 21 && sb.PacketsOut == 21 && sa.Dropped+sb.Dropped == 0
			}
			sa, sb := a.Stats(), b.Stats()
			for deadline := time.Now().Add(2 * time.Second); !want(sa, sb) && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
				sa, sb = a.Stats(), b.Stats()
			}
			if !want(sa, sb) {
				t.Errorf("stats a %+v, b %+v", sa, sb)
			}
		})
	}
}

func TestRelayLatchingDropsThirdParty(t *testing.T) {
	for _, batch := range []int{1, 8} {
		t.Run(map[int]string{1: "single", 8: "batched"}[batch], func(t *testing.T) {
			pa, pb, intruder := newParty(t), newParty(t), newParty(t)
			// Leg a does not know its party's address (NAT): the first
			// packet latches it.
			_, a, b := pair(t, nil, pb, batch, RelayConfig{})
			toA := net.UDPAddrFromAddrPort(a.Addr())
			toB := net.UDPAddrFromAddrPort(b.Addr())
			first := packet(t, 8, 1, []byte("first"))
			send(t, pa.rtp, first, toA)
			if got := read(t, pb.rtp); !bytes.Equal(got, first) {
				t.Fatalf("first packet: %x", got)
			}
			if p, ok := a.Peer(); !ok || p != addr(pa.rtp) {
				t.Fatalf("leg a latched to %v, %v, want %v", p, ok, addr(pa.rtp))
			}
			// The intruder sends to both legs: nothing of it may pass.
			bleed := packet(t, 8, 2, []byte("injected"))
			send(t, intruder.rtp, bleed, toA)
			send(t, intruder.rtp, bleed, toB) // b expects pb only
			// A marker from the real parties proves the bleed was not queued
			// before it.
			marker := packet(t, 8, 3, []byte("marker"))
			send(t, pa.rtp, marker, toA)
			if got := read(t, pb.rtp); !bytes.Equal(got, marker) {
				t.Fatalf("b's party got %q, want the marker", got)
			}
			send(t, pb.rtp, marker, toB)
			if got := read(t, pa.rtp); !bytes.Equal(got, marker) {
				t.Fatalf("a's party got %q, want the marker", got)
			}
			_ = intruder.rtp.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, _, err := intruder.rtp.ReadFrom(make([]byte, 100)); err == nil {
				t.Fatalf("the intruder received %d bytes", n)
			}
			if a.Stats().Dropped != 1 || b.Stats().Dropped != 1 {
				t.Errorf("dropped: a %d, b %d, want 1 each", a.Stats().Dropped, b.Stats().Dropped)
			}
			// Malformed packets from the latched party are dropped too.
			send(t, pa.rtp, []byte{0x00, 1, 2}, toA)
			send(t, pa.rtp, marker, toA)
			if got := read(t, pb.rtp); !bytes.Equal(got, marker) {
				t.Fatalf("after a malformed packet b's party got %x", got)
			}
			if a.Stats().Malformed != 1 {
				t.Errorf("malformed: %d", a.Stats().Malformed)
			}
		})
	}
}

func TestRelayMediaTimeout(t *testing.T) {
	pa, pb := newParty(t), newParty(t)
	fired := make(chan event.HangupReason, 2)
	_, a, _ := pair(t, pa, pb, 1, RelayConfig{Timeout: 100 * time.Millisecond, OnTimeout: func(r event.HangupReason) { fired <- r }})
	// Traffic keeps the call alive for a while, then stops.
	for i := range 5 {
		send(t, pa.rtp, packet(t, 0, uint16(i), []byte("x")), net.UDPAddrFromAddrPort(a.Addr()))
		time.Sleep(30 * time.Millisecond)
	}
	select {
	case r := <-fired:
		if r != event.HangupMediaTimeout {
			t.Fatalf("reason %v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no media timeout")
	}
	if a.Stats().PacketsIn != 5 {
		t.Errorf("packets in: %d", a.Stats().PacketsIn)
	}
	select {
	case <-fired:
		t.Fatal("the timeout fired twice")
	case <-time.After(300 * time.Millisecond):
	}
}

func TestPortsExhaustAndRelease(t *testing.T) {
	ports, err := NewPorts(loopback, 31001, 31006) // pairs 31002/3, 31004/5
	if err != nil {
		t.Fatal(err)
	}
	if total, _ := ports.Pairs(); total != 2 {
		t.Fatalf("pairs %d, want 2", total)
	}
	l1, err := ports.NewLeg()
	if err != nil {
		t.Fatal(err)
	}
	l2, err := ports.NewLeg()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []*Leg{l1, l2} {
		if l.Addr().Port()%2 != 0 {
			t.Errorf("RTP on odd port %d", l.Addr().Port())
		}
	}
	if _, err := ports.NewLeg(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("third leg: %v, want ErrExhausted", err)
	}
	l1.Close()
	l3, err := ports.NewLeg()
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	if l3.Addr() != l1.Addr() {
		t.Errorf("reused %v, want %v", l3.Addr(), l1.Addr())
	}
	// A pair held by another program is skipped.
	l2.Close()
	l3.Close()
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 31003})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	l4, err := ports.NewLeg()
	if err != nil || l4.Addr().Port() != 31004 {
		t.Fatalf("with 31003 taken: %v, %v", l4, err)
	}
	l4.Close()
	for _, bad := range [][2]int{{80, 2000}, {40000, 40000}, {60000, 70000}} {
		if _, err := NewPorts(loopback, bad[0], bad[1]); err == nil {
			t.Errorf("range %v accepted", bad)
		}
	}
}
