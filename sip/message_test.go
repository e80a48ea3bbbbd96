package sip

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"mime"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const ghost = "sip:alice=40example.org+xmpp@" + testDomain

// trustLoopback lets 127.0.0.0/8 in as a trusted peer for pbx.example.org,
// so that tests of the content checks need no authentication.
func trustLoopback(c *Config) {
	c.TrustedPeers = append(c.TrustedPeers, TrustedPeer{Name: "loopback", Addresses: []string{"127.0.0.0/8"}, Domains: []string{"pbx.example.org"}})
}

func TestMessageFromAuthenticatedUser(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	req := newMessage("UDP", a.udp, "sip:alice@"+testDomain, ghost, "hello XMPP")
	req.From().DisplayName = `Alice \"A\" Liddell`

	res := phone.do(req.Clone())
	if res.StatusCode != 407 || res.GetHeader("Proxy-Authenticate") == nil {
		t.Fatalf("MESSAGE without credentials: %d %s, want 407 with Proxy-Authenticate", res.StatusCode, res.Reason)
	}
	res = phone.doAuth(req, "alice", alicePassword)
	if res.StatusCode != 202 {
		t.Fatalf("MESSAGE with credentials: %d %s, want 202", res.StatusCode, res.Reason)
	}
	got := a.host.waitDispatch(t)
	want := event.Header{
		ID:       fmt.Sprintf("sip:alice@%s/%s/%d", testDomain, req.CallID().Value(), req.CSeq().SeqNo),
		From:     event.Address{Network: event.SIP, ID: "sip:alice@" + testDomain},
		To:       event.Address{Network: event.SIP, ID: ghost},
		FromName: `Alice "A" Liddell`,
	}
	if got.ID != want.ID || got.From != want.From || got.To != want.To || got.FromName != want.FromName {
		t.Errorf("dispatched %+v, want %+v", got.Header, want)
	}
	if got.Body != "hello XMPP" || time.Since(got.Time) > time.Minute {
		t.Errorf("dispatched body %q at %s", got.Body, got.Time)
	}
}

// TestMessageCredentialsInAuthorization: a client that answers a 407 as if
// it were a 401 (Authorization instead of Proxy-Authorization) is accepted.
func TestMessageCredentialsInAuthorization(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	req := newMessage("TCP", a.tcp, "sip:alice@"+testDomain, ghost, "hi")
	res := phone.do(req)
	chal, err := digest.ParseChallenge(res.GetHeader("Proxy-Authenticate").Value())
	if err != nil {
		t.Fatal(err)
	}
	cred, err := digest.Digest(chal, digest.Options{Method: "MESSAGE", URI: req.Recipient.Addr(), Username: "alice", Password: alicePassword, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	req.AppendHeader(sip.NewHeader("Authorization", cred.String()))
	req.CSeq().SeqNo++
	req.RemoveHeader("Via")
	if res := phone.do(req); res.StatusCode != 202 {
		t.Fatalf("MESSAGE with Authorization: %d %s", res.StatusCode, res.Reason)
	}
}

func TestMessageSenderRefused(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	tests := []struct {
		name           string
		from           string
		user, password string // credentials answering a challenge
		status         int
	}{
		{"external domain without trust", "sip:eve@evil.example", "", "", 403},
		{"external domain with a user's credentials", "sip:eve@evil.example", "alice", alicePassword, 403},
		{"own domain, wrong password", "sip:alice@" + testDomain, "alice", "guess", 407},
		{"own domain, unknown user", "sip:mallory@" + testDomain, "mallory", "guess", 407},
		{"own domain, someone else's credentials", "sip:bob@" + testDomain, "alice", alicePassword, 403},
		{"peer credentials for a domain it may not send from", "sip:alice@" + testDomain, peerUsername, peerPassword, 403},
		{"peer domain, wrong peer password", "sip:1001@pbx.example.org", peerUsername, "guess", 407},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newMessage("UDP", a.udp, tt.from, ghost, "hi")
			res := phone.doAuth(req, tt.user, tt.password)
			if res.StatusCode != tt.status {
				t.Fatalf("MESSAGE from %s: %d %s, want %d", tt.from, res.StatusCode, res.Reason, tt.status)
			}
		})
	}
	if evs := a.host.events(); len(evs) != 0 {
		t.Errorf("refused messages were dispatched: %v", evs)
	}
}

// TestMessageStaleNonce: the right password with a nonce from before a
// restart is challenged again with stale=true.
func TestMessageStaleNonce(t *testing.T) {
	host := newFakeHost()
	first := startAdapter(t, host, nil)
	phone := newPeerUA(t)
	res := phone.do(newMessage("UDP", first.udp, "sip:alice@"+testDomain, ghost, "hi"))
	chal, err := digest.ParseChallenge(res.GetHeader("Proxy-Authenticate").Value())
	if err != nil {
		t.Fatal(err)
	}
	second := startAdapter(t, host, nil)
	req := newMessage("UDP", second.udp, "sip:alice@"+testDomain, ghost, "hi")
	sign := func(password string) {
		cred, err := digest.Digest(chal, digest.Options{Method: "MESSAGE", URI: req.Recipient.Addr(), Username: "alice", Password: password, Count: 1})
		if err != nil {
			t.Fatal(err)
		}
		req.RemoveHeader("Proxy-Authorization")
		req.AppendHeader(sip.NewHeader("Proxy-Authorization", cred.String()))
	}
	sign(alicePassword)
	res = phone.do(req)
	if res.StatusCode != 407 || !strings.Contains(res.GetHeader("Proxy-Authenticate").Value(), "stale=true") {
		t.Fatalf("old nonce, right password: %d %v, want 407 stale=true", res.StatusCode, res.GetHeader("Proxy-Authenticate"))
	}
	sign("guess")
	req.CSeq().SeqNo++
	req.RemoveHeader("Via")
	res = phone.do(req)
	if res.StatusCode != 407 || strings.Contains(res.GetHeader("Proxy-Authenticate").Value(), "stale") {
		t.Fatalf("old nonce, wrong password: %d %v, want 407 without stale", res.StatusCode, res.GetHeader("Proxy-Authenticate"))
	}
}

func TestMessageFromTrustedPeer(t *testing.T) {
	t.Run("by address", func(t *testing.T) {
		a := startAdapter(t, nil, trustLoopback)
		phone := newPeerUA(t)
		if res := phone.do(newMessage("UDP", a.udp, "sip:1001@pbx.example.org", ghost, "from the PBX")); res.StatusCode != 202 {
			t.Fatalf("MESSAGE from the trusted address: %d %s", res.StatusCode, res.Reason)
		}
		if m := a.host.waitDispatch(t); m.From.ID != "sip:1001@pbx.example.org" {
			t.Errorf("From = %s", m.From.ID)
		}
		// The peer may not speak for the users of Parley's domain, nor for
		// domains it does not list.
		if res := phone.do(newMessage("UDP", a.udp, "sip:alice@"+testDomain, ghost, "x")); res.StatusCode != 407 {
			t.Errorf("trusted address, From our domain: %d, want 407", res.StatusCode)
		}
		if res := phone.do(newMessage("UDP", a.udp, "sip:1001@other.example", ghost, "x")); res.StatusCode != 403 {
			t.Errorf("trusted address, another domain: %d, want 403", res.StatusCode)
		}
	})
	t.Run("by credentials", func(t *testing.T) {
		a := startAdapter(t, nil, nil)
		phone := newPeerUA(t)
		res := phone.doAuth(newMessage("TCP", a.tcp, "sip:1001@pbx.example.org", ghost, "via the trunk"), peerUsername, peerPassword)
		if res.StatusCode != 202 {
			t.Fatalf("MESSAGE with the peer's credentials: %d %s", res.StatusCode, res.Reason)
		}
		if m := a.host.waitDispatch(t); m.From.ID != "sip:1001@pbx.example.org" || m.Body != "via the trunk" {
			t.Errorf("dispatched %+v", m)
		}
	})
}

func TestMessageDispatchErrors(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	phone := newPeerUA(t)
	tests := []struct {
		err        error
		status     int
		retryAfter bool
	}{
		{fmt.Errorf("resolve: %w", bridges.ErrNoRoute), 404, false},
		{fmt.Errorf("resolve: %w", bridges.ErrRefused), 403, false},
		{errStorage, 503, true},
		{context.DeadlineExceeded, 503, true},
	}
	for _, tt := range tests {
		a.host.setDispatchErr(func(event.Event) error { return tt.err })
		res := phone.do(newMessage("UDP", a.udp, "sip:1001@pbx.example.org", ghost, "hi"))
		if res.StatusCode != tt.status || (res.GetHeader("Retry-After") != nil) != tt.retryAfter {
			t.Errorf("Dispatch error %v: %d %s (Retry-After %v), want %d", tt.err, res.StatusCode, res.Reason, res.GetHeader("Retry-After"), tt.status)
		}
	}
}

func TestMessageContent(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	phone := newPeerUA(t)
	cpim := "From: <sip:1001@pbx.example.org>\r\nTo: <" + ghost + ">\r\nDateTime: 2025-01-01T12:00:00Z\r\n\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nwrapped ☺"
	tests := []struct {
		name        string
		contentType string // "-" for none
		encoding    string
		body        string
		status      int
		want        string // dispatched body
		accept      bool   // 415 with Accept
	}{
		{name: "text/plain UTF-8", contentType: "text/plain;charset=UTF-8", body: "grüß dich", status: 202, want: "grüß dich"},
		{name: "text/plain without charset", contentType: "text/plain", body: "hi", status: 202, want: "hi"},
		{name: "no Content-Type", contentType: "-", body: "hi", status: 202, want: "hi"},
		{name: "US-ASCII", contentType: `Text/Plain; charset="us-ascii"`, body: "hi", status: 202, want: "hi"},
		{name: "CPIM", contentType: "message/cpim", body: cpim, status: 202, want: "wrapped ☺"},
		{name: "Latin-1", contentType: "text/plain;charset=ISO-8859-1", body: "gr\xfc\xdf", status: 415, accept: true},
		{name: "HTML", contentType: "text/html", body: "<b>hi</b>", status: 415, accept: true},
		{name: "is-composing", contentType: "application/im-iscomposing+xml", body: "<x/>", status: 415, accept: true},
		{name: "CPIM of HTML", contentType: "message/cpim", body: strings.Replace(cpim, "text/plain; charset=utf-8", "text/html", 1), status: 415, accept: true},
		{name: "malformed CPIM", contentType: "message/cpim", body: "no blank line", status: 400},
		{name: "gzip", contentType: "text/plain", encoding: "gzip", body: "hi", status: 415},
		{name: "not UTF-8", contentType: "text/plain;charset=utf-8", body: "gr\xfc\xdf", status: 400},
		{name: "empty", contentType: "text/plain", body: "", status: 400},
		{name: "malformed Content-Type", contentType: "text/", body: "hi", status: 400},
		{name: "largest allowed", contentType: "text/plain", body: strings.Repeat("x", DefaultMaxMessageSize), status: 202, want: strings.Repeat("x", DefaultMaxMessageSize)},
		{name: "too large", contentType: "text/plain", body: strings.Repeat("x", DefaultMaxMessageSize+1), status: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(sip.MESSAGE, "TCP", a.tcp, ghost, "sip:1001@pbx.example.org", ghost)
			if tt.contentType != "-" {
				req.AppendHeader(sip.NewHeader("Content-Type", tt.contentType))
			}
			if tt.encoding != "" {
				req.AppendHeader(sip.NewHeader("Content-Encoding", tt.encoding))
			}
			req.SetBody([]byte(tt.body))
			res := phone.do(req)
			if res.StatusCode != tt.status {
				t.Fatalf("%d %s, want %d", res.StatusCode, res.Reason, tt.status)
			}
			if tt.accept {
				if h := res.GetHeader("Accept"); h == nil || h.Value() != acceptTypes {
					t.Errorf("415 Accept = %v, want %q", h, acceptTypes)
				}
			}
			if tt.status == 202 {
				if m := a.host.waitDispatch(t); m.Body != tt.want {
					t.Errorf("dispatched %q, want %q", m.Body, tt.want)
				}
			}
		})
	}
}

func TestMessageAddressing(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	phone := newPeerUA(t)
	// A proxy rewrote the Request-URI to Parley's address: To names the
	// recipient.
	req := newRequest(sip.MESSAGE, "UDP", a.udp, "sip:ghost@"+a.udp, "sip:1001@pbx.example.org", ghost)
	req.SetBody([]byte("rewritten"))
	if res := phone.do(req); res.StatusCode != 202 {
		t.Fatalf("Request-URI rewritten: %d %s", res.StatusCode, res.Reason)
	}
	if m := a.host.waitDispatch(t); m.To.ID != ghost {
		t.Errorf("To = %s, want %s", m.To.ID, ghost)
	}
	// Not for Parley's domain at all.
	req = newMessage("UDP", a.udp, "sip:1001@pbx.example.org", "sip:bob@elsewhere.example", "relay me")
	if res := phone.do(req); res.StatusCode != 404 {
		t.Errorf("MESSAGE for another domain: %d %s, want 404", res.StatusCode, res.Reason)
	}
}

// TestMessageRetransmission: a retransmission is absorbed by the server
// transaction; a resend of the request in a new transaction (same Call-ID
// and CSeq) gets the same event ID, so the core recognises it.
func TestMessageRetransmission(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	raw := func(branch string) string {
		return rawSIP("MESSAGE "+ghost+" SIP/2.0",
			"Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch="+branch,
			"From: <sip:1001@pbx.example.org>;tag=t1",
			"To: <"+ghost+">",
			"Call-ID: retrans-1",
			"CSeq: 7 MESSAGE",
			"Max-Forwards: 70",
			"Content-Type: text/plain",
		)("once")
	}
	conn := dialUDP(t, a.udp)
	for range 2 {
		if res := exchange(t, conn, raw("z9hG4bK-one")); !strings.HasPrefix(res, "SIP/2.0 202") {
			t.Fatalf("response %q", firstLine(res))
		}
	}
	if res := exchange(t, conn, raw("z9hG4bK-two")); !strings.HasPrefix(res, "SIP/2.0 202") {
		t.Fatalf("response %q", firstLine(res))
	}
	first, second := a.host.waitDispatch(t), a.host.waitDispatch(t)
	if first.ID != "sip:1001@pbx.example.org/retrans-1/7" || second.ID != first.ID {
		t.Errorf("IDs %q and %q", first.ID, second.ID)
	}
	select {
	case m := <-a.host.dispatchCh:
		t.Errorf("the retransmission was dispatched too: %+v", m)
	case <-time.After(200 * time.Millisecond):
	}
}

// --- golden files ---

// goldenResult is what a golden file records for one raw request.
type goldenResult struct {
	ParseError string       `json:"parse_error,omitempty"`
	Status     int          `json:"status,omitempty"`
	Reason     string       `json:"reason,omitempty"`
	Headers    []string     `json:"headers,omitempty"`
	Event      *goldenEvent `json:"event,omitempty"`
}

type goldenEvent struct {
	ID       string `json:"id"`
	From     string `json:"from"`
	To       string `json:"to"`
	FromName string `json:"from_name,omitempty"`
	Body     string `json:"body"`
}

// goldenAdapter is the adapter the golden files are run against (not
// started: translation needs no network).
func goldenAdapter(t testing.TB) *Adapter {
	a, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// parseRaw parses a test request: "\n" line ends become CRLF, and a first
// line "#source ADDR" sets the source address (by default 192.0.2.10:5060,
// the trusted peer "pbx").
func parseRaw(data []byte) (*sip.Request, error) {
	source := "192.0.2.10:5060"
	if rest, ok := bytes.CutPrefix(data, []byte("#source ")); ok {
		line, after, _ := bytes.Cut(rest, []byte("\n"))
		source, data = string(bytes.TrimSpace(line)), after
	}
	data = bytes.ReplaceAll(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
	msg, err := sip.ParseMessage(data)
	if err != nil {
		return nil, err
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		return nil, errors.New("not a request")
	}
	req.SetSource(source)
	req.SetTransport("UDP")
	return req, nil
}

// runInbound runs a raw request through the adapter's inbound checks and
// translation, as handle and onMessage do before dispatching.
func runInbound(a *Adapter, req *sip.Request, now time.Time) (*event.Message, *reply) {
	if r := unsupportedExtensions(req); r != nil {
		return nil, r
	}
	src := sourceIP(req)
	return a.inboundMessage(req, src, a.peerByAddr(src), now)
}

func TestInboundGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/inbound/*.sip")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	a := goldenAdapter(t)
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".sip")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var got goldenResult
			req, err := parseRaw(data)
			if err != nil {
				got.ParseError = err.Error()
			} else {
				evt, r := runInbound(a, req, now)
				if r != nil {
					got.Status, got.Reason = r.code, r.reason
					for _, h := range r.headers {
						v := h.Value()
						if strings.HasSuffix(h.Name(), "-Authenticate") {
							v = "<challenge>"
						}
						got.Headers = append(got.Headers, h.Name()+": "+v)
					}
				} else {
					if !evt.Time.Equal(now) {
						t.Errorf("event time %s, want %s", evt.Time, now)
					}
					got.Event = &goldenEvent{ID: evt.ID, From: evt.From.ID, To: evt.To.ID, FromName: evt.FromName, Body: evt.Body}
				}
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if err := enc.Encode(got); err != nil {
				t.Fatal(err)
			}
			out := buf.Bytes()
			golden := strings.TrimSuffix(file, ".sip") + ".golden"
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./sip -run TestInboundGolden -update)", err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("%s differs:\n--- got\n%s--- want\n%s", golden, out, want)
			}
		})
	}
}

// FuzzInboundMessage runs raw bytes (seeds: testdata/inbound and RFC
// 4475's messages) through sipgo's parser and the adapter's inbound checks
// and translation: nothing may panic, and an event
// that comes out must be well formed.
func FuzzInboundMessage(f *testing.F) {
	files, _ := filepath.Glob("testdata/inbound/*.sip")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err == nil {
			f.Add(data)
		}
	}
	msgs, err := tortureMessages()
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range msgs {
		f.Add(m)
	}
	f.Add([]byte("MESSAGE sip:x@parley.localhost SIP/2.0\r\n\r\n"))
	f.Add([]byte("\x00\xff garbage"))
	a := goldenAdapter(f)
	now := time.Now()
	codec := AddressCodec{}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := parseRaw(data)
		if err != nil {
			return
		}
		evt, r := runInbound(a, req, now)
		if r != nil {
			if evt != nil || r.code < 400 || r.code > 699 {
				t.Fatalf("reply %d with event %v", r.code, evt)
			}
			return
		}
		if evt == nil {
			t.Fatal("neither an event nor a reply")
		}
		if _, _, err := codec.Split(evt.From.ID); err != nil {
			t.Errorf("From %q: %v", evt.From.ID, err)
		}
		if _, host, err := codec.Split(evt.To.ID); err != nil || host != testDomain {
			t.Errorf("To %q: %v", evt.To.ID, err)
		}
		if evt.Body == "" || !utf8.ValidString(evt.Body) || len(evt.Body) > DefaultMaxMessageSize {
			t.Errorf("body %q", evt.Body)
		}
		if !strings.HasPrefix(evt.ID, evt.From.ID+"/") {
			t.Errorf("ID %q does not start with the sender", evt.ID)
		}
	})
}

// --- raw SIP over UDP ---

// rawSIP joins a start line and headers with CRLF and returns a function
// that appends a body with its Content-Length.
func rawSIP(lines ...string) func(body string) string {
	return func(body string) string {
		return strings.Join(lines, "\r\n") + fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n", len(body)) + body
	}
}

func dialUDP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// exchange writes a datagram (none when msg is empty) and returns the
// first response.
func exchange(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	if msg != "" {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no response to %q: %v", firstLine(msg), err)
	}
	return string(buf[:n])
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

func TestSourceIP(t *testing.T) {
	req := sip.NewRequest(sip.MESSAGE, sip.Uri{Host: "x"})
	for src, want := range map[string]string{"192.0.2.1:5060": "192.0.2.1", "[::ffff:192.0.2.1]:5060": "192.0.2.1", "[2001:db8::1]:5060": "2001:db8::1", "garbage": "invalid IP"} {
		req.SetSource(src)
		if got := sourceIP(req); got.String() != want {
			t.Errorf("sourceIP(%q) = %s, want %s", src, got, want)
		}
	}
}

// FuzzPlainText: the shortcut for the usual content type accepts only what
// mime.ParseMediaType reads as text/plain with an accepted charset.
func FuzzPlainText(f *testing.F) {
	for _, s := range []string{"text/plain", "text/plain;charset=UTF-8", "Text/Plain ; charset = \"us-ascii\"", "text/plain;charset=latin1",
		"text/plain;", "text/plain;charset=", "text/plain;charset=utf-8;format=flowed", "text/html", "text/plain;charset=\"utf-8", "message/cpim"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ct string) {
		if !plainText(ct) {
			return
		}
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil || mt != "text/plain" || !textCharset(params["charset"]) {
			t.Errorf("plainText(%q) but mime reads %q %v %v", ct, mt, params, err)
		}
	})
}
