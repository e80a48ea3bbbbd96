package media

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"

	"golang.org/x/net/ipv4"
)

// Leg is one side of a relayed call: the RTP and RTCP sockets Parley offers
// to one party, and what it knows of that party's address.
type Leg struct {
	ports *Ports
	port  int
	rtp   endpoint
	rtcp  endpoint
	// counters, for both sockets
	packetsIn, bytesIn, packetsOut, bytesOut, dropped, malformed atomic.Uint64
}

// Stats are a leg's counters. In counts packets accepted from the leg's
// party, Out packets sent to it; Dropped counts packets from another source
// than the latched one (or, before latching, than the expected one);
// Malformed counts packets that are not RTP or RTCP.
type Stats struct {
	PacketsIn, BytesIn, PacketsOut, BytesOut, Dropped, Malformed uint64
}

// endpoint is one socket of a leg and the peer it is latched to.
type endpoint struct {
	conn     *net.UDPConn
	batch    *ipv4.PacketConn
	expected netip.AddrPort
	toExpect *peer // expected, made once
	latchAny bool
	peer     atomic.Pointer[peer]
}

type peer struct {
	addr netip.AddrPort
	udp  *net.UDPAddr
}

// NewLeg opens a leg on the next free pair of the range.
func (p *Ports) NewLeg() (*Leg, error) {
	rtp, rtcp, err := p.Open()
	if err != nil {
		return nil, err
	}
	l := &Leg{ports: p, port: rtp.LocalAddr().(*net.UDPAddr).Port}
	l.rtp.conn, l.rtcp.conn = rtp, rtcp
	l.rtp.batch, l.rtcp.batch = ipv4.NewPacketConn(rtp), ipv4.NewPacketConn(rtcp)
	return l, nil
}

// Addr returns the leg's local RTP address, for the offer or answer to its
// party; RTCP is on the next port.
func (l *Leg) Addr() netip.AddrPort {
	return netip.AddrPortFrom(l.ports.addr, uint16(l.port))
}

// SetRemote tells the leg where its party said it receives RTP (RTCP on the
// next port, RFC 3550 §11). Only a packet from there latches the leg, unless
// latchAny is set (the address is unknown, or the party is behind a NAT):
// then the first packet from anywhere does. Call it before NewRelay.
func (l *Leg) SetRemote(rtp netip.AddrPort, latchAny bool) {
	l.rtp.latchAny, l.rtcp.latchAny = latchAny, latchAny
	l.rtp.expect(rtp)
	if rtp.IsValid() {
		l.rtcp.expect(netip.AddrPortFrom(rtp.Addr(), rtp.Port()+1))
	}
}

func (e *endpoint) expect(a netip.AddrPort) {
	e.expected, e.toExpect = a, nil
	if a.IsValid() {
		e.toExpect = &peer{addr: a, udp: net.UDPAddrFromAddrPort(a)}
	}
}

// Peer returns the address the leg's RTP is latched to, if any.
func (l *Leg) Peer() (netip.AddrPort, bool) {
	if p := l.rtp.peer.Load(); p != nil {
		return p.addr, true
	}
	return netip.AddrPort{}, false
}

// Stats returns the leg's counters.
func (l *Leg) Stats() Stats {
	return Stats{
		PacketsIn: l.packetsIn.Load(), BytesIn: l.bytesIn.Load(), PacketsOut: l.packetsOut.Load(),
		BytesOut: l.bytesOut.Load(), Dropped: l.dropped.Load(), Malformed: l.malformed.Load(),
	}
}

// Close closes the leg's sockets and gives its ports back to the range.
func (l *Leg) Close() error {
	err := errors.Join(l.rtp.conn.Close(), l.rtcp.conn.Close())
	l.ports.release(l.port)
	return err
}

// accept reports whether a packet from src may pass, latching the endpoint
// to src when it is the first acceptable one (symmetric RTP).
func (e *endpoint) accept(src netip.AddrPort) bool {
	if p := e.peer.Load(); p != nil {
		return p.addr == src
	}
	if e.latchAny || src == e.expected {
		e.peer.CompareAndSwap(nil, &peer{addr: src, udp: net.UDPAddrFromAddrPort(src)})
		return e.peer.Load().addr == src
	}
	return false
}

// dest returns where to send to the endpoint's party: the latched peer, else
// the expected address.
func (e *endpoint) dest() *peer {
	if p := e.peer.Load(); p != nil {
		return p
	}
	return e.toExpect
}
