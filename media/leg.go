package media

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"golang.org/x/net/ipv4"
)

// maxPacket is the largest datagram a leg carries (an Ethernet MTU).
const maxPacket = 1500

// Leg is the media of one plain-RTP call leg (a SIP phone's): the RTP and
// RTCP sockets Parley offers to one party, and what it knows of that party's
// address. It is an Endpoint: from NewLeg on it reads both sockets, latches
// to its party (symmetric RTP), and forwards what the party sends to its
// peer, payloads untouched.
type Leg struct {
	ports   *Ports
	port    int
	created time.Time
	rtp     socket
	rtcp    socket
	peer    atomic.Pointer[peerRef]
	last    atomic.Int64 // nanoseconds after created of the last accepted packet
	closing atomic.Bool
	wg      sync.WaitGroup
	// counters, for both sockets
	packetsIn, bytesIn, packetsOut, bytesOut, dropped, malformed atomic.Uint64
	// what the party's RTCP reception reports said of the media it got
	// (noteRTCP), and the payload type of its last RTP packet (for the
	// clock rate of the jitter)
	quality reception
	lastPT  atomic.Uint32
}

// reception is what a party's RTCP reception reports (RFC 3550 §6.4) said
// of the media it got from Parley: how many, and the worst loss and jitter.
type reception struct {
	reports, worstLoss, worstJitter atomic.Uint64 // loss in 1/256, jitter in µs
}

// note takes the reception reports of pkts; rate is the clock rate of the
// media they report on, in which their jitter is counted.
func (q *reception) note(pkts []rtcp.Packet, rate uint64) {
	for _, p := range pkts {
		var reports []rtcp.ReceptionReport
		switch p := p.(type) {
		case *rtcp.ReceiverReport:
			reports = p.Reports
		case *rtcp.SenderReport:
			reports = p.Reports
		}
		for _, r := range reports {
			q.reports.Add(1)
			storeMax(&q.worstLoss, uint64(r.FractionLost))
			storeMax(&q.worstJitter, uint64(r.Jitter)*1_000_000/rate)
		}
	}
}

// fill sets the reception fields of s.
func (q *reception) fill(s *Stats) {
	s.Reports = q.reports.Load()
	s.WorstLoss = float64(q.worstLoss.Load()) / 256
	s.WorstJitter = time.Duration(q.worstJitter.Load()) * time.Microsecond
}

// peerRef holds a leg's peer; a *Leg peer is kept apart so that two plain
// legs exchange batches without an interface call per packet.
type peerRef struct {
	ep  Endpoint
	leg *Leg
}

// Stats are a leg's counters. In counts packets accepted from the leg's
// party, Out packets sent to it; Dropped counts packets from another source
// than the latched one (or, before latching, than the expected one);
// Malformed counts packets that are not RTP or RTCP.
type Stats struct {
	PacketsIn, BytesIn, PacketsOut, BytesOut, Dropped, Malformed uint64
	// Reports counts the RTCP reception reports the party sent about the
	// media it received from Parley; WorstLoss (0 to 1) and WorstJitter are
	// the highest fraction lost and interarrival jitter they gave.
	Reports     uint64
	WorstLoss   float64
	WorstJitter time.Duration
}

// socket is one socket of a leg and the party address it is latched to.
type socket struct {
	conn   *net.UDPConn
	batch  *ipv4.PacketConn
	remote atomic.Pointer[remote]  // where the party said it receives
	peer   atomic.Pointer[udpAddr] // the latched source, once latched
	check  func([]byte) error
}

// remote is what the leg was told of its party's address.
type remote struct {
	addr     *udpAddr // nil when unknown
	latchAny bool
	// natIP, when valid, is where the party signals from, another address
	// than its SDP gave: behind a NAT, its media comes from there too, from
	// any port.
	natIP netip.Addr
}

type udpAddr struct {
	ap  netip.AddrPort
	udp *net.UDPAddr
}

func newAddr(a netip.AddrPort) *udpAddr { return &udpAddr{ap: a, udp: net.UDPAddrFromAddrPort(a)} }

// NewLeg opens a leg on the next free pair of the range and starts reading
// its sockets. Until SetRemote it latches to no one, and until SetPeer it
// forwards nothing.
func (p *Ports) NewLeg() (*Leg, error) {
	rtp, rtcp, err := p.Open()
	if err != nil {
		return nil, err
	}
	l := &Leg{ports: p, port: rtp.LocalAddr().(*net.UDPAddr).Port, created: time.Now()}
	l.rtp.conn, l.rtcp.conn = rtp, rtcp
	l.rtp.batch, l.rtcp.batch = ipv4.NewPacketConn(rtp), ipv4.NewPacketConn(rtcp)
	l.rtp.check, l.rtcp.check = checkRTP, checkRTCP
	l.wg.Add(2)
	if p.batch > 1 {
		go l.readBatch(&l.rtp, p.batch, false)
		go l.readBatch(&l.rtcp, p.batch, true)
	} else {
		go l.read(&l.rtp, false)
		go l.read(&l.rtcp, true)
	}
	return l, nil
}

// Addr returns the leg's RTP address as its party must see it, for the
// offer or answer (the range's public address when one is set); RTCP is on
// the next port.
func (l *Leg) Addr() netip.AddrPort {
	return netip.AddrPortFrom(l.ports.public, uint16(l.port))
}

// SetRemote tells the leg where its party said it receives RTP (RTCP on the
// next port, RFC 3550 §11). Only a packet from there latches the leg, unless
// latchAny is set (the address is unknown, or the party is behind a NAT):
// then the first packet from anywhere does. It may be called at any time; a
// new address (a re-INVITE) undoes the latch, so the party's new address
// latches again.
func (l *Leg) SetRemote(rtp netip.AddrPort, latchAny bool) {
	l.setRemote(rtp, latchAny, netip.Addr{})
}

func (l *Leg) setRemote(rtp netip.AddrPort, latchAny bool, natIP netip.Addr) {
	r := &remote{latchAny: latchAny, natIP: natIP}
	rc := &remote{latchAny: latchAny, natIP: natIP}
	if rtp.IsValid() {
		r.addr = newAddr(rtp)
		rc.addr = newAddr(netip.AddrPortFrom(rtp.Addr(), rtp.Port()+1))
	}
	for _, s := range []struct {
		sock *socket
		r    *remote
	}{{&l.rtp, r}, {&l.rtcp, rc}} {
		old := s.sock.remote.Swap(s.r)
		if old == nil || old.addr == nil || s.r.addr == nil || old.addr.ap != s.r.addr.ap {
			s.sock.peer.Store(nil)
		}
	}
}

// SetRemoteVia is SetRemote for a party whose SDP came from the address
// signalling (the source of its INVITE, ACK or response): when the SDP
// names no address, the first packet from anywhere latches the leg; when it
// names signalling's own address, only a packet from there does; and when
// it names another one (a phone behind a NAT writes its private address),
// the first packet from that address or from any port of signalling's does,
// as phones behind a NAT send from their public address.
func (l *Leg) SetRemoteVia(rtp netip.AddrPort, signalling netip.Addr) {
	signalling = signalling.Unmap()
	switch {
	case !rtp.IsValid():
		l.SetRemote(rtp, true)
	case !signalling.IsValid() || rtp.Addr().Unmap() == signalling:
		l.SetRemote(rtp, false)
	default:
		l.setRemote(rtp, false, signalling)
	}
}

// Peer returns the address the leg's RTP is latched to, if any.
func (l *Leg) Peer() (netip.AddrPort, bool) {
	if p := l.rtp.peer.Load(); p != nil {
		return p.ap, true
	}
	return netip.AddrPort{}, false
}

// SetPeer implements Endpoint.
func (l *Leg) SetPeer(peer Endpoint) {
	if peer == nil {
		l.peer.Store(nil)
		return
	}
	ref := &peerRef{ep: peer}
	ref.leg, _ = peer.(*Leg)
	l.peer.Store(ref)
}

// WriteRTP implements Endpoint: it sends pkt to the party's RTP address, or
// drops it while the address is unknown.
func (l *Leg) WriteRTP(pkt []byte) error { return l.write(&l.rtp, pkt) }

// WriteRTCP implements Endpoint.
func (l *Leg) WriteRTCP(pkt []byte) error { return l.write(&l.rtcp, pkt) }

func (l *Leg) write(s *socket, pkt []byte) error {
	d := s.dest()
	if d == nil {
		return nil
	}
	if _, err := s.conn.WriteToUDPAddrPort(pkt, d.ap); err != nil {
		return err
	}
	l.packetsOut.Add(1)
	l.bytesOut.Add(uint64(len(pkt)))
	return nil
}

// LastPacket implements Endpoint.
func (l *Leg) LastPacket() time.Time { return l.created.Add(time.Duration(l.last.Load())) }

// Stats returns the leg's counters.
func (l *Leg) Stats() Stats {
	s := Stats{
		PacketsIn: l.packetsIn.Load(), BytesIn: l.bytesIn.Load(), PacketsOut: l.packetsOut.Load(),
		BytesOut: l.bytesOut.Load(), Dropped: l.dropped.Load(), Malformed: l.malformed.Load(),
	}
	l.quality.fill(&s)
	return s
}

// Close closes the leg's sockets, waits for its readers and gives its ports
// back to the range. Closing twice is harmless.
func (l *Leg) Close() error {
	if l.closing.Swap(true) {
		return nil
	}
	err := errors.Join(l.rtp.conn.Close(), l.rtcp.conn.Close())
	l.wg.Wait()
	l.ports.release(l.port)
	return err
}

// accept reports whether a packet from src may pass, latching the socket to
// src when it is the first acceptable one (symmetric RTP).
func (s *socket) accept(src netip.AddrPort) bool {
	if p := s.peer.Load(); p != nil {
		return p.ap == src
	}
	r := s.remote.Load()
	if r == nil || !r.latchAny && (r.addr == nil || r.addr.ap != src) && (!r.natIP.IsValid() || r.natIP != src.Addr()) {
		return false
	}
	s.peer.CompareAndSwap(nil, newAddr(src))
	return s.peer.Load().ap == src
}

// dest returns where to send to the socket's party: the latched source, else
// the address the party gave.
func (s *socket) dest() *udpAddr {
	if p := s.peer.Load(); p != nil {
		return p
	}
	if r := s.remote.Load(); r != nil {
		return r.addr
	}
	return nil
}

// admit checks, latches and counts one datagram from src; it returns false
// when the datagram must be dropped. Packets from anyone but the latched
// party are dropped: no injection.
func (l *Leg) admit(s *socket, b []byte, src netip.AddrPort) bool {
	if s.check(b) != nil {
		l.malformed.Add(1)
		return false
	}
	if !s.accept(netip.AddrPortFrom(src.Addr().Unmap(), src.Port())) {
		l.dropped.Add(1)
		return false
	}
	l.packetsIn.Add(1)
	l.bytesIn.Add(uint64(len(b)))
	l.last.Store(int64(time.Since(l.created)))
	if s == &l.rtcp {
		l.noteRTCP(b)
	} else {
		l.lastPT.Store(uint32(b[1] & 0x7f))
	}
	return true
}

// noteRTCP keeps the worst loss and jitter of the reception reports in an
// RTCP compound packet from the party (RFC 3550 §6.4).
func (l *Leg) noteRTCP(b []byte) {
	pkts, err := rtcp.Unmarshal(b)
	if err != nil {
		return
	}
	// The jitter is in RTP timestamp units: 8 kHz for the static payload
	// types Parley forwards (G.711, G.722), 48 kHz for Opus, the only
	// dynamic one.
	rate := uint64(48000)
	if pt := l.lastPT.Load(); pt < 96 {
		rate = 8000
	}
	l.quality.note(pkts, rate)
}

func storeMax(a *atomic.Uint64, v uint64) {
	for old := a.Load(); v > old && !a.CompareAndSwap(old, v); old = a.Load() {
	}
}

func (l *Leg) read(s *socket, rtcp bool) {
	defer l.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, _, _, src, err := s.conn.ReadMsgUDPAddrPort(buf, nil)
		if err != nil {
			if l.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		b := buf[:n]
		if !l.admit(s, b, src) {
			continue
		}
		p := l.peer.Load()
		switch {
		case p == nil:
		case rtcp:
			_ = p.ep.WriteRTCP(b)
		default:
			_ = p.ep.WriteRTP(b)
		}
	}
}

// readBatch reads up to n datagrams per system call (recvmmsg); towards
// another Leg it writes them with one system call too (sendmmsg).
func (l *Leg) readBatch(s *socket, n int, rtcp bool) {
	defer l.wg.Done()
	in := make([]ipv4.Message, n)
	out := make([]ipv4.Message, n)
	bufs := make([]byte, n*maxPacket)
	for i := range in {
		in[i].Buffers = [][]byte{bufs[i*maxPacket : (i+1)*maxPacket]}
		out[i].Buffers = make([][]byte, 1)
	}
	for {
		got, err := s.batch.ReadBatch(in, 0)
		if err != nil {
			if l.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p := l.peer.Load()
		k := 0
		for i := range got {
			b := in[i].Buffers[0][:in[i].N]
			ua, ok := in[i].Addr.(*net.UDPAddr)
			if !ok {
				l.dropped.Add(1)
				continue
			}
			if !l.admit(s, b, ua.AddrPort()) || p == nil {
				continue
			}
			if p.leg == nil {
				if rtcp {
					_ = p.ep.WriteRTCP(b)
				} else {
					_ = p.ep.WriteRTP(b)
				}
				continue
			}
			out[k].Buffers[0] = b
			k++
		}
		if k > 0 {
			to := &p.leg.rtp
			if rtcp {
				to = &p.leg.rtcp
			}
			p.leg.writeBatch(to, out[:k])
		}
	}
}

func (l *Leg) writeBatch(s *socket, out []ipv4.Message) {
	d := s.dest()
	if d == nil {
		return
	}
	for i := range out {
		out[i].Addr = d.udp
	}
	for sent := 0; sent < len(out); {
		m, err := s.batch.WriteBatch(out[sent:], 0)
		if err != nil {
			return
		}
		for _, o := range out[sent : sent+m] {
			l.packetsOut.Add(1)
			l.bytesOut.Add(uint64(len(o.Buffers[0])))
		}
		sent += m
	}
}
