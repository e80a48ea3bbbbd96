package peertest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// KamailioOptions configure StartKamailio. Zero values get defaults.
type KamailioOptions struct {
	// Domain is the SIP domain Kamailio serves as registrar and proxy (the
	// PBX's domain), default "pbx.localhost".
	Domain string
	// Users maps user names of Domain to their passwords. REGISTER is
	// challenged (401, digest, realm Domain, qop=auth) and must authenticate
	// as the user in To. AddUser adds users later.
	Users map[string]string
	// ProxyAuth makes Kamailio challenge (407) every initial request other
	// than REGISTER whose From domain is Domain, wherever it goes, as a PBX
	// does for its own users (the user in From must authenticate; the
	// credentials are removed before relaying). Requests from other domains
	// (Parley's) are never challenged.
	ProxyAuth bool
	// ForwardDomain is a domain Kamailio hands to ForwardTo: every request
	// whose Request-URI domain is ForwardDomain (e.g. "parley.localhost") is
	// relayed there. This is how a PBX passes Parley its traffic.
	ForwardDomain string
	// ForwardTo is the host:port requests for ForwardDomain go to (Parley's
	// SIP listener). Empty: they get 503 until SetForwardTo.
	ForwardTo string
	// ForwardTransport is "udp" (default) or "tcp", the transport to ForwardTo.
	ForwardTransport string
	// Debug is Kamailio's log level: 2 (info, default) logs one line per
	// request, 3 is debug.
	Debug int
}

// Kamailio is a running Kamailio SIP server started by StartKamailio.
//
// It listens on Addr over UDP and TCP and routes each request:
//   - OPTIONS without a user part addressed to Kamailio: 200 (keepalive);
//   - with ProxyAuth, requests from Domain users must authenticate (407);
//   - Request-URI domain ForwardDomain: relayed to ForwardTo;
//   - REGISTER for Domain: digest authentication against the users, then
//     saved in the location table (in memory: a restart forgets it);
//   - other requests for Domain (or Kamailio's address): the Request-URI
//     user is looked up in the location table and the request relayed to
//     the registered contact (404 when none, 405 when none accepts the
//     method);
//   - anything else: 403 Relaying forbidden.
//
// So a user agent registered on Kamailio receives MESSAGEs sent to
// sip:user@Domain through Kamailio (Parley using Addr as outbound proxy), and
// Kamailio hands requests for ForwardDomain to Parley. In-dialog requests
// follow Record-Route (INVITE and SUBSCRIBE are record-routed). Each request
// is logged to LogPath ("peertest: METHOD R-URI from ...").
type Kamailio struct {
	Addr          string // host:port on 127.0.0.1, UDP and TCP
	Host          string // "127.0.0.1"
	Port          int
	Domain        string
	ForwardDomain string
	Dir           string // kamailio.cfg, run/ (control socket), kamailio.log
	LogPath       string // Kamailio's log (stderr)

	opts      KamailioOptions
	users     map[string]string
	forwardTo string
	config    string
	ctl       string
	proc      *process
}

// kamailioSafe is what user names, passwords and domains may contain: they
// are written into kamailio.cfg string literals.
var kamailioSafe = regexp.MustCompile(`^[A-Za-z0-9._~!*'()+,;=&%@:-]+$`)

// StartKamailio writes a kamailio.cfg in t.TempDir(), starts `kamailio -DD -E`
// (foreground, logging to stderr, which goes to LogPath) on a free
// 127.0.0.1 port for UDP and TCP, and waits until it answers an OPTIONS. It
// is stopped by t.Cleanup. The test is skipped (failed under CI) through
// Require when kamailio is not installed.
func StartKamailio(t TB, opts KamailioOptions) *Kamailio {
	t.Helper()
	_, err := lookBinary("kamailio")
	if err == nil {
		_, err = kamailioModulesDir()
	}
	Require(t, "kamailio", err)

	if opts.Domain == "" {
		opts.Domain = "pbx.localhost"
	}
	switch strings.ToLower(opts.ForwardTransport) {
	case "", "udp":
		opts.ForwardTransport = "udp"
	case "tcp":
		opts.ForwardTransport = "tcp"
	default:
		t.Fatalf("peertest: kamailio: ForwardTransport %q: want udp or tcp", opts.ForwardTransport)
	}
	if opts.ForwardTo != "" && opts.ForwardDomain == "" {
		t.Fatalf("peertest: kamailio: ForwardTo %q without ForwardDomain", opts.ForwardTo)
	}
	if opts.Debug == 0 {
		opts.Debug = 2
	}
	for _, s := range []string{opts.Domain, opts.ForwardDomain, opts.ForwardTo} {
		if s != "" && !kamailioSafe.MatchString(s) {
			t.Fatalf("peertest: kamailio: %q contains characters peertest does not put in kamailio.cfg", s)
		}
	}
	dir := t.TempDir()
	port := freeUDPTCPPort(t)
	k := &Kamailio{
		Addr:          net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Host:          "127.0.0.1",
		Port:          port,
		Domain:        opts.Domain,
		ForwardDomain: opts.ForwardDomain,
		Dir:           dir,
		LogPath:       filepath.Join(dir, "kamailio.log"),
		opts:          opts,
		users:         map[string]string{},
		forwardTo:     opts.ForwardTo,
		config:        filepath.Join(dir, "kamailio.cfg"),
		ctl:           filepath.Join(dir, "run", "ctl.sock"),
	}
	for u, p := range opts.Users {
		k.checkUser(t, u, p)
		k.users[u] = p
	}
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatalf("peertest: kamailio: %v", err)
	}
	t.Cleanup(k.stop)
	k.Start(t)
	return k
}

func kamailioModulesDir() (string, error) {
	cands, _ := filepath.Glob("/usr/lib/*/kamailio/modules")
	cands = append(cands, "/usr/lib/kamailio/modules", "/usr/local/lib64/kamailio/modules", "/usr/local/lib/kamailio/modules")
	for _, d := range cands {
		if _, err := os.Stat(filepath.Join(d, "registrar.so")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no kamailio modules directory with registrar.so")
}

func (k *Kamailio) checkUser(t TB, user, password string) {
	t.Helper()
	if !kamailioSafe.MatchString(user) || !kamailioSafe.MatchString(password) {
		t.Fatalf("peertest: kamailio: user %q or its password has characters peertest does not put in kamailio.cfg", user)
	}
}

// forwardURI is the $du Kamailio relays ForwardDomain requests to.
func (k *Kamailio) forwardURI() string {
	if k.forwardTo == "" {
		return ""
	}
	return "sip:" + k.forwardTo + ";transport=" + k.opts.ForwardTransport
}

func (k *Kamailio) configText() (string, error) {
	mods, err := kamailioModulesDir()
	if err != nil {
		return "", err
	}
	var init strings.Builder
	// (An empty event_route is a syntax error.)
	fmt.Fprintf(&init, "\t$sht(cfg=>domain) = \"%s\";\n", k.Domain)
	users := make([]string, 0, len(k.users))
	for u := range k.users {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		fmt.Fprintf(&init, "\t$sht(users=>%s) = \"%s\";\n", u, k.users[u])
	}
	if fw := k.forwardURI(); fw != "" {
		fmt.Fprintf(&init, "\t$sht(cfg=>forward) = \"%s\";\n", fw)
	}
	forwardBlock := ""
	if k.ForwardDomain != "" {
		forwardBlock = fmt.Sprintf(`	if ($rd == "%s") {
		route(FORWARD);
	}
`, k.ForwardDomain)
	}
	proxyAuth := ""
	if k.opts.ProxyAuth {
		proxyAuth = `	if ($fd == "` + k.Domain + `" && !is_method("REGISTER|ACK|CANCEL")) {
		route(PROXYAUTH);
	}
`
	}
	return fmt.Sprintf(`#!KAMAILIO
# written by parley internal/peertest (StartKamailio)
debug=%d
log_stderror=yes
log_prefix="{$mt $hdr(CSeq) $ci} "
memdbg=5
memlog=5
# seconds the main process waits for its children when stopping
exit_timeout=3
children=2
tcp_children=2
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=off
dns_try_ipv6=no
listen=udp:127.0.0.1:%[2]d
listen=tcp:127.0.0.1:%[2]d
alias="%[3]s"
server_header="Server: peertest-kamailio"
user_agent_header="User-Agent: peertest-kamailio"

mpath="%[4]s"
loadmodule "ctl.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "htable.so"

# kamcmd -s unix:%[5]s (AddUser, SetForwardTo, Contacts)
modparam("ctl", "binrpc", "unix:%[5]s")
# location table in memory only
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "min_expires", 0)
# users=>NAME holds NAME's password; cfg=>forward the ForwardDomain target
modparam("htable", "htable", "users=>size=6;")
modparam("htable", "htable", "cfg=>size=2;")

event_route[htable:mod-init] {
%[6]s}

request_route {
	force_rport();
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	if (!sanity_check("17895", "7")) {
		xlog("L_WARN", "peertest: malformed request from $si:$sp\n");
		exit;
	}
	xlog("L_INFO", "peertest: $rm $ru from $fu via $si:$sp ($pr)\n");
	if (is_method("OPTIONS") && uri==myself && $rU==$null) {
		sl_send_reply("200", "Keepalive");
		exit;
	}
	if (is_method("CANCEL")) {
		if (t_check_trans()) {
			t_relay();
		}
		exit;
	}
	if (!is_method("ACK")) {
		if (t_precheck_trans()) {
			t_check_trans();
			exit;
		}
		t_check_trans();
	}
	route(WITHINDLG);
	remove_hf("Route");
	if (is_method("INVITE|SUBSCRIBE")) {
		record_route();
	}
%[8]s%[7]s	if ($rd == "%[3]s" || uri==myself) {
		if (is_method("REGISTER")) {
			route(REGISTRAR);
		}
		route(LOCATION);
	}
	sl_send_reply("403", "Relaying forbidden");
	exit;
}

route[RELAY] {
	if (!t_relay()) {
		sl_reply_error();
	}
	exit;
}

route[WITHINDLG] {
	if (!has_totag()) return;
	if (loose_route()) {
		route(RELAY);
	}
	if (is_method("ACK")) {
		if (t_check_trans()) {
			route(RELAY);
		}
		exit;
	}
	sl_send_reply("404", "Not here");
	exit;
}

route[FORWARD] {
	if ($sht(cfg=>forward) == $null) {
		sl_send_reply("503", "No forward target");
		exit;
	}
	$du = $sht(cfg=>forward);
	xlog("L_INFO", "peertest: forwarding $rm $ru to $du\n");
	route(RELAY);
}

route[REGISTRAR] {
	if ($au == $null || $sht(users=>$au) == $null) {
		auth_challenge("%[3]s", "1");
		exit;
	}
	if (!pv_auth_check("%[3]s", "$sht(users=>$au)", "0", "1")) {
		xlog("L_INFO", "peertest: REGISTER of $tu: authentication of $au failed ($rc)\n");
		auth_challenge("%[3]s", "1");
		exit;
	}
	consume_credentials();
	if (!save("location")) {
		sl_reply_error();
	}
	exit;
}

route[PROXYAUTH] {
	if ($au == $null || $sht(users=>$au) == $null) {
		auth_challenge("%[3]s", "1");
		exit;
	}
	if (!pv_auth_check("%[3]s", "$sht(users=>$au)", "0", "1")) {
		xlog("L_INFO", "peertest: $rm from $fu: authentication of $au failed ($rc)\n");
		auth_challenge("%[3]s", "1");
		exit;
	}
	consume_credentials();
}

route[LOCATION] {
	if (!lookup("location")) {
		$var(rc) = $rc;
		t_newtran();
		switch ($var(rc)) {
			case -1:
			case -3:
				send_reply("404", "Not Found");
				exit;
			case -2:
				send_reply("405", "Method Not Allowed");
				exit;
		}
	}
	xlog("L_INFO", "peertest: relaying $rm to $ru\n");
	route(RELAY);
}
`, k.opts.Debug, k.Port, k.Domain, mods, k.ctl, init.String(), forwardBlock, proxyAuth), nil
}

// Start starts Kamailio again after Stop (same port, configuration, users
// and forward target; the location table starts empty) and waits until it
// answers an OPTIONS over UDP and accepts TCP connections. StartKamailio
// calls it; calling it while Kamailio runs fails the test.
func (k *Kamailio) Start(t TB) {
	t.Helper()
	if k.proc != nil && !k.proc.exited() {
		t.Fatalf("peertest: kamailio already running")
	}
	cfg, err := k.configText()
	if err != nil {
		t.Fatalf("peertest: kamailio: %v", err)
	}
	writeFile(t, k.config, cfg)
	_ = os.Remove(k.ctl)
	k.proc = startProcess(t, "kamailio", k.Dir, k.LogPath, syscall.SIGTERM, nil, nil,
		"kamailio", "-DD", "-E", "-f", k.config, "-Y", filepath.Join(k.Dir, "run"))
	k.proc.waitReady(t, startTimeout(10*time.Second), func() error {
		code, err := SipOptionsPing(k.Addr, 200*time.Millisecond)
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("OPTIONS answered %d", code)
		}
		if err := dialable(k.Addr); err != nil {
			return err
		}
		if _, err := os.Stat(k.ctl); err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
		return nil
	})
}

// Stop stops Kamailio and waits for it to exit: SIGTERM to the main process,
// which stops its children, and SIGKILL to the whole process group after 5s
// or once the main process is gone. Start brings it back. Stopping a stopped
// Kamailio does nothing.
func (k *Kamailio) Stop(t TB) {
	t.Helper()
	k.stop()
}

func (k *Kamailio) stop() {
	p := k.proc
	if p == nil {
		return
	}
	pid := p.cmd.Process.Pid
	if !p.exited() {
		// Only the main process: it terminates its children itself. (A
		// SIGTERM to the whole group at once can leave the main process
		// waiting for a child.)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-p.done
}

// URI returns sip:user@Domain.
func (k *Kamailio) URI(user string) string { return "sip:" + user + "@" + k.Domain }

// ProxyURI returns Kamailio's own address as a SIP URI with ;lr, usable as
// an outbound proxy or Route: "sip:127.0.0.1:PORT;lr".
func (k *Kamailio) ProxyURI() string { return "sip:" + k.Addr + ";lr" }

// Log returns the tail of Kamailio's log.
func (k *Kamailio) Log() string { return logTail(k.LogPath) }

// rpc runs kamcmd against the running Kamailio and returns its output. kamcmd
// exits 0 even when the command fails; its output then starts with "error:".
// Arguments that must stay strings need the "s:" prefix (kamcmd sends
// numeric-looking ones as integers).
func (k *Kamailio) rpc(args ...string) (string, error) {
	if k.proc == nil || k.proc.exited() {
		return "", errors.New("kamailio is not running")
	}
	bin, err := lookBinary("kamcmd")
	if err != nil {
		return "", err
	}
	cmd := exec.Command(bin, append([]string{"-s", "unix:" + k.ctl}, args...)...)
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("kamcmd %s: %w: %s", strings.Join(args, " "), err, s)
	}
	if strings.HasPrefix(s, "error:") {
		return s, fmt.Errorf("kamcmd %s: %s", strings.Join(args, " "), s)
	}
	return s, nil
}

// AddUser adds (or changes) a user of Domain; it takes effect at once (over
// Kamailio's control socket) and survives Stop/Start.
func (k *Kamailio) AddUser(t TB, user, password string) {
	t.Helper()
	k.checkUser(t, user, password)
	k.users[user] = password
	if k.proc != nil && !k.proc.exited() {
		if _, err := k.rpc("htable.sets", "users", "s:"+user, "s:"+password); err != nil {
			t.Fatalf("peertest: kamailio: add user %s: %v", user, err)
		}
	}
}

// SetForwardTo changes where requests for ForwardDomain go (host:port), at
// once and for later restarts. The transport stays ForwardTransport.
func (k *Kamailio) SetForwardTo(t TB, hostport string) {
	t.Helper()
	if !kamailioSafe.MatchString(hostport) {
		t.Fatalf("peertest: kamailio: bad forward target %q", hostport)
	}
	k.forwardTo = hostport
	if k.proc != nil && !k.proc.exited() {
		if _, err := k.rpc("htable.sets", "cfg", "forward", "s:"+k.forwardURI()); err != nil {
			t.Fatalf("peertest: kamailio: set forward target: %v", err)
		}
	}
}

var kamContactAddr = regexp.MustCompile(`(?m)^\s*Address:\s*(\S+)`)

// Contacts returns the contact URIs registered for user (of Domain) right
// now, none when the user is not registered.
func (k *Kamailio) Contacts(t TB, user string) []string {
	t.Helper()
	out, err := k.rpc("ul.lookup", "location", "s:"+user)
	if err != nil {
		if strings.Contains(out, "not found") {
			return nil
		}
		t.Fatalf("peertest: kamailio: %v", err)
	}
	var contacts []string
	for _, m := range kamContactAddr.FindAllStringSubmatch(out, -1) {
		contacts = append(contacts, m[1])
	}
	return contacts
}

// WaitRegistered waits until user (of Domain) has at least one registered
// contact and returns the contacts; it fails the test with Kamailio's log
// when timeout passes first.
func (k *Kamailio) WaitRegistered(t TB, user string, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if c := k.Contacts(t, user); len(c) > 0 {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("peertest: kamailio: %s@%s not registered after %v\n--- tail of %s ---\n%s",
				user, k.Domain, timeout, k.LogPath, k.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
