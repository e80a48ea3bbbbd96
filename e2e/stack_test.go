// Package e2e runs the parley binary between real servers and real clients:
// Prosody with slixmpp on the XMPP side, Synapse or Dendrite with mautrix's
// client on the Matrix side. Locally a missing server skips a test; with CI
// set it fails it.
package e2e

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parleygw/parley/internal/peertest"
)

var parleyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "parley-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	parleyBin = filepath.Join(dir, "parley")
	build := exec.Command("go", "build", "-o", parleyBin, "github.com/parleygw/parley/cmd/parley")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build parley:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// The addresses the tests use. alice is on XMPP, bob and carol on Matrix;
// carol is also a YAML identity, reachable from XMPP by her alias.
const (
	aliceJID        = "alice@localhost"
	bobGhostJID     = "bob%localhost@matrix.localhost"
	carolAliasJID   = "carol@matrix.localhost"
	carolGhostJID   = "carol%localhost@matrix.localhost"
	aliceGhostMXID  = "@_xmpp_alice_localhost:localhost"
	componentDomain = "matrix.localhost"
)

// stack is Prosody, a homeserver and one parley process wired together.
type stack struct {
	t        testing.TB
	dir      string
	prosody  *peertest.Prosody
	hs       *peertest.Homeserver
	config   string // path of parley.yaml
	admin    string // admin base URL
	asURL    string // where the homeserver reaches parley
	hsToken  string
	parley   *exec.Cmd
	exited   chan struct{}
	logPath  string
	starts   int
	settings stackSettings
	sipAddr  string // host:port of parley's SIP listeners (UDP and TCP)
}

type stackSettings struct {
	homeserver      string // "synapse" or "dendrite"
	componentSecret string // "" means the right one
	// sipProxy, when set, is the host:port of an upstream SIP proxy (a
	// PBX): parley sends through it what is not its own and trusts what
	// comes from it for the domain sipPeerDomain.
	sipProxy      string
	sipPeerDomain string
	// sipPort, when set, is the port of parley's SIP listeners (so that a
	// proxy started first can point at it).
	sipPort int
	// logLevel is parley's and Prosody's log level; "" is debug, which
	// tests want and benchmarks do not.
	logLevel string
	// sipTrustedDomain, when set, makes 127.0.0.1 a trusted SIP peer for
	// that domain (benchmarks with many SIP users and no digest each).
	sipTrustedDomain string
	// dendritePresence turns presence on in Dendrite (off by default there).
	dendritePresence bool
	// mediaPorts, when set, is the size of Parley's media port range
	// (default 1000: 250 calls of two legs); callsPerUser, when set, how
	// many calls one person may be in (Parley's default is 4).
	mediaPorts, callsPerUser int
	// portals join Matrix rooms and MUCs: {matrix room or alias, MUC JID}.
	portals [][2]string
	// mapping, when set, is more of the mapping section, indented by two
	// spaces (portals_on_demand, say).
	mapping string
	// sipPortals are portals with a SIP address too.
	sipPortals []sipPortal
}

// sipPortal is a portal of three rooms, and the phones the YAML makes
// members of its SIP address.
type sipPortal struct {
	matrix, xmpp, sip string
	phones            []string
}

// The SIP side: parley serves parley.localhost, where these users may
// register.
const (
	sipDomain = "parley.localhost"
)

var sipUsers = map[string]string{"1001": "pw-1001", "1002": "pw-1002", "1003": "pw-1003"}

// Parley's media ports in the tests, away from sipp's and baresip's (see
// peertest) and from the ephemeral ports of the servers; and the media
// timeout, short enough to test.
const (
	mediaPortMin = 20000
	mediaTimeout = "3s"
)

func newStack(t testing.TB, s stackSettings) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("short mode: end-to-end tests need real servers")
	}
	st := &stack{t: t, dir: t.TempDir(), settings: s, hsToken: randomToken()}
	st.prosody = peertest.StartProsody(t, peertest.ProsodyOptions{ComponentDomain: componentDomain, LogLevel: s.logLevel})
	asPort, adminPort := peertest.FreePort(t), peertest.FreePort(t)
	st.asURL = fmt.Sprintf("http://127.0.0.1:%d", asPort)
	st.admin = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	if s.sipPort == 0 {
		s.sipPort = peertest.FreePort(t)
	}
	st.sipAddr = fmt.Sprintf("127.0.0.1:%d", s.sipPort)
	st.config = filepath.Join(st.dir, "parley.yaml")
	st.logPath = filepath.Join(st.dir, "parley.log")

	// The registration does not depend on the homeserver's address, so
	// write it first, start the homeserver with it, then point parley at
	// the homeserver.
	asToken := randomToken()
	st.writeConfig("http://127.0.0.1:1", asPort, adminPort, asToken)
	reg := filepath.Join(st.dir, "registration.yaml")
	if out, err := exec.Command(parleyBin, "gen-registration", "-config", st.config, "-o", reg).CombinedOutput(); err != nil {
		t.Fatalf("gen-registration: %v\n%s", err, out)
	}
	switch s.homeserver {
	case "dendrite":
		st.hs = peertest.StartDendrite(t, peertest.HomeserverOptions{Registration: reg, Presence: s.dendritePresence})
	default:
		st.hs = peertest.StartSynapse(t, peertest.HomeserverOptions{Registration: reg})
	}
	st.writeConfig(st.hs.URL, asPort, adminPort, asToken)
	t.Cleanup(func() {
		st.stop(syscall.SIGTERM)
		if t.Failed() {
			if b, err := os.ReadFile(st.logPath); err == nil {
				t.Logf("parley log:\n%s", tail(string(b), 60))
			}
			if keep := os.Getenv("PARLEY_KEEP_LOGS"); keep != "" {
				_ = os.MkdirAll(keep, 0o755)
				if b, err := os.ReadFile(st.logPath); err == nil {
					_ = os.WriteFile(filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_")+".parley.log"), b, 0o644)
				}
			}
			if b, err := os.ReadFile(filepath.Join(st.prosody.Dir, "prosody.log")); err == nil {
				t.Logf("prosody log:\n%s", tail(string(b), 40))
			}
		}
	})
	return st
}

func (st *stack) writeConfig(hsURL string, asPort, adminPort int, asToken string) {
	secret := st.prosody.ComponentSecret
	if st.settings.componentSecret != "" {
		secret = st.settings.componentSecret
	}
	peer := ""
	if d := st.settings.sipTrustedDomain; d != "" {
		peer = fmt.Sprintf(`  trusted_peers:
    - {name: bench, addresses: [127.0.0.1/32], domains: [%s]}
`, d)
	}
	if p := st.settings.sipProxy; p != "" {
		host, _, _ := strings.Cut(p, ":")
		peer = fmt.Sprintf(`  outbound_proxy: "sip:%s"
  trusted_peers:
    - {name: pbx, addresses: [%s/32], domains: [%s]}
`, p, host, st.settings.sipPeerDomain)
	}
	level := st.settings.logLevel
	if level == "" {
		level = "debug"
	}
	cfg := fmt.Sprintf(`store: %s
log: {level: %s, format: text}
admin: {listen: "127.0.0.1:%d", pprof: true}
shutdown_timeout: 5s
xmpp:
  server: %q
  domain: %s
  secret: %q
  server_domains: [localhost]
matrix:
  homeserver_url: %s
  server_name: localhost
  listen: "127.0.0.1:%d"
  as_token: %s
  hs_token: %s
sip:
  domain: %s
  listen: ["udp:%s", "tcp:%s"]
  users:
    "1001": {password: %s}
    "1002": {password: %s}
    "1003": {password: %s}
  max_message_size: 2048
  min_expires: 2s
  rate_limit: {per_second: 10000, burst: 20000}
%scalls:
  media: {address: 127.0.0.1, ports: %d-%d}
  ring_timeout: 6s
  media_timeout: %s
  max_calls_per_user: %d
mapping:
  ghosts:
    matrix: {xmpp: "@_xmpp_{user}_{domain}:localhost", sip: "@_sip_{user}_{domain}:localhost"}
    xmpp: {matrix: "{user}%%{domain}@matrix.localhost", sip: "{user}+{domain}@matrix.localhost"}
    sip: {xmpp: "sip:xmpp_{user}_{domain}@%s", matrix: "sip:matrix_{user}_{domain}@%s"}
  aliases:
    xmpp: "{name}@matrix.localhost"
    sip: "sip:{name}@%s"
  identities:
    - name: carol
      display_name: Carol Matrix
      accounts: ["matrix:@carol:localhost"]
    - name: dana
      display_name: Dana Both
      accounts: ["xmpp:dana@localhost", "matrix:@dana:localhost"]
    - name: erin
      display_name: Erin Phone
      accounts: ["sip:sip:1003@%s", "matrix:@erin:localhost"]
`, filepath.Join(st.dir, "parley.db"), level, adminPort, st.prosody.ComponentAddr, componentDomain, secret,
		hsURL, asPort, asToken, st.hsToken,
		sipDomain, st.sipAddr, st.sipAddr, sipUsers["1001"], sipUsers["1002"], sipUsers["1003"], peer,
		mediaPortMin, mediaPortMin+cmp.Or(st.settings.mediaPorts, 1000)-1, mediaTimeout, st.settings.callsPerUser,
		sipDomain, sipDomain, sipDomain, sipDomain)
	if len(st.settings.portals)+len(st.settings.sipPortals) > 0 {
		cfg += "  portals:\n"
		for _, p := range st.settings.portals {
			cfg += fmt.Sprintf("    - {matrix: %q, xmpp: %q}\n", p[0], p[1])
		}
		for _, p := range st.settings.sipPortals {
			phones := make([]string, len(p.phones))
			for i, ph := range p.phones {
				phones[i] = strconv.Quote(ph)
			}
			cfg += fmt.Sprintf("    - {matrix: %q, xmpp: %q, sip: %q, phones: [%s]}\n", p.matrix, p.xmpp, p.sip, strings.Join(phones, ", "))
		}
	}
	cfg += st.settings.mapping
	if err := os.WriteFile(st.config, []byte(cfg), 0o600); err != nil {
		st.t.Fatal(err)
	}
}

// start runs parley and, when waitReady, waits until /readyz says every
// adapter is connected.
func (st *stack) start(waitReady bool) {
	st.t.Helper()
	st.starts++
	logf, err := os.OpenFile(st.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		st.t.Fatal(err)
	}
	_, _ = fmt.Fprintf(logf, "---- start %d\n", st.starts)
	cmd := exec.Command(parleyBin, "run", "-config", st.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		st.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(exited) }()
	st.parley, st.exited = cmd, exited
	if !waitReady {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := st.get("/readyz")
		if code == http.StatusOK {
			return
		}
		select {
		case <-exited:
			st.t.Fatalf("parley exited during start; log:\n%s", st.log())
		default:
		}
		if time.Now().After(deadline) {
			st.t.Fatalf("parley not ready after 30s: %d %s\nlog:\n%s", code, body, tail(st.log(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop signals parley and waits for it to exit.
func (st *stack) stop(sig syscall.Signal) {
	if st.parley == nil {
		return
	}
	_ = st.parley.Process.Signal(sig)
	select {
	case <-st.exited:
	case <-time.After(20 * time.Second):
		_ = st.parley.Process.Kill()
		<-st.exited
		st.t.Errorf("parley did not exit within 20s of %s", sig)
	}
	st.parley = nil
}

func (st *stack) get(path string) (int, string) {
	resp, err := http.Get(st.admin + path)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (st *stack) log() string {
	b, _ := os.ReadFile(st.logPath)
	return string(b)
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func timeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
