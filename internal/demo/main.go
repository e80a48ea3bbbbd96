// Command demo runs Parley for real, the way `make demo` shows it: a local
// Prosody and Synapse on 127.0.0.1, Parley between them and serving the SIP
// domain parley.localhost, a scripted conversation between a real XMPP client
// (slixmpp), a real Matrix client (mautrix) and a real SIP phone (a sipp user
// agent) with the transcript printed, calls with real audio between a SIP
// phone (baresip) and a Matrix VoIP client (aiortc, matrix-nio), and then
// everything stays up, with accounts for your own clients (a softphone too),
// until SIGINT or SIGTERM stops it all.
//
//	demo -parley bin/parley [-keep-going=false] [-dir DIR]
//
// The servers come from internal/peertest, as in the end-to-end tests; the
// peers must be installed first (make peers).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// The accounts and addresses of the demo. alice is on XMPP, bob on Matrix,
// the phone is extension 1001 of Parley's SIP domain; "you" exists on XMPP
// and Matrix, and the extension 1002, for the user's own clients.
const (
	xmppDomain      = "localhost"
	componentDomain = "matrix.localhost"
	serverName      = "localhost"

	alicePassword   = "alice-password"
	bobPassword     = "bob-password"
	youXMPPPassword = "you-password"
	youMXPassword   = "you-password-1" // Matrix passwords differ: no reuse across servers

	aliceJID       = "alice@localhost"
	aliceGhostMXID = "@_xmpp_alice_localhost:localhost"
	bobMXID        = "@bob:localhost"
	bobAliasJID    = "bob@matrix.localhost"
	bobGhostJID    = "bob%localhost@matrix.localhost"

	// SIP: Parley is the registrar of sipDomain, where the scripted phone
	// (1001) and the user's softphone (1002) register.
	sipDomain         = "parley.localhost"
	phoneUser         = "1001"
	phonePassword     = "phone-password"
	softphoneUser     = "1002"
	softphonePassword = "softphone-password"

	phoneURI       = "sip:" + phoneUser + "@" + sipDomain
	phoneGhostJID  = phoneUser + "+" + sipDomain + "@" + componentDomain
	phoneGhostMXID = "@_sip_" + phoneUser + "_" + sipDomain + ":" + serverName
	aliceSIPUser   = "xmpp_alice_localhost"
	aliceSIPURI    = "sip:" + aliceSIPUser + "@" + sipDomain
	bobSIPURI      = "sip:matrix_bob_localhost@" + sipDomain
	bobAlias       = "bob" // his YAML identity's name
	bobAliasSIPURI = "sip:" + bobAlias + "@" + sipDomain

	// Ports Parley prefers, as in config.example.yaml; free ones otherwise.
	preferredAdminPort = 9090
	preferredASPort    = 29328
	preferredSIPPort   = 5060

	waitTimeout = 30 * time.Second
)

func main() {
	parleyBin := flag.String("parley", "", "path of the built parley binary (required)")
	keepGoing := flag.Bool("keep-going", true, "after the scripted conversation, stay up for your own clients until Ctrl-C")
	dir := flag.String("dir", "", "scratch directory for configs, data and logs (default: a new temporary directory, removed at exit)")
	flag.Parse()
	if *parleyBin == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: demo -parley PATH [-keep-going=false] [-dir DIR]")
		os.Exit(2)
	}
	bin, err := filepath.Abs(*parleyBin)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: parley binary: %v (build it with `make build`)\n", err)
		os.Exit(2)
	}

	scratch, remove := *dir, false
	if scratch == "" {
		scratch, err = os.MkdirTemp("", "parley-demo-")
		remove = true
	} else {
		scratch, err = filepath.Abs(scratch)
		if err == nil {
			err = os.MkdirAll(scratch, 0o750)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: scratch directory: %v\n", err)
		os.Exit(1)
	}
	r := newRunner(scratch, os.Stdout, remove)

	// Ctrl-C or SIGTERM at any point stops what has been started. The
	// servers and Parley run in their own process groups, so the terminal's
	// SIGINT reaches only this program, which stops them in order.
	settled := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		code := 0
		select {
		case <-settled:
			fmt.Printf("\n%s: stopping Parley, Synapse and Prosody\n", sig)
		default:
			fmt.Printf("\n%s: stopping what was started\n", sig)
			code = 1
		}
		go r.exit(code, false)
		for range sigs {
			fmt.Println("still stopping; every server gets 15 s before it is killed")
		}
	}()

	fmt.Println("Parley demo: Prosody (XMPP) and Synapse (Matrix) on 127.0.0.1, bridged by Parley,")
	fmt.Println("which is also the SIP server of " + sipDomain + " for phones.")
	if remove {
		fmt.Printf("scratch directory: %s (removed at a clean exit; -dir DIR keeps one)\n", scratch)
	} else {
		fmt.Printf("scratch directory: %s\n", scratch)
	}

	d := &demo{r: r, bin: bin, dir: scratch}
	d.start()
	d.converse()
	if !*keepGoing {
		fmt.Println()
		d.printTimings()
		r.exit(0, false)
	}
	d.printConnect()
	d.printTimings()
	close(settled)
	fmt.Println("\nEverything stays up until Ctrl-C (SIGINT or SIGTERM).")
	select {}
}

// demo is the running stack: Prosody, Synapse and one parley process.
type demo struct {
	r   *runner
	bin string // parley binary
	dir string // scratch directory

	prosody *peertest.Prosody
	hs      *peertest.Homeserver
	config  string // parley.yaml
	logPath string // parley's standard output and error
	admin   string // admin base URL
	asPort  int
	sipAddr string // 127.0.0.1:port of parley's SIP listeners (UDP and TCP)

	lobby id.RoomID // the Matrix room of the demo's portal

	timings []timing
}

type timing struct {
	what string
	took time.Duration
}

func (d *demo) timed(what string, f func()) {
	t0 := time.Now()
	f()
	d.timings = append(d.timings, timing{what, time.Since(t0)})
}

func (d *demo) printTimings() {
	var parts []string
	var total time.Duration
	for _, t := range d.timings {
		parts = append(parts, fmt.Sprintf("%s %s", t.what, round(t.took)))
		total += t.took
	}
	fmt.Printf("timings: %s (total %s)\n", strings.Join(parts, ", "), round(total))
}

// start brings up Prosody, Synapse with Parley's registration, and Parley,
// and creates the accounts.
func (d *demo) start() {
	r := d.r
	requireCallPeers(r)
	d.config = filepath.Join(d.dir, "parley.yaml")
	d.logPath = filepath.Join(d.dir, "parley.log")

	fmt.Printf("\nstarting Prosody (XMPP server %s, Parley's component %s)\n", xmppDomain, componentDomain)
	d.timed("prosody", func() {
		d.prosody = peertest.StartProsody(r, peertest.ProsodyOptions{ComponentDomain: componentDomain})
	})
	r.Cleanup(func() { r.Logf("stopping prosody") })
	d.prosody.Register(r, "alice", alicePassword)
	d.prosody.Register(r, "you", youXMPPPassword)
	r.Logf("XMPP accounts: %s, you@%s", aliceJID, xmppDomain)

	// The registration does not depend on the homeserver's address: write
	// it first, start Synapse with it, then point Parley at Synapse.
	adminPort := portOr(r, preferredAdminPort)
	d.asPort = portOr(r, preferredASPort)
	d.admin = "http://127.0.0.1:" + strconv.Itoa(adminPort)
	d.sipAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(sipPortOr(r, preferredSIPPort)))
	asToken, hsToken := randomToken(), randomToken()
	d.writeConfig("http://127.0.0.1:1", adminPort, asToken, hsToken)
	reg := filepath.Join(d.dir, "registration.yaml")
	if out, err := exec.Command(d.bin, "gen-registration", "-config", d.config, "-o", reg).CombinedOutput(); err != nil {
		r.Fatalf("parley gen-registration: %v\n%s", err, out)
	}

	fmt.Printf("starting Synapse (Matrix homeserver %s, with Parley's appservice registration)\n", serverName)
	d.timed("synapse", func() {
		d.hs = peertest.StartSynapse(r, peertest.HomeserverOptions{Registration: reg})
	})
	r.Cleanup(func() { r.Logf("stopping synapse") })
	d.hs.Register(r, "you", youMXPassword)
	r.Logf("Matrix account: @you:%s (bob is created when his client connects)", serverName)
	d.writeConfig(d.hs.URL, adminPort, asToken, hsToken)

	fmt.Printf("starting Parley: %s run -config %s\n", d.bin, d.config)
	r.Logf("SIP: domain %s on %s, UDP and TCP; extensions %s (the scripted phone) and %s (yours)",
		sipDomain, d.sipAddr, phoneUser, softphoneUser)
	r.Logf("log: %s", d.logPath)
	d.timed("parley", d.startParley)
}

// writeConfig writes parley.yaml: the shape of the end-to-end tests', with
// bob as a YAML identity reachable from XMPP and SIP by his alias, and
// Parley as the SIP registrar of sipDomain for the extensions 1001 and 1002.
func (d *demo) writeConfig(hsURL string, adminPort int, asToken, hsToken string) {
	cfg := fmt.Sprintf(`# written by internal/demo
store: %s
log: {level: debug, format: text}
admin: {listen: "127.0.0.1:%d"}
shutdown_timeout: 5s
xmpp:
  server: %q
  domain: %s
  secret: %q
  server_domains: [%s]
matrix:
  homeserver_url: %s
  server_name: %s
  listen: "127.0.0.1:%d"
  as_token: %s
  hs_token: %s
sip:
  domain: %s
  listen: ["udp:%s", "tcp:%s"]
  users:
    %q: {password: %q}
    %q: {password: %q}
calls:
  media: {address: 127.0.0.1, ports: %s}
mapping:
  ghosts:
    matrix: {xmpp: "@_xmpp_{user}_{domain}:%s", sip: "@_sip_{user}_{domain}:%s"}
    xmpp: {matrix: "{user}%%{domain}@%s", sip: "{user}+{domain}@%s"}
    sip: {xmpp: "sip:xmpp_{user}_{domain}@%s", matrix: "sip:matrix_{user}_{domain}@%s"}
  aliases:
    xmpp: "{name}@%s"
    sip: "sip:{name}@%s"
  identities:
    - name: bob
      display_name: Bob Matrix
      accounts: ["matrix:%s"]
  portals:
    - {matrix: %q, xmpp: %q, sip: %q}
`, filepath.Join(d.dir, "parley.db"), adminPort,
		d.prosody.ComponentAddr, componentDomain, d.prosody.ComponentSecret, xmppDomain,
		hsURL, serverName, d.asPort, asToken, hsToken,
		sipDomain, d.sipAddr, d.sipAddr, phoneUser, phonePassword, softphoneUser, softphonePassword, mediaPorts,
		serverName, serverName, componentDomain, componentDomain, sipDomain, sipDomain,
		componentDomain, sipDomain, bobMXID, roomAlias, roomMUC, roomSIP)
	if err := os.WriteFile(d.config, []byte(cfg), 0o600); err != nil {
		d.r.Fatalf("write %s: %v", d.config, err)
	}
}

// startParley runs parley in its own process group, its output appended to
// parley.log, and waits until /readyz says every adapter is connected. A
// cleanup stops it with SIGTERM (SIGKILL after 20 s).
func (d *demo) startParley() {
	r := d.r
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		r.Fatalf("parley log: %v", err)
	}
	cmd := exec.Command(d.bin, "run", "-config", d.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		r.Fatalf("start parley: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(exited) }()
	r.Cleanup(func() {
		r.Logf("stopping parley")
		pgid := cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			r.Logf("parley did not stop within 20s of SIGTERM; killing it")
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-exited
		}
	})

	deadline := time.Now().Add(waitTimeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		ready, states, err := readyz(client, d.admin)
		if ready {
			r.Logf("parley ready: %s (admin %s/readyz, /metrics)", states, d.admin)
			return
		}
		select {
		case <-exited:
			r.Fatalf("parley exited during start; tail of %s:\n%s", d.logPath, tail(d.logPath, 40))
		default:
		}
		if time.Now().After(deadline) {
			why := states
			if err != nil {
				why = err.Error()
			}
			r.Fatalf("parley not ready after %s (%s); tail of %s:\n%s", waitTimeout, why, d.logPath, tail(d.logPath, 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readyz asks parley's admin listener whether every adapter is connected and
// returns their states as "matrix=connected xmpp=connecting".
func readyz(client *http.Client, admin string) (bool, string, error) {
	resp, err := client.Get(admin + "/readyz")
	if err != nil {
		return false, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Adapters map[string]struct {
			State string `json:"state"`
		} `json:"adapters"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &body); err != nil {
		return false, "", fmt.Errorf("readyz: %s: %w", resp.Status, err)
	}
	var states []string
	for name, a := range body.Adapters {
		states = append(states, name+"="+a.State)
	}
	sort.Strings(states)
	return resp.StatusCode == http.StatusOK, strings.Join(states, " "), nil
}

// converse runs the scripted conversation: alice (slixmpp) writes to bob by
// his alias, bob (mautrix) receives her messages from her ghost in the DM the
// ghost opened, and answers; alice gets his answers and her receipts. Then
// the phone joins in (see phoneCall), and the phone and bob call each other
// (see calls). The two clients log out at the end.
func (d *demo) converse() {
	fmt.Println("\nconnecting alice (slixmpp, XMPP) and bob (mautrix, Matrix)")
	clients := d.r.scope()
	var alice *peertest.XMPPClient
	var bob *peertest.MatrixClient
	d.timed("clients", func() {
		alice = peertest.ConnectXMPP(clients, d.prosody, "alice", alicePassword)
		bob = peertest.ConnectMatrix(clients, d.hs, "bob", bobPassword)
	})
	xmppEvents := &xmppInbox{c: alice}

	fmt.Println("\ntranscript (each line as that network's client sees it)")
	t0 := time.Now()
	aliceLines := []string{
		"Hi Bob, it's Alice. I'm on XMPP and only know your alias, " + bobAliasJID + ".",
		"Parley should carry this over to you on Matrix.",
	}
	bobLines := []string{
		"Hi Alice! Both arrived, from your ghost " + aliceGhostMXID + ".",
		"And this answer goes back to you over XMPP.",
	}
	var room id.RoomID
	for i, body := range aliceLines {
		stanzaID := fmt.Sprintf("demo-%d", i+1)
		sent := time.Now()
		alice.Send(clients, bobAliasJID, stanzaID, body, true)
		say("xmpp", "%s → %s: %s", aliceJID, bobAliasJID, body)

		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		m, ok := bob.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Body == body })
		if !ok {
			cancel()
			d.fail("bob's Matrix client did not receive %q within %s", body, waitTimeout)
		}
		took := time.Since(sent)
		if room == "" {
			room = m.Room
			inviter, _ := bob.Inviter(m.Room)
			say("matrix", "%s invited %s to a direct chat, %s", inviter, bob.UserID, m.Room)
		}
		name := ""
		if dn, err := bob.GetDisplayName(ctx, m.Sender); err == nil && dn.DisplayName != "" {
			name = " (" + dn.DisplayName + ")"
		}
		cancel()
		say("matrix", "%s%s → %s: %s  [%s]", m.Sender, name, bob.UserID, m.Body, round(took))

		e := xmppEvents.wait(d, "the receipt for "+stanzaID, func(e peertest.XMPPEvent) bool {
			return e.Ev == "receipt" && e.ID == stanzaID
		})
		say("xmpp", "%s → %s: XEP-0184 receipt for %s (Parley stored the message)", bare(e.From), aliceJID, e.ID)
	}
	for i, body := range bobLines {
		sent := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		_, err := bob.SendText(ctx, room, fmt.Sprintf("demo-answer-%d", i+1), body)
		cancel()
		if err != nil {
			d.fail("bob could not send: %v", err)
		}
		say("matrix", "%s → %s: %s", bob.UserID, aliceGhostMXID, body)
		e := xmppEvents.wait(d, fmt.Sprintf("bob's answer %q", body), func(e peertest.XMPPEvent) bool {
			return e.Ev == "message" && e.Body == body
		})
		nick := ""
		if e.Nick != "" {
			nick = " (" + e.Nick + ")"
		}
		say("xmpp", "%s%s → %s: %s  [%s]", bare(e.From), nick, aliceJID, e.Body, round(time.Since(sent)))
	}
	d.timings = append(d.timings, timing{"conversation", time.Since(t0)})

	d.room(clients, alice, xmppEvents, bob)
	dm := d.phoneCall(clients, alice, xmppEvents, bob)
	d.calls(clients, dm)
	fmt.Println("\nthe conversation went through; alice's and bob's clients log out")
	clients.close()
}

// xmppInbox reads an XMPPClient's events, keeping those nobody waited for
// yet.
type xmppInbox struct {
	c       *peertest.XMPPClient
	pending []peertest.XMPPEvent
}

// wait returns the first event match accepts, within waitTimeout. A stanza
// error or the client's end fails the demo.
func (in *xmppInbox) wait(d *demo, what string, match func(peertest.XMPPEvent) bool) peertest.XMPPEvent {
	for i, e := range in.pending {
		if match(e) {
			in.pending = append(in.pending[:i], in.pending[i+1:]...)
			return e
		}
	}
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-in.c.Events:
			switch {
			case !ok:
				d.fail("alice's XMPP client ended while waiting for %s", what)
			case e.Ev == "error":
				d.fail("alice got a stanza error from %s for %s: %s %s", e.From, e.ID, e.Condition, e.Text)
			case match(e):
				return e
			default:
				in.pending = append(in.pending, e)
			}
		case <-timer.C:
			d.fail("alice's XMPP client did not get %s within %s", what, waitTimeout)
		}
	}
}

// fail ends the demo with the tail of parley's log.
func (d *demo) fail(format string, args ...any) {
	d.r.Fatalf("%s\n--- tail of %s ---\n%s", fmt.Sprintf(format, args...), d.logPath, tail(d.logPath, 40))
}

// printConnect tells how to use the running stack with one's own clients.
func (d *demo) printConnect() {
	_, c2sPort, _ := net.SplitHostPort(d.prosody.C2SAddr)
	_, sipPort, _ := net.SplitHostPort(d.sipAddr)
	youJID := "you@" + xmppDomain
	youMXID := "@you:" + serverName
	softphoneURI := "sip:" + softphoneUser + "@" + sipDomain
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	to := func(addr, what string) { p("    %-42s to reach %s", addr, what) }

	p("\nEverything is up. Connect your own clients:\n")
	p("  XMPP (Prosody)    server 127.0.0.1, port %s, domain %s", c2sPort, xmppDomain)
	p("                    no TLS: turn TLS/STARTTLS off and allow plain-text (PLAIN) authentication")
	p("                    accounts  %s / %s", youJID, youXMPPPassword)
	p("                              %s / %s", aliceJID, alicePassword)
	p("  Matrix (Synapse)  homeserver %s (plain HTTP)", d.hs.URL)
	p("                    accounts  %s / %s", youMXID, youMXPassword)
	p("                              %s / %s", bobMXID, bobPassword)
	p("  SIP (Parley)      a softphone with SIP MESSAGE chat and G.711 calls (Linphone, baresip, ...): registrar and")
	p("                    proxy 127.0.0.1, port %s, UDP or TCP (no TLS, no STUN/ICE), domain %s", sipPort, sipDomain)
	p("                    account   %s / %s (digest user %s, realm %s)", softphoneUser, softphonePassword, softphoneUser, sipDomain)
	p("                    (%s / %s is the scripted phone's)", phoneUser, phonePassword)
	p("")
	p("  From XMPP, write to")
	to(bobAliasJID, bobMXID+` (his alias; his name shows as "Bob Matrix")`)
	to(bobGhostJID, bobMXID+" (his ghost JID)")
	to("you%"+xmppDomain+"@"+componentDomain, youMXID)
	to(softphoneUser+"+"+sipDomain+"@"+componentDomain, "your softphone, "+softphoneURI)
	p("  From Matrix, start a direct chat and invite")
	to(aliceGhostMXID, aliceJID)
	to("@_xmpp_you_"+xmppDomain+":"+serverName, youJID)
	to("@_sip_"+softphoneUser+"_"+sipDomain+":"+serverName, "your softphone, "+softphoneURI)
	p("  From your softphone, send a message (SIP MESSAGE) to")
	to(aliceSIPURI, aliceJID)
	to("sip:xmpp_you_"+xmppDomain+"@"+sipDomain, youJID)
	to(bobAliasSIPURI, bobMXID+" (his alias)")
	to(bobSIPURI, bobMXID+" (his ghost URI)")
	to("sip:matrix_you_"+serverName+"@"+sipDomain, youMXID)
	p("")
	p("  Group chat: join %s from Matrix or %s from XMPP; each side sees the", roomAlias, roomMUC)
	p("  other's posts from a participant of its own.")
	p("")
	p("  Calls: SIP ↔ SIP and SIP ↔ Matrix (XMPP has no calls yet); Parley relays the audio on 127.0.0.1,")
	p("  UDP ports %s. From your softphone, dial", mediaPorts)
	to("sip:matrix_you_"+serverName+"@"+sipDomain, youMXID+"'s Matrix clients (Element rings)")
	to(bobAliasSIPURI, bobMXID+" (his alias)")
	to(bobSIPURI, bobMXID+" (his ghost URI)")
	to(phoneURI, "another softphone, registered as "+phoneUser+" / "+phonePassword)
	p("  From Element, as %s, call your softphone: start a direct chat with", youMXID)
	p("    %-42s (its ghost) and press the call button", "@_sip_"+softphoneUser+"_"+sipDomain+":"+serverName)
	p("")
	p("  Logs: parley   %s", d.logPath)
	p("        prosody  %s", filepath.Join(d.prosody.Dir, "prosody.log"))
	p("        synapse  %s", filepath.Join(d.hs.Dir, "homeserver.log"))
	p("  Parley's admin listener: %[1]s/readyz and %[1]s/metrics", d.admin)
	fmt.Print(b.String())
}

// say prints one transcript line, tagged with its network.
func say(network, format string, args ...any) {
	fmt.Printf("  %-9s%s\n", "["+network+"]", fmt.Sprintf(format, args...))
}

// portOr returns port when 127.0.0.1:port is free, otherwise a free one.
func portOr(r *runner, port int) int {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return peertest.FreePort(r)
	}
	_ = l.Close()
	return port
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tail returns the last lines of a file.
func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func bare(jid string) string {
	b, _, _ := strings.Cut(jid, "/")
	return b
}

func round(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Millisecond)
}
