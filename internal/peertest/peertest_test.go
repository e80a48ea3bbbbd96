package peertest

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The testing types are what peertest's TB stands for.
var (
	_ TB = (*testing.T)(nil)
	_ TB = (*testing.B)(nil)
)

func TestDirAndFreePort(t *testing.T) {
	d := Dir()
	if os.Getenv("PARLEY_PEERS") == "" && !strings.HasSuffix(d, filepath.Join(".cache", "peers")) {
		t.Errorf("Dir() = %q, want <repo>/.cache/peers", d)
	}
	p := FreePort(t)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Fatalf("FreePort %d not usable: %v", p, err)
	}
	l.Close()
}

// xmppConn is a tiny raw XMPP client: enough to check that the servers speak.
type xmppConn struct {
	t    *testing.T
	c    net.Conn
	r    *bufio.Reader
	seen strings.Builder
}

func dialXMPP(t *testing.T, addr string) *xmppConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &xmppConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (x *xmppConn) send(s string) {
	x.t.Helper()
	if _, err := io.WriteString(x.c, s); err != nil {
		x.t.Fatalf("write: %v", err)
	}
}

// until reads until the received text (since the last call) contains one of
// the markers and returns that text and the marker found.
func (x *xmppConn) until(markers ...string) (string, string) {
	x.t.Helper()
	x.seen.Reset()
	buf := make([]byte, 4096)
	for {
		s := x.seen.String()
		for _, m := range markers {
			if strings.Contains(s, m) {
				return s, m
			}
		}
		n, err := x.r.Read(buf)
		x.seen.Write(buf[:n])
		if err != nil {
			x.t.Fatalf("read (waiting for %q): %v; got %q", markers, err, x.seen.String())
		}
	}
}

func c2sLogin(t *testing.T, p *Prosody, user, password string) bool {
	t.Helper()
	x := dialXMPP(t, p.C2SAddr)
	x.send(`<?xml version='1.0'?><stream:stream to='` + p.Domain + `' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`)
	feats, _ := x.until("</stream:features>")
	if !strings.Contains(feats, "<mechanism>PLAIN</mechanism>") {
		t.Fatalf("c2s offers no PLAIN mechanism: %s", feats)
	}
	cred := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	x.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>` + cred + `</auth>`)
	_, got := x.until("<success", "<failure")
	return got == "<success"
}

func componentHandshake(t *testing.T, p *Prosody, secret string) string {
	t.Helper()
	x := dialXMPP(t, p.ComponentAddr)
	x.send(`<?xml version='1.0'?><stream:stream to='` + p.ComponentDomain + `' xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'>`)
	header, _ := x.until(">")
	m := regexp.MustCompile(`id=['"]([^'"]+)['"]`).FindStringSubmatch(header)
	if m == nil {
		t.Fatalf("component stream header without id: %q", header)
	}
	sum := sha1.Sum([]byte(m[1] + secret))
	x.send("<handshake>" + hex.EncodeToString(sum[:]) + "</handshake>")
	_, got := x.until("<handshake", "not-authorized", "</stream:stream>")
	return got
}

func TestProsody(t *testing.T) {
	p := StartProsody(t, ProsodyOptions{ComponentSecret: "s3cret"})
	if p.Domain != "localhost" || p.ComponentDomain != "matrix.localhost" || p.ComponentSecret != "s3cret" {
		t.Fatalf("unexpected Prosody fields: %+v", p)
	}
	p.Register(t, "alice", "alicepass")

	if !c2sLogin(t, p, "alice", "alicepass") {
		t.Fatal("registered user cannot log in over c2s")
	}
	if c2sLogin(t, p, "alice", "wrong-password") {
		t.Fatal("login with a wrong password succeeded")
	}
	if got := componentHandshake(t, p, p.ComponentSecret); got != "<handshake" {
		t.Fatalf("component handshake with the right secret: got %q", got)
	}
	if got := componentHandshake(t, p, "wrong"); got == "<handshake" {
		t.Fatal("component handshake with a wrong secret succeeded")
	}

	// Restart with the same ports and data.
	p.Stop(t)
	if err := dialable(p.ComponentAddr); err == nil {
		t.Fatal("component port still open after Stop")
	}
	start := time.Now()
	p.Start(t)
	t.Logf("prosody restart took %v", time.Since(start).Round(time.Millisecond))
	if !c2sLogin(t, p, "alice", "alicepass") {
		t.Fatal("user lost across restart")
	}
	if got := componentHandshake(t, p, p.ComponentSecret); got != "<handshake" {
		t.Fatalf("component handshake after restart: got %q", got)
	}
}

// writeRegistration writes an appservice registration for the tests.
func writeRegistration(t *testing.T) (path, asToken string) {
	t.Helper()
	asToken = "as-" + randomSecret(8)
	reg := fmt.Sprintf(`id: parley-test
url: http://127.0.0.1:%d
as_token: %s
hs_token: hs-%s
sender_localpart: parleybot
rate_limited: false
receive_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: '@xmpp_.*:localhost'
  aliases:
    - exclusive: true
      regex: '#xmpp_.*:localhost'
  rooms: []
`, FreePort(t), asToken, randomSecret(8))
	path = filepath.Join(t.TempDir(), "registration.yaml")
	if err := os.WriteFile(path, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, asToken
}

func whoami(t *testing.T, h *Homeserver, token string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", h.URL+"/_matrix/client/v3/account/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("whoami: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("whoami: %s %s", resp.Status, body)
	}
	var w struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		t.Fatalf("whoami: %v: %s", err, body)
	}
	return w.UserID
}

func testHomeserver(t *testing.T, start func(TB, HomeserverOptions) *Homeserver, kind string) {
	reg, asToken := writeRegistration(t)
	h := start(t, HomeserverOptions{Registration: reg})
	if h.Kind != kind || h.ServerName != "localhost" || !strings.HasPrefix(h.URL, "http://127.0.0.1:") {
		t.Fatalf("unexpected Homeserver fields: %+v", h)
	}
	userID, token := h.Register(t, "alice", "alice-password")
	if userID != "@alice:localhost" {
		t.Fatalf("Register returned user ID %q", userID)
	}
	if got := whoami(t, h, token); got != userID {
		t.Fatalf("whoami = %q, want %q", got, userID)
	}
	// The appservice registration was loaded: its as_token authenticates as
	// the sender user.
	if got := whoami(t, h, asToken); got != "@parleybot:localhost" {
		t.Fatalf("whoami(as_token) = %q, want @parleybot:localhost", got)
	}
}

func TestSynapse(t *testing.T) {
	t.Parallel()
	testHomeserver(t, StartSynapse, "synapse")
}

func TestDendrite(t *testing.T) {
	t.Parallel()
	testHomeserver(t, StartDendrite, "dendrite")
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	psql, err := exec.LookPath("psql")
	Require(t, "psql", err)
	dsn := StartPostgres(t)
	if !strings.HasPrefix(dsn, "postgres://postgres@127.0.0.1:") || !strings.HasSuffix(dsn, "/parley?sslmode=disable") {
		t.Fatalf("unexpected DSN %q", dsn)
	}
	out, err := exec.Command(psql, dsn, "-XtAc", "SELECT 1").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Fatalf("psql %s SELECT 1: %v: %s", dsn, err, out)
	}
}
