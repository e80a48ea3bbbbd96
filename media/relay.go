package media

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/parleygw/parley/event"
)

// maxPacket is the largest datagram the relay carries (an Ethernet MTU).
const maxPacket = 1500

// RelayConfig sets a relay's timeout and I/O.
type RelayConfig struct {
	// Timeout ends the call when no packet (RTP or RTCP, from either leg)
	// was accepted for this long; 0 means 60 s.
	Timeout time.Duration
	// OnTimeout is called once, from the relay's timer goroutine, with
	// event.HangupMediaTimeout. It must not block.
	OnTimeout func(event.HangupReason)
	// Batch is how many datagrams one system call reads or writes
	// (recvmmsg/sendmmsg); 0 or 1 reads and writes one at a time.
	Batch int
}

// Relay forwards RTP and RTCP between two legs, payloads untouched. It runs
// one reader goroutine per socket (four) until Close.
type Relay struct {
	a, b    *Leg
	cfg     RelayConfig
	start   time.Time
	last    atomic.Int64 // nanoseconds since start of the last accepted packet
	timer   *time.Timer
	wg      sync.WaitGroup
	once    sync.Once
	closing atomic.Bool
}

// NewRelay starts relaying between a and b. The relay owns both legs from
// now on: Close closes them.
func NewRelay(a, b *Leg, cfg RelayConfig) *Relay {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	r := &Relay{a: a, b: b, cfg: cfg, start: time.Now()}
	r.timer = time.AfterFunc(cfg.Timeout, r.checkTimeout)
	r.wg.Add(4)
	go r.pump(a, &a.rtp, b, &b.rtp, checkRTP)
	go r.pump(b, &b.rtp, a, &a.rtp, checkRTP)
	go r.pump(a, &a.rtcp, b, &b.rtcp, checkRTCP)
	go r.pump(b, &b.rtcp, a, &a.rtcp, checkRTCP)
	return r
}

// Close stops the relay, closes both legs and waits for its goroutines.
func (r *Relay) Close() error {
	r.closing.Store(true)
	r.timer.Stop()
	err := r.a.Close()
	if err2 := r.b.Close(); err == nil {
		err = err2
	}
	r.wg.Wait()
	return err
}

func (r *Relay) checkTimeout() {
	if r.closing.Load() {
		return
	}
	idle := time.Since(r.start) - time.Duration(r.last.Load())
	if idle < r.cfg.Timeout {
		r.timer.Reset(r.cfg.Timeout - idle)
		return
	}
	r.once.Do(func() {
		if r.cfg.OnTimeout != nil {
			r.cfg.OnTimeout(event.HangupMediaTimeout)
		}
	})
}

// admit decides for one datagram read on from's endpoint src: it returns
// false when the datagram must be dropped.
func (r *Relay) admit(from *Leg, src *endpoint, b []byte, addr net.Addr, check func([]byte) error) bool {
	if check(b) != nil {
		from.malformed.Add(1)
		return false
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		from.dropped.Add(1)
		return false
	}
	return r.admitAddr(from, src, b, netipUnmap(ua.AddrPort()))
}

// admitAddr latches or checks the source of a well-formed datagram and counts
// it. Packets from anyone but the latched party are dropped: no injection.
func (r *Relay) admitAddr(from *Leg, src *endpoint, b []byte, addr netip.AddrPort) bool {
	if !src.accept(addr) {
		from.dropped.Add(1)
		return false
	}
	from.packetsIn.Add(1)
	from.bytesIn.Add(uint64(len(b)))
	r.last.Store(int64(time.Since(r.start)))
	return true
}

func netipUnmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func (r *Relay) pump(from *Leg, src *endpoint, to *Leg, dst *endpoint, check func([]byte) error) {
	defer r.wg.Done()
	if r.cfg.Batch > 1 {
		r.pumpBatch(from, src, to, dst, check)
		return
	}
	buf := make([]byte, maxPacket)
	for {
		n, _, _, addr, err := src.conn.ReadMsgUDPAddrPort(buf, nil)
		if err != nil {
			if r.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		b := buf[:n]
		if check(b) != nil {
			from.malformed.Add(1)
			continue
		}
		if !r.admitAddr(from, src, b, netipUnmap(addr)) {
			continue
		}
		p := dst.dest()
		if p == nil {
			continue
		}
		if _, err := dst.conn.WriteToUDPAddrPort(b, p.addr); err == nil {
			to.packetsOut.Add(1)
			to.bytesOut.Add(uint64(n))
		}
	}
}

func (r *Relay) pumpBatch(from *Leg, src *endpoint, to *Leg, dst *endpoint, check func([]byte) error) {
	in := make([]ipv4.Message, r.cfg.Batch)
	out := make([]ipv4.Message, r.cfg.Batch)
	bufs := make([]byte, r.cfg.Batch*maxPacket)
	for i := range in {
		in[i].Buffers = [][]byte{bufs[i*maxPacket : (i+1)*maxPacket]}
		out[i].Buffers = make([][]byte, 1)
	}
	for {
		n, err := src.batch.ReadBatch(in, 0)
		if err != nil {
			if r.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p := dst.dest()
		k := 0
		for i := range n {
			b := in[i].Buffers[0][:in[i].N]
			if !r.admit(from, src, b, in[i].Addr, check) || p == nil {
				continue
			}
			out[k].Buffers[0] = b
			out[k].Addr = p.udp
			k++
		}
		for sent := 0; sent < k; {
			m, err := dst.batch.WriteBatch(out[sent:k], 0)
			if err != nil {
				break
			}
			for _, o := range out[sent : sent+m] {
				to.packetsOut.Add(1)
				to.bytesOut.Add(uint64(len(o.Buffers[0])))
			}
			sent += m
		}
	}
}
