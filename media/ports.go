// Package media carries the media of calls: an RTP relay between two legs,
// each leg a pair of UDP sockets (RTP on an even port, RTCP on the next) from
// a configured port range. Payloads are forwarded untouched (no transcoding),
// RFC 4733 telephone events included. Symmetric RTP with latching keeps
// third parties from injecting media into a call.
package media

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// ErrExhausted is returned when every port pair of the range is in use.
var ErrExhausted = errors.New("media port range exhausted")

// Ports hands out RTP/RTCP port pairs from a range. It is safe for concurrent
// use.
type Ports struct {
	addr     netip.Addr
	public   netip.Addr // what offers and answers say; addr unless set
	batch    int
	min, max int // even min; pairs are (p, p+1) with p+1 <= max
	mu       sync.Mutex
	used     map[int]bool
	next     int
}

// Option sets an optional property of a port range.
type Option func(*Ports)

// WithPublic makes legs announce a instead of the address they bind, for a
// gateway behind a 1:1 NAT.
func WithPublic(a netip.Addr) Option { return func(p *Ports) { p.public = a } }

// WithBatch makes each leg read up to n datagrams per system call
// (recvmmsg), and write as many at once to another plain leg (sendmmsg); 0
// or 1 reads and writes one at a time. Batching pays with few busy legs and
// costs with many (about 80 KiB of buffers per leg, and slower with 1,000
// legs; see relay_bench_test.go), so it is off unless asked for.
func WithBatch(n int) Option { return func(p *Ports) { p.batch = n } }

// NewPorts returns an allocator of the pairs in [min, max] on addr.
func NewPorts(addr netip.Addr, min, max int, opts ...Option) (*Ports, error) {
	if !addr.IsValid() {
		return nil, errors.New("media ports: no address")
	}
	if min%2 == 1 {
		min++
	}
	if min < 1024 || max > 65535 || max < min+1 {
		return nil, fmt.Errorf("media ports: range %d-%d holds no pair above 1023", min, max)
	}
	p := &Ports{addr: addr, public: addr, min: min, max: max, used: map[int]bool{}, next: min}
	for _, o := range opts {
		o(p)
	}
	if !p.public.IsValid() {
		p.public = addr
	}
	return p, nil
}

// Range returns the range's first and last port, for messages and metrics.
func (p *Ports) Range() (min, max int) { return p.min, p.max }

// Pairs returns how many pairs the range has and how many are in use.
func (p *Ports) Pairs() (total, inUse int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return (p.max - p.min + 1) / 2, len(p.used)
}

// Open binds the next free pair: RTP on an even port, RTCP on the next. A
// pair that another program holds is skipped. After a sweep of the whole
// range without success it returns ErrExhausted.
func (p *Ports) Open() (rtp, rtcp *net.UDPConn, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	total := (p.max - p.min + 1) / 2
	for range total {
		port := p.next
		p.next += 2
		if p.next+1 > p.max {
			p.next = p.min
		}
		if p.used[port] {
			continue
		}
		rtp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.addr, uint16(port))))
		if err != nil {
			continue
		}
		rtcp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.addr, uint16(port+1))))
		if err != nil {
			rtp.Close()
			continue
		}
		p.used[port] = true
		return rtp, rtcp, nil
	}
	return nil, nil, fmt.Errorf("open RTP ports in %d-%d: %w", p.min, p.max, ErrExhausted)
}

func (p *Ports) release(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.used, port)
}
