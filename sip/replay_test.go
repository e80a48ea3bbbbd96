package sip

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/parleygw/parley/bridges"
)

// These tests replay captured credentials and guess passwords the way an
// attacker on the path or on the network would (issue 8, point 6).

// lockedBuffer is a bytes.Buffer safe for the adapter's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startLoggedAdapter is startAdapter with options, and the adapter's log, at
// info, kept in a buffer.
func startLoggedAdapter(t *testing.T, opts ...Option) (*testAdapter, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	host := newFakeHost()
	opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))}, opts...)
	a, err := New(testConfig(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Stop(ctx)
	})
	host.waitState(t, bridges.Connected)
	ta := &testAdapter{Adapter: a, host: host}
	for _, s := range a.Addrs() {
		network, addr, _ := strings.Cut(s, ":")
		switch network {
		case "udp":
			ta.udp = addr
		case "tcp":
			ta.tcp = addr
		}
	}
	return ta, logs
}

// replay sends req again as a new request (new Via branch and, unless
// keepCallID, a new Call-ID) carrying the header name with value.
func replay(p *peerUA, req *sip.Request, name, value string) *sip.Response {
	p.t.Helper()
	req.RemoveHeader(name)
	req.AppendHeader(sip.NewHeader(name, value))
	return p.do(req)
}

func isStale(res *sip.Response, name string) bool {
	h := res.GetHeader(name)
	return h != nil && strings.Contains(h.Value(), "stale=true")
}

// TestReplayedMessageRefused: the Proxy-Authorization of an accepted
// MESSAGE, sent again with a new Call-ID, CSeq, branch and body, is
// challenged again (stale=true) and not delivered; sent with another
// Request-URI and To, it is refused.
func TestReplayedMessageRefused(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	orig := newMessage("UDP", a.udp, "sip:alice@"+testDomain, ghost, "hello")
	if res := phone.doAuth(orig, "alice", alicePassword); res.StatusCode != 202 {
		t.Fatalf("MESSAGE with credentials: %d %s", res.StatusCode, res.Reason)
	}
	a.host.waitDispatch(t)
	captured := orig.GetHeader("Proxy-Authorization").Value()

	t.Run("same Request-URI", func(t *testing.T) {
		req := newMessage("UDP", a.udp, "sip:alice@"+testDomain, ghost, "I owe mallory 100 EUR")
		res := replay(phone, req, "Proxy-Authorization", captured)
		if res.StatusCode != 407 || !isStale(res, "Proxy-Authenticate") {
			t.Fatalf("replayed MESSAGE: %d %s, want 407 with stale=true", res.StatusCode, res.Reason)
		}
	})
	t.Run("another Request-URI and To", func(t *testing.T) {
		other := "sip:bob=40example.org+xmpp@" + testDomain
		req := newMessage("UDP", a.udp, "sip:alice@"+testDomain, other, "to someone else")
		res := replay(phone, req, "Proxy-Authorization", captured)
		if res.StatusCode != 400 && res.StatusCode != 407 {
			t.Fatalf("replayed MESSAGE to another Request-URI: %d %s, want 400 or 407", res.StatusCode, res.Reason)
		}
	})
	t.Run("over TCP", func(t *testing.T) {
		req := newMessage("TCP", a.tcp, "sip:alice@"+testDomain, ghost, "again")
		res := replay(phone, req, "Proxy-Authorization", captured)
		if res.StatusCode != 407 {
			t.Fatalf("replayed MESSAGE over TCP: %d %s, want 407", res.StatusCode, res.Reason)
		}
	})
	time.Sleep(100 * time.Millisecond)
	if evs := a.host.events(); len(evs) != 1 {
		t.Errorf("%d messages dispatched, want only the original", len(evs))
	}
	// The phone itself goes on: a new challenge, a new nonce.
	if res := phone.doAuth(newMessage("UDP", a.udp, "sip:alice@"+testDomain, ghost, "still me"), "alice", alicePassword); res.StatusCode != 202 {
		t.Fatalf("alice after the replays: %d %s", res.StatusCode, res.Reason)
	}
}

// TestDigestURIMismatchRefused: credentials for one Request-URI sent with
// another are refused with 400 (RFC 2617 §3.2.2.5), though the response is
// right for the uri they name.
func TestDigestURIMismatchRefused(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	req := newMessage("UDP", a.udp, "sip:alice@"+testDomain, ghost, "hi")
	res := phone.do(req.Clone())
	chal := res.GetHeader("Proxy-Authenticate").Value()
	nonce := chal[strings.Index(chal, `nonce="`)+7:]
	nonce = nonce[:strings.IndexByte(nonce, '"')]
	uri := "sip:bob=40example.org+xmpp@" + testDomain
	ha2 := md5Hex("MESSAGE:" + uri)
	resp := md5Hex(ha1("alice", testDomain, alicePassword) + ":" + nonce + ":00000001:c1:auth:" + ha2)
	cred := `Digest username="alice", realm="` + testDomain + `", nonce="` + nonce + `", uri="` + uri +
		`", response="` + resp + `", algorithm=MD5, qop=auth, nc=00000001, cnonce="c1"`
	res = replay(phone, req, "Proxy-Authorization", cred)
	if res.StatusCode != 400 {
		t.Fatalf("credentials for %s sent to %s: %d %s, want 400", uri, req.Recipient.String(), res.StatusCode, res.Reason)
	}
	if evs := a.host.events(); len(evs) != 0 {
		t.Errorf("dispatched %v", evs)
	}
}

// TestReplayedRegisterRefused: the Authorization of an accepted REGISTER,
// sent again with a new Call-ID, neither adds an attacker's Contact nor
// removes the user's bindings with Contact: * and Expires: 0.
func TestReplayedRegisterRefused(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	orig := newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:5999>", 600)
	if res := phone.doAuth(orig, "alice", alicePassword); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d %s", res.StatusCode, res.Reason)
	}
	captured := orig.GetHeader("Authorization").Value()

	res := replay(phone, newRegister("UDP", a.udp, "alice", "<sip:alice@203.0.113.66:5060>", 3600), "Authorization", captured)
	if res.StatusCode != 401 || !isStale(res, "WWW-Authenticate") {
		t.Errorf("replayed REGISTER with another Contact: %d %s, want 401 with stale=true", res.StatusCode, res.Reason)
	}
	res = replay(phone, newRegister("UDP", a.udp, "alice", "*", 0), "Authorization", captured)
	if res.StatusCode != 401 {
		t.Errorf("replayed REGISTER with Contact: * and Expires: 0: %d %s, want 401", res.StatusCode, res.Reason)
	}
	bs := storedBindings(t, a.host, "alice")
	if len(bs) != 1 || bs[0].Contact != "sip:alice@127.0.0.1:5999" {
		t.Errorf("bindings after the replays: %+v, want only the phone's", bs)
	}
}

// TestPasswordGuessingBackedOff: after a few wrong passwords, credentials
// from the same source are no longer checked for a while (even the right
// password is challenged again), an unknown user gets exactly the same
// answers as an existing one, and each failure is logged at info with the
// source address and the username. The adapter's clock stands still, so
// that the back-off cannot end during the test.
func TestPasswordGuessingBackedOff(t *testing.T) {
	// run guesses 8 wrong passwords of user, then the right one of alice's,
	// at a new adapter, and returns the answers and the adapter's log.
	run := func(user string) ([]string, string) {
		a, logs := startLoggedAdapter(t, func(a *Adapter) { a.now = func() time.Time { return time.Unix(1_800_000_000, 0) } })
		phone := newPeerUA(t)
		var answers []string
		for i := range 9 {
			password := "guess" + string(rune('a'+i))
			if i == 8 {
				password = alicePassword
			}
			res := phone.doAuth(newMessage("UDP", a.udp, "sip:"+user+"@"+testDomain, ghost, "guess"), user, password)
			answer := fmt.Sprintf("%d %s", res.StatusCode, res.Reason)
			for _, h := range res.GetHeaders("Proxy-Authenticate") {
				v := h.Value()
				nonce := v[strings.Index(v, `nonce="`)+7:]
				answer += " | " + strings.Replace(v, nonce[:strings.IndexByte(nonce, '"')], "N", 1)
			}
			answers = append(answers, answer)
		}
		if evs := a.host.events(); len(evs) != 0 {
			t.Errorf("%s: dispatched during the back-off: %v", user, evs)
		}
		return answers, logs.String()
	}
	alice, aliceLog := run("alice")
	mallory, malloryLog := run("mallory")
	for i := range alice {
		if !strings.HasPrefix(alice[i], "407 ") || strings.Contains(alice[i], "stale") {
			t.Errorf("alice's attempt %d: %s, want a plain 407", i, alice[i])
		}
		if alice[i] != mallory[i] {
			t.Errorf("attempt %d: alice got %q, mallory (who does not exist) %q", i, alice[i], mallory[i])
		}
	}
	for user, log := range map[string]string{"alice": aliceLog, "mallory": malloryLog} {
		want := `msg="sip authentication failed" source=127.0.0.1 user=` + user
		if n := strings.Count(log, want); n <= backoffFree {
			t.Errorf("%d info lines %q, want more than %d:\n%s", n, want, backoffFree, log)
		}
		if !strings.Contains(log, `msg="sip authentication backed off" source=127.0.0.1 user=`+user) {
			t.Errorf("no back-off line for %s:\n%s", user, log)
		}
	}
}

// TestSHA256Digest: with digest_algorithms [SHA-256, MD5], a 401 and a 407
// carry two challenges, SHA-256 first, and a client that takes the first
// (sipgo's, with icholy/digest) authenticates with SHA-256.
func TestSHA256Digest(t *testing.T) {
	a := startAdapter(t, nil, func(c *Config) {
		c.DigestAlgorithms = []string{AlgorithmSHA256, AlgorithmMD5}
		c.Users["bob"] = User{HA1: ha1("bob", testDomain, bobPassword), HA1SHA256: ha1SHA256("bob", testDomain, bobPassword)}
	})
	phone := newPeerUA(t)
	res := phone.do(newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:5999>", 600))
	hs := res.GetHeaders("WWW-Authenticate")
	if res.StatusCode != 401 || len(hs) != 2 || !strings.Contains(hs[0].Value(), "algorithm=SHA-256") || !strings.Contains(hs[1].Value(), "algorithm=MD5") {
		t.Fatalf("REGISTER without credentials: %d %s %v, want 401 with SHA-256 then MD5", res.StatusCode, res.Reason, hs)
	}
	req := newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:5999>", 600)
	if res := phone.doAuth(req, "alice", alicePassword); res.StatusCode != 200 {
		t.Fatalf("REGISTER with SHA-256 credentials: %d %s", res.StatusCode, res.Reason)
	}
	if v := req.GetHeader("Authorization").Value(); !strings.Contains(v, "algorithm=SHA-256") {
		t.Errorf("the client answered %q, want SHA-256", v)
	}
	msg := newMessage("UDP", a.udp, "sip:alice@"+testDomain, ghost, "hashed harder")
	if res := phone.doAuth(msg, "alice", alicePassword); res.StatusCode != 202 {
		t.Fatalf("MESSAGE with SHA-256 credentials: %d %s", res.StatusCode, res.Reason)
	}
	if res := phone.doAuth(newRegister("TCP", a.tcp, "bob", "<sip:bob@127.0.0.1:5999;transport=tcp>", 600), "bob", bobPassword); res.StatusCode != 200 {
		t.Fatalf("REGISTER of bob (ha1_sha256): %d %s", res.StatusCode, res.Reason)
	}
	if res := phone.doAuth(newMessage("UDP", a.udp, "sip:alice@"+testDomain, ghost, "x"), "alice", "guess"); res.StatusCode != 407 {
		t.Fatalf("MESSAGE with a wrong SHA-256 password: %d %s", res.StatusCode, res.Reason)
	}
}

// TestFail2banFilter: the fail2ban filter of docs/fail2ban.md finds the
// source address in what the adapter logs for a wrong password, and not in
// a username made to look like another address.
func TestFail2banFilter(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "fail2ban.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(doc), "failregex = ")
	text, _, _ := strings.Cut(rest, "\n")
	re, err := regexp.Compile(strings.Replace(text, "<ADDR>", `(?P<addr>[0-9.]+|[0-9a-fA-F:]+)`, 1))
	if err != nil {
		t.Fatalf("failregex %q: %v", text, err)
	}
	a, logs := startLoggedAdapter(t)
	phone := newPeerUA(t)
	for _, user := range []string{"alice", `x source=192.0.2.99 y`} {
		if res := phone.doAuth(newMessage("UDP", a.udp, "sip:alice@"+testDomain, ghost, "x"), user, "guess"); res.StatusCode != 407 {
			t.Fatalf("wrong password: %d %s", res.StatusCode, res.Reason)
		}
	}
	var found []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			found = append(found, m[re.SubexpIndex("addr")])
		}
	}
	if len(found) != 2 || found[0] != "127.0.0.1" || found[1] != "127.0.0.1" {
		t.Errorf("the filter found %q, want 127.0.0.1 twice, in:\n%s", found, logs.String())
	}
}

// TestExpiredNonceStale: the right password with a nonce older than 5
// minutes is challenged again with stale=true, for REGISTER (401) and
// MESSAGE (407), and the client's retry with the new nonce is accepted.
func TestExpiredNonceStale(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Unix(1_800_000_000, 0).UnixNano())
	a, _ := startLoggedAdapter(t, func(a *Adapter) { a.now = func() time.Time { return time.Unix(0, clock.Load()) } })
	phone := newPeerUA(t)
	for _, tt := range []struct {
		req          *sip.Request
		chal, answer string
		status       int
	}{
		{newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:5999>", 600), "WWW-Authenticate", "Authorization", 200},
		{newMessage("UDP", a.udp, "sip:alice@"+testDomain, ghost, "late"), "Proxy-Authenticate", "Proxy-Authorization", 202},
	} {
		res := phone.do(tt.req.Clone())
		chal, err := digest.ParseChallenge(res.GetHeader(tt.chal).Value())
		if err != nil {
			t.Fatal(err)
		}
		clock.Add(int64(nonceTTL + time.Second))
		cred, err := digest.Digest(chal, digest.Options{Method: string(tt.req.Method), URI: tt.req.Recipient.String(), Username: "alice", Password: alicePassword, Count: 1})
		if err != nil {
			t.Fatal(err)
		}
		res = replay(phone, tt.req.Clone(), tt.answer, cred.String())
		if res.StatusCode != 401 && res.StatusCode != 407 || !isStale(res, tt.chal) {
			t.Fatalf("%s with an expired nonce: %d %s %v, want a challenge with stale=true", tt.req.Method, res.StatusCode, res.Reason, res.GetHeader(tt.chal))
		}
		chal, _ = digest.ParseChallenge(res.GetHeader(tt.chal).Value())
		cred, _ = digest.Digest(chal, digest.Options{Method: string(tt.req.Method), URI: tt.req.Recipient.String(), Username: "alice", Password: alicePassword, Count: 1})
		if res := replay(phone, tt.req.Clone(), tt.answer, cred.String()); res.StatusCode != tt.status {
			t.Fatalf("%s after stale=true: %d %s, want %d", tt.req.Method, res.StatusCode, res.Reason, tt.status)
		}
	}
}
