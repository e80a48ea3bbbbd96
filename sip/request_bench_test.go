package sip

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/internal/peertest"
)

// BenchmarkRequest measures what the adapter allocates and spends per SIP
// request it handles, through the whole stack as on the wire: a UDP
// datagram in, sipgo's parser and server transaction, the adapter's
// handler, the response (and, for SUBSCRIBE, the NOTIFY) out. The client
// side writes prepared datagrams and reads into one buffer, so B/op and
// allocs/op are the adapter's and sipgo's. The host accepts every event
// and stores nothing (the store has its own benchmarks). MESSAGE comes
// from a user of the domain with digest credentials (a new nonce count
// each time) and is answered 202; MESSAGE-challenge is the same without
// credentials, answered 407, as every first attempt of a phone is;
// SUBSCRIBE is a new presence subscription from a trusted peer, answered
// 200, then the first NOTIFY, which the client answers 200.
//
//	go test ./sip -run '^$' -bench Request -benchmem
func BenchmarkRequest(b *testing.B) {
	b.Run("MESSAGE", func(b *testing.B) { benchMessage(b, true) })
	b.Run("MESSAGE-challenge", func(b *testing.B) { benchMessage(b, false) })
	b.Run("SUBSCRIBE", benchSubscribe)
}

// processCPU measures the CPU time this process spends from now until the
// returned function is called, and reports it per op as cpu-µs/op: less
// sensitive to other load on the machine than ns/op. It counts the
// benchmark's client too, whose share is small (a write and a read).
func processCPU(b *testing.B) func() {
	b.Helper()
	t0, err := peertest.CPUTime(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	return func() {
		t1, _ := peertest.CPUTime(os.Getpid())
		b.ReportMetric(float64((t1-t0).Microseconds())/float64(b.N), "cpu-µs/op")
	}
}

// benchAdapter starts an adapter with a discarding host, loopback trusted
// for pbx.example.org and no rate limit in the way, and a UDP socket
// connected to it.
func benchAdapter(b *testing.B) (*Adapter, *net.UDPConn) {
	b.Helper()
	cfg := testConfig()
	trustLoopback(&cfg)
	cfg.RateLimit = RateLimit{PerSecond: 1e9, Burst: 1e9}
	a, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	host := discardHost{links: newFakeHost().links}
	if err := a.Start(context.Background(), host); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
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
	if udp == "" {
		b.Fatal("the UDP listener did not bind")
	}
	raddr, err := net.ResolveUDPAddr("udp", udp)
	if err != nil {
		b.Fatal(err)
	}
	conn, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return a, conn
}

// roundTrip writes req and reads datagrams into buf until one starts with
// want (a status line prefix); it returns that datagram.
func roundTrip(b *testing.B, conn *net.UDPConn, buf, req []byte, want string) []byte {
	if _, err := conn.Write(req); err != nil {
		b.Fatal(err)
	}
	for {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			b.Fatalf("no %q: %v", want, err)
		}
		if bytes.HasPrefix(buf[:n], []byte(want)) {
			return buf[:n]
		}
		if bytes.HasPrefix(buf[:n], []byte("SIP/2.0 ")) {
			b.Fatalf("want %q, got %q", want, firstLine(string(buf[:n])))
		}
	}
}

func benchMessage(b *testing.B, authenticated bool) {
	a, conn := benchAdapter(b)
	local := conn.LocalAddr().String()
	buf := make([]byte, 65536)
	message := func(i int, credentials string) []byte {
		lines := []string{
			"MESSAGE " + ghost + " SIP/2.0",
			fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bK-bench-%d;rport", local, i),
			fmt.Sprintf("From: <sip:alice@%s>;tag=bench-%d", testDomain, i),
			"To: <" + ghost + ">",
			fmt.Sprintf("Call-ID: bench-%d@127.0.0.1", i),
			"CSeq: 1 MESSAGE",
			"Max-Forwards: 70",
			"User-Agent: bench",
			"Content-Type: text/plain;charset=UTF-8",
		}
		if credentials != "" {
			lines = append(lines, credentials)
		}
		return []byte(rawSIP(lines...)(fmt.Sprintf("benchmark message %d", i)))
	}
	// Prepared before the timer: each request its own transaction.
	reqs := make([][]byte, b.N)
	want := "SIP/2.0 407"
	if authenticated {
		res := roundTrip(b, conn, buf, message(-1, ""), "SIP/2.0 407")
		_, rest, _ := strings.Cut(string(res), `nonce="`)
		nonce, _, _ := strings.Cut(rest, `"`)
		ha2 := md5Hex("MESSAGE:" + ghost)
		h1 := ha1("alice", a.auth.realm, alicePassword)
		for i := range reqs {
			nc := fmt.Sprintf("%08x", i+1)
			response := md5Hex(h1 + ":" + nonce + ":" + nc + ":benchcnonce:auth:" + ha2)
			reqs[i] = message(i, fmt.Sprintf(`Proxy-Authorization: Digest username="alice", realm="%s", nonce="%s", uri="%s", `+
				`response="%s", algorithm=MD5, qop=auth, nc=%s, cnonce="benchcnonce"`, a.auth.realm, nonce, ghost, response, nc))
		}
		want = "SIP/2.0 202"
	} else {
		for i := range reqs {
			reqs[i] = message(i, "")
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	defer processCPU(b)()
	for i := range b.N {
		roundTrip(b, conn, buf, reqs[i], want)
	}
}

func benchSubscribe(b *testing.B) {
	a, conn := benchAdapter(b)
	local := conn.LocalAddr().String()
	buf := make([]byte, 65536)
	reqs := make([][]byte, b.N)
	for i := range reqs {
		reqs[i] = []byte(rawSIP(
			"SUBSCRIBE "+ghost+" SIP/2.0",
			fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bK-bench-%d;rport", local, i),
			fmt.Sprintf("From: <sip:key-%d@pbx.example.org>;tag=bench-%d", i, i),
			"To: <"+ghost+">",
			fmt.Sprintf("Call-ID: bench-%d@127.0.0.1", i),
			"CSeq: 1 SUBSCRIBE",
			fmt.Sprintf("Contact: <sip:key-%d@%s>", i, local),
			"Event: presence",
			"Accept: application/pidf+xml",
			"Expires: 3600",
			"Max-Forwards: 70",
		)(""))
	}
	answer := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.ResetTimer()
	defer processCPU(b)()
	for i := range b.N {
		if i > 0 && i%10000 == 0 {
			// Far from the adapter's limit of subscriptions: end them
			// (not measured).
			b.StopTimer()
			a.inflight.Wait()
			a.subs.closeAll()
			a.subs = newSubscriptions()
			b.StartTimer()
		}
		if _, err := conn.Write(reqs[i]); err != nil {
			b.Fatal(err)
		}
		// The 200 and the NOTIFY, in either order; the NOTIFY answered.
		var ok, notified bool
		for !ok || !notified {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				b.Fatalf("SUBSCRIBE %d: 200 %v, NOTIFY %v: %v", i, ok, notified, err)
			}
			msg := buf[:n]
			switch {
			case bytes.HasPrefix(msg, []byte("SIP/2.0 200")):
				ok = true
			case bytes.HasPrefix(msg, []byte("NOTIFY ")):
				notified = true
				answer = okTo(answer[:0], msg)
				if _, err := conn.Write(answer); err != nil {
					b.Fatal(err)
				}
			default:
				b.Fatalf("SUBSCRIBE %d: unexpected %q", i, firstLine(string(msg)))
			}
		}
	}
}

// okTo appends to dst a 200 OK answering the request req: its Via, From,
// To, Call-ID and CSeq lines copied, without allocating.
func okTo(dst, req []byte) []byte {
	dst = append(dst, "SIP/2.0 200 OK\r\n"...)
	for line := range bytes.SplitSeq(req, []byte("\r\n")) {
		if len(line) == 0 {
			break
		}
		for _, name := range [...]string{"Via:", "From:", "To:", "Call-ID:", "CSeq:", "v:", "f:", "t:", "i:"} {
			if len(line) >= len(name) && bytes.EqualFold(line[:len(name)], []byte(name)) {
				dst = append(dst, line...)
				dst = append(dst, "\r\n"...)
				break
			}
		}
	}
	return append(dst, "Content-Length: 0\r\n\r\n"...)
}
