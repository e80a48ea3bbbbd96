package sip

import (
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestMain keeps sipgo's few records that ignore the injected logger (it
// logs connection reference counts through slog.Default) out of the test
// output.
func TestMain(m *testing.M) {
	if os.Getenv("PARLEY_SIP_LOG") == "" {
		slog.SetDefault(slog.New(slog.DiscardHandler))
	}
	os.Exit(m.Run())
}

// options returns a raw OPTIONS request from 127.0.0.1 with rport, so that
// the response comes back to the sending socket.
func options(branch string) string {
	return rawSIP("OPTIONS sip:"+testDomain+" SIP/2.0",
		"Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bK-"+branch,
		"From: <sip:probe@example.org>;tag=p1",
		"To: <sip:"+testDomain+">",
		"Call-ID: options-"+branch,
		"CSeq: 1 OPTIONS",
		"Max-Forwards: 70",
	)("")
}

func TestOptions(t *testing.T) {
	a := startAdapter(t, nil, nil)
	res := newPeerUA(t).do(newRequest(sip.OPTIONS, "UDP", a.udp, "sip:"+testDomain, "sip:probe@example.org", "sip:"+testDomain))
	if res.StatusCode != 200 {
		t.Fatalf("OPTIONS: %d %s", res.StatusCode, res.Reason)
	}
	for name, want := range map[string]string{"Allow": allowMethods, "Accept": acceptTypes, "Server": DefaultUserAgent} {
		if h := res.GetHeader(name); h == nil || h.Value() != want {
			t.Errorf("%s = %v, want %q", name, h, want)
		}
	}
}

func TestMethodsNotHandled(t *testing.T) {
	a := startAdapter(t, nil, nil)
	conn := dialUDP(t, a.udp)
	for i, tt := range []struct {
		method string
		status string
	}{
		{"NOTIFY", "405"},
		{"BYE", "481"}, // no call
		{"INFO", "405"},
		{"FROBNICATE", "501"},
		{"CANCEL", "481"},
	} {
		branch := "m" + strconv.Itoa(i)
		raw := rawSIP(tt.method+" sip:alice@"+testDomain+" SIP/2.0",
			"Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bK-"+branch,
			"From: <sip:probe@example.org>;tag=p1",
			"To: <sip:alice@"+testDomain+">",
			"Call-ID: other-"+branch,
			"CSeq: 1 "+tt.method,
			"Max-Forwards: 70",
		)("")
		res := exchange(t, conn, raw)
		if !strings.HasPrefix(res, "SIP/2.0 "+tt.status+" ") {
			t.Errorf("%s: %q, want %s", tt.method, firstLine(res), tt.status)
		}
		if tt.status != "481" && !strings.Contains(res, "Allow: "+allowMethods) {
			t.Errorf("%s answered without Allow:\n%s", tt.method, res)
		}
	}
}

// TestMalformedRequests: what sipgo parses but SIP forbids is answered 400
// (or 416), and the adapter keeps serving.
func TestMalformedRequests(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	conn := dialUDP(t, a.udp)
	via := func(b string) string { return "Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bK-" + b }
	tests := []struct {
		name   string
		raw    string
		status string
	}{
		{"no From", rawSIP("MESSAGE "+ghost+" SIP/2.0", via("a"), "To: <"+ghost+">", "Call-ID: a", "CSeq: 1 MESSAGE")("x"), "400"},
		{"no To", rawSIP("MESSAGE "+ghost+" SIP/2.0", via("b"), "From: <sip:1001@pbx.example.org>;tag=1", "Call-ID: b", "CSeq: 1 MESSAGE")("x"), "400"},
		{"no Call-ID", rawSIP("MESSAGE "+ghost+" SIP/2.0", via("c"), "From: <sip:1001@pbx.example.org>;tag=1", "To: <"+ghost+">", "CSeq: 1 MESSAGE")("x"), "400"},
		{"no CSeq", rawSIP("MESSAGE "+ghost+" SIP/2.0", via("d"), "From: <sip:1001@pbx.example.org>;tag=1", "To: <"+ghost+">", "Call-ID: d")("x"), "400"},
		{"From without host", rawSIP("MESSAGE "+ghost+" SIP/2.0", via("f"), "From: <sip:1001@>;tag=1", "To: <"+ghost+">", "Call-ID: f", "CSeq: 1 MESSAGE")("x"), "400"},
		{"tel: Request-URI", rawSIP("MESSAGE tel:+4930123 SIP/2.0", via("g"), "From: <sip:1001@pbx.example.org>;tag=1", "To: <"+ghost+">", "Call-ID: g", "CSeq: 1 MESSAGE")("x"), "416"},
		{"REGISTER without To", rawSIP("REGISTER sip:"+testDomain+" SIP/2.0", via("h"), "From: <sip:alice@"+testDomain+">;tag=1", "Call-ID: h", "CSeq: 1 REGISTER")(""), "400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res := exchange(t, conn, tt.raw); !strings.HasPrefix(res, "SIP/2.0 "+tt.status+" ") {
				t.Fatalf("%q, want %s", firstLine(res), tt.status)
			}
		})
	}
	if res := exchange(t, conn, options("after")); !strings.HasPrefix(res, "SIP/2.0 200 ") {
		t.Fatalf("OPTIONS after malformed requests: %q", firstLine(res))
	}
}

// TestGarbage: datagrams and streams that are not SIP are dropped without
// an answer (a request with a Via gets a 400), and disturb nothing: the next
// request is served.
func TestGarbage(t *testing.T) {
	a := startAdapter(t, nil, nil)
	conn := dialUDP(t, a.udp)
	full := options("full")
	garbage := []string{
		"\x00\x01\x02\x03\xff\xfe",
		"hello, world",
		"\r\n\r\n",
		"INVITE\r\n\r\n",
		"SIP/2.0 200 OK\r\n\r\n",
		full[:len(full)/2], // truncated: no blank line after the headers
		strings.Replace(full, "Content-Length: 0", "Content-Length: 500", 1), // body shorter than announced
		"MESSAGE sip:x@" + testDomain + " SIP/2.0\r\nVia: garbage\r\n\r\n",
		// A header sipgo cannot parse makes the whole message unparsable.
		strings.Replace(full, "From: <sip:probe@example.org>", "From: <sip:probe@example.org", 1),
		strings.Repeat("A", 30000),
	}
	for _, g := range garbage {
		if _, err := conn.Write([]byte(g)); err != nil {
			t.Fatal(err)
		}
	}
	// Over TCP, a malformed stream is closed, and others are not affected.
	tcp, err := net.Dial("tcp", a.tcp)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = tcp.Write([]byte("NOT SIP AT ALL\r\nContent-Length: x\r\n\r\n"))
	_ = tcp.Close()

	// Requests with a Via are answered 400 (see TestTorture); the answer to
	// the OPTIONS comes after them.
	res := exchange(t, conn, options("next"))
	for !strings.Contains(res, "Call-ID: options-next") {
		res = exchange(t, conn, "")
	}
	if !strings.HasPrefix(res, "SIP/2.0 200 ") {
		t.Fatalf("OPTIONS after garbage: %q", firstLine(res))
	}
	// And the adapter still works end to end.
	phone := newPeerUA(t)
	register(t, phone, "TCP", a.tcp, "alice", alicePassword, "<sip:alice@127.0.0.1:5999;transport=tcp>")
}

func TestRateLimit(t *testing.T) {
	a := startAdapter(t, nil, func(c *Config) {
		c.RateLimit = RateLimit{PerSecond: 0.5, Burst: 3}
	})
	conn := dialUDP(t, a.udp)
	var limited string
	for i := range 5 {
		res := exchange(t, conn, options("rl"+strconv.Itoa(i)))
		if strings.HasPrefix(res, "SIP/2.0 503 ") {
			limited = res
			if i < 3 {
				t.Errorf("request %d was limited within the burst", i)
			}
		}
	}
	if limited == "" {
		t.Fatal("5 requests at once with a burst of 3 were not limited")
	}
	if !strings.Contains(limited, "Retry-After: 2") && !strings.Contains(limited, "Retry-After: 1") {
		t.Errorf("503 without a fitting Retry-After:\n%s", limited)
	}
}

// TestRateLimitSparesTrustedPeers: a trusted peer's address carries many
// users' traffic and is not limited.
func TestRateLimitSparesTrustedPeers(t *testing.T) {
	a := startAdapter(t, nil, func(c *Config) {
		c.RateLimit = RateLimit{PerSecond: 0.5, Burst: 1}
		trustLoopback(c)
	})
	conn := dialUDP(t, a.udp)
	for i := range 5 {
		if res := exchange(t, conn, options("tp"+strconv.Itoa(i))); !strings.HasPrefix(res, "SIP/2.0 200 ") {
			t.Fatalf("request %d from a trusted peer: %q", i, firstLine(res))
		}
	}
}
