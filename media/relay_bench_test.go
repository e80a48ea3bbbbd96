package media

import (
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRelay sends b.N G.711-sized RTP packets through one relay, with
// at most 64 in flight, and reports packets per second.
func BenchmarkRelay(b *testing.B) {
	for _, batch := range []int{1, 8} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchRelays(b, 1, batch) })
	}
}

// BenchmarkRelays spreads b.N packets over N concurrent relays, round robin,
// and reports packets per second and the memory each relay holds.
func BenchmarkRelays(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, batch := range []int{1, 8} {
			b.Run(fmt.Sprintf("relays=%d/batch=%d", n, batch), func(b *testing.B) { benchRelays(b, n, batch) })
		}
	}
}

func benchRelays(b *testing.B, n, batch int) {
	send, recv := listen(b), listen(b)
	_ = recv.SetReadBuffer(4 << 20)
	ports, err := NewPorts(loopback, 20000, 20000+4*n+10, WithBatch(batch))
	if err != nil {
		b.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	targets := make([]*net.UDPAddr, n)
	relays := make([]*Relay, n)
	for i := range n {
		la, err := ports.NewLeg()
		if err != nil {
			b.Fatal(err)
		}
		lb, err := ports.NewLeg()
		if err != nil {
			b.Fatal(err)
		}
		la.SetRemote(addr(send), false)
		lb.SetRemote(addr(recv), false)
		relays[i] = NewRelay(la, lb, RelayConfig{Timeout: time.Hour})
		targets[i] = net.UDPAddrFromAddrPort(la.Addr())
	}
	time.Sleep(10 * time.Millisecond) // let the readers park
	runtime.GC()
	runtime.ReadMemStats(&after)
	perRelay := float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse)) / float64(n)
	defer func() {
		for _, r := range relays {
			r.Close()
		}
	}()

	pkt := packet(b, 0, 1, make([]byte, 160))
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		_ = recv.SetReadDeadline(time.Now().Add(time.Minute))
		for got.Load() < int64(b.N) {
			if _, _, err := recv.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	const window = 64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		for int64(i)-got.Load() >= window {
			runtime.Gosched()
			select {
			case <-done:
				b.Fatalf("lost packets: %d of %d arrived", got.Load(), i)
			default:
			}
		}
		if _, err := send.WriteToUDPAddrPort(pkt, targets[i%n].AddrPort()); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	elapsed := time.Since(start)
	b.StopTimer()
	if got.Load() < int64(b.N) {
		b.Fatalf("lost packets: %d of %d arrived", got.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pkt/s")
	b.ReportMetric(perRelay, "B/relay")
}
