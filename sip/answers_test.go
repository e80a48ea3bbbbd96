package sip

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestRetransmissionAnsweredAgain: over UDP a retransmitted request, which
// reaches the adapter after its transaction has ended, gets the same final
// response (status, To tag) and is not handled again: a SUBSCRIBE creates
// one subscription and one NOTIFY, not two. A retransmitted challenge is
// challenged again.
func TestRetransmissionAnsweredAgain(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	conn := dialUDP(t, a.udp)
	local := conn.LocalAddr().String()
	subscribe := rawSIP("SUBSCRIBE "+ghost+" SIP/2.0",
		"Via: SIP/2.0/UDP "+local+";rport;branch=z9hG4bK-sub-once",
		"From: <"+peerWatcher+">;tag=w1",
		"To: <"+ghost+">",
		"Call-ID: retrans-sub",
		"CSeq: 1 SUBSCRIBE",
		"Contact: <sip:watcher@"+local+">",
		"Event: presence",
		"Expires: 600",
		"Max-Forwards: 70",
	)("")
	// The answer, and the NOTIFY that follows it (answered, so that it is
	// not sent again).
	answers := func() (res string, notifies int) {
		deadline := time.Now().Add(3 * time.Second)
		buf := make([]byte, 65536)
		for time.Now().Before(deadline) {
			_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, err := conn.Read(buf)
			if err != nil {
				if res != "" {
					return res, notifies
				}
				continue
			}
			msg := string(buf[:n])
			switch {
			case strings.HasPrefix(msg, "SIP/2.0 "):
				res = msg
			case strings.HasPrefix(msg, "NOTIFY "):
				notifies++
				if _, err := conn.Write(okTo(nil, buf[:n])); err != nil {
					t.Fatal(err)
				}
			}
		}
		return res, notifies
	}
	if _, err := conn.Write([]byte(subscribe)); err != nil {
		t.Fatal(err)
	}
	first, n1 := answers()
	if _, err := conn.Write([]byte(subscribe)); err != nil {
		t.Fatal(err)
	}
	second, n2 := answers()
	if !strings.HasPrefix(first, "SIP/2.0 200") || !strings.HasPrefix(second, "SIP/2.0 200") {
		t.Fatalf("answers %q and %q, want 200 both", firstLine(first), firstLine(second))
	}
	if tag1, tag2 := toTag(first), toTag(second); tag1 == "" || tag1 != tag2 {
		t.Errorf("To tags %q and %q: the retransmission was answered in another dialog", tag1, tag2)
	}
	if n1+n2 != 1 {
		t.Errorf("%d NOTIFYs, want 1: the retransmission was handled again", n1+n2)
	}
	a.subs.mu.Lock()
	subs := len(a.subs.byKey)
	a.subs.mu.Unlock()
	if subs != 1 {
		t.Errorf("%d subscriptions, want 1", subs)
	}

	challenged := rawSIP("MESSAGE "+ghost+" SIP/2.0",
		"Via: SIP/2.0/UDP "+local+";rport;branch=z9hG4bK-challenge-once",
		"From: <sip:alice@"+testDomain+">;tag=c1",
		"To: <"+ghost+">",
		"Call-ID: retrans-challenge",
		"CSeq: 1 MESSAGE",
		"Max-Forwards: 70",
	)("hello")
	for range 2 {
		if res := exchange(t, conn, challenged); !strings.HasPrefix(res, "SIP/2.0 407") {
			t.Fatalf("answer %q, want 407", firstLine(res))
		}
	}
}

// toTag returns the tag of the To header of a raw response.
func toTag(raw string) string {
	for line := range strings.SplitSeq(raw, "\r\n") {
		if strings.HasPrefix(line, "To:") {
			_, tag, _ := strings.Cut(line, ";tag=")
			tag, _, _ = strings.Cut(tag, ";")
			return tag
		}
	}
	return ""
}

// TestAnsweredRequestsKeepLittle: what the adapter keeps of a request it
// has answered over UDP, for the retransmissions of the next 32 s, is a
// small fraction of the request: not the transaction with the parsed
// request and response. 2,000 MESSAGEs answered 202 and 2,000 answered 407
// may leave at most 512 bytes each on the heap.
func TestAnsweredRequestsKeepLittle(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: sends 4,000 requests")
	}
	cfg := testConfig()
	trustLoopback(&cfg)
	cfg.RateLimit = RateLimit{PerSecond: 1e9, Burst: 1e9}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background(), discardHost{links: newFakeHost().links}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Stop(ctx)
	})
	var udp string
	for deadline := time.Now().Add(5 * time.Second); udp == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, s := range a.Addrs() {
			if addr, ok := strings.CutPrefix(s, "udp:"); ok {
				udp = addr
			}
		}
	}
	conn, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	local := conn.LocalAddr().String()
	const n = 2000
	reqs := make([][]byte, 0, 2*n)
	for i := range n {
		for _, from := range []string{"sip:1001@pbx.example.org", "sip:alice@" + testDomain} { // trusted: 202; own user: 407
			reqs = append(reqs, []byte(rawSIP("MESSAGE "+ghost+" SIP/2.0",
				fmt.Sprintf("Via: SIP/2.0/UDP %s;rport;branch=z9hG4bK-keep-%d-%d", local, i, len(reqs)),
				"From: <"+from+">;tag=k",
				"To: <"+ghost+">",
				fmt.Sprintf("Call-ID: keep-%d-%d", i, len(reqs)),
				"CSeq: 1 MESSAGE",
				"Max-Forwards: 70",
			)(fmt.Sprint("message ", i))))
		}
	}
	buf := make([]byte, 65536)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, req := range reqs {
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	// The handlers have returned once the adapter has no request in
	// flight.
	a.inflight.Wait()
	runtime.GC()
	runtime.ReadMemStats(&after)
	kept := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / int64(len(reqs))
	t.Logf("%d requests answered: %d bytes kept on the heap for each", len(reqs), kept)
	if kept > 512 {
		t.Errorf("%d bytes kept per answered request, want at most 512", kept)
	}
}
