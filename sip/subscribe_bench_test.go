package sip

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// discardHost is a bridges.Host that accepts every event and keeps none.
type discardHost struct{ links bridges.Links }

func (discardHost) Dispatch(context.Context, event.Event) error  { return nil }
func (discardHost) SetState(event.Network, bridges.State, error) {}
func (h discardHost) Links(event.Network) bridges.Links          { return h.links }
func (discardHost) Profile(event.Address) string                 { return "" }
func (discardHost) Reachable(event.Address)                      {}

// BenchmarkSubscriptionMemory measures the adapter's live heap per presence
// subscription: b.N SUBSCRIBEs from distinct watchers of a trusted peer,
// through the same handler as on the wire (without the transaction layer,
// whose state ends with the transaction, and without the first NOTIFY).
//
//	go test ./sip -run '^$' -bench SubscriptionMemory -benchtime 5000x
func BenchmarkSubscriptionMemory(b *testing.B) {
	cfg := testConfig()
	trustLoopback(&cfg)
	a, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Start(context.Background(), discardHost{links: newFakeHost().links}); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Stop(ctx)
	}()
	src := netip.MustParseAddr("127.0.0.1")
	p := a.peerByAddr(src)
	if p == nil {
		b.Fatal("loopback is not a trusted peer")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		raw := fmt.Sprintf("SUBSCRIBE %[1]s SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-%[2]d;rport\r\n"+
			"From: <sip:key-%[2]d@pbx.example.org>;tag=from-%[2]d\r\n"+
			"To: <%[1]s>\r\n"+
			"Call-ID: %[2]d-watcher@127.0.0.1\r\n"+
			"CSeq: 1 SUBSCRIBE\r\n"+
			"Contact: <sip:key-%[2]d@127.0.0.1:5070>\r\n"+
			"Event: presence\r\nAccept: application/pidf+xml\r\nExpires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", ghost, i)
		msg, err := sip.ParseMessage([]byte(raw))
		if err != nil {
			b.Fatal(err)
		}
		req := msg.(*sip.Request)
		req.SetTransport("UDP")
		req.SetSource("127.0.0.1:5070")
		if r := a.onSubscribe(req, src, p); r.code != 200 {
			b.Fatalf("SUBSCRIBE %d: %d %s", i, r.code, r.reason)
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(b.N), "heap-B/subscription")
	b.ReportMetric(0, "ns/op")
}
