package peertest

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProsodyOptions configure StartProsody. Zero values get defaults.
type ProsodyOptions struct {
	// ComponentDomain is the external component (XEP-0114) domain, default
	// "matrix.localhost".
	ComponentDomain string
	// ComponentSecret is the component's shared secret, default random.
	ComponentSecret string
	// LogLevel is the least level Prosody logs, default "debug" (what a
	// failing test wants); benchmarks use "info", as debug logging of
	// every stanza costs Prosody more than routing it.
	LogLevel string
}

// Prosody is a running Prosody XMPP server started by StartProsody.
//
// It serves the VirtualHost Domain ("localhost") on C2SAddr without TLS (plain
// SASL allowed), a MUC service "conference.localhost" (rooms are not locked on
// creation; their messages are archived for MAM, XEP-0313, and carry the
// room's stanza-id, XEP-0359) and the external component ComponentDomain on ComponentAddr.
// s2s is disabled. All state lives in Dir.
type Prosody struct {
	Domain          string // "localhost"
	ComponentDomain string // external component domain
	ComponentSecret string // external component secret
	C2SAddr         string // client-to-server listener, host:port on 127.0.0.1
	ComponentAddr   string // component listener, host:port on 127.0.0.1
	Dir             string // config, data, pid file and prosody.log

	config   string
	logLevel string
	proc     *process
}

// MUCDomain is the MUC component every Prosody from StartProsody serves.
const MUCDomain = "conference.localhost"

// StartProsody starts Prosody (the Debian package's prosody binary) in
// t.TempDir() on free 127.0.0.1 ports and waits until the component port
// accepts TCP connections. The server is stopped by t.Cleanup. The test is
// skipped (or failed under CI) via Require when prosody is not installed.
func StartProsody(t TB, opts ProsodyOptions) *Prosody {
	t.Helper()
	_, err := lookBinary("prosody")
	if err == nil {
		_, err = lookBinary("prosodyctl")
	}
	Require(t, "prosody", err)

	if opts.ComponentDomain == "" {
		opts.ComponentDomain = "matrix.localhost"
	}
	if opts.ComponentSecret == "" {
		opts.ComponentSecret = randomSecret(16)
	}
	dir := t.TempDir()
	p := &Prosody{
		Domain:          "localhost",
		ComponentDomain: opts.ComponentDomain,
		ComponentSecret: opts.ComponentSecret,
		C2SAddr:         net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t))),
		ComponentAddr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t))),
		Dir:             dir,
		config:          filepath.Join(dir, "prosody.cfg.lua"),
		logLevel:        cmp.Or(opts.LogLevel, "debug"),
	}
	for _, sub := range []string{"data", "certs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			t.Fatalf("peertest: prosody: %v", err)
		}
	}
	if err := os.WriteFile(p.config, []byte(p.configText()), 0o644); err != nil {
		t.Fatalf("peertest: prosody: write config: %v", err)
	}
	t.Cleanup(func() {
		if p.proc != nil {
			p.proc.stop()
		}
	})
	p.Start(t)
	return p
}

func (p *Prosody) configText() string {
	_, c2sPort, _ := net.SplitHostPort(p.C2SAddr)
	_, compPort, _ := net.SplitHostPort(p.ComponentAddr)
	var b strings.Builder
	fmt.Fprintf(&b, `-- written by parley internal/peertest
run_as_root = true
daemonize = false
data_path = %s
certificates = %s
pidfile = %s
log = { { levels = { min = %s }; to = "console"; timestamps = true; } }
admins = { }
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = false
modules_enabled = {
	"roster"; "saslauth"; "disco"; "carbons"; "pep"; "private"; "blocklist";
	"vcard4"; "vcard_legacy"; "version"; "uptime"; "time"; "ping"; "register";
	"mam"; "smacks"; "bookmarks"; "admin_shell"; "posix"; "offline";
}
modules_disabled = { "s2s"; "tls"; }
interfaces = { "127.0.0.1" }
c2s_interfaces = { "127.0.0.1" }
c2s_ports = { %s }
component_interfaces = { "127.0.0.1" }
component_ports = { %s }

VirtualHost "localhost"

Component %q "muc"
	modules_enabled = { "muc_mam"; }
	muc_room_locking = false
	restrict_room_creation = false

Component %s
	component_secret = %s
`,
		luaString(filepath.Join(p.Dir, "data")),
		luaString(filepath.Join(p.Dir, "certs")),
		luaString(filepath.Join(p.Dir, "prosody.pid")), luaString(p.logLevel),
		c2sPort, compPort, MUCDomain,
		luaString(p.ComponentDomain), luaString(p.ComponentSecret))
	return b.String()
}

// luaString quotes s as a Lua string literal.
func luaString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\x00", `\0`)
	return `"` + r.Replace(s) + `"`
}

// Start starts the server again after Stop, with the same configuration, data
// and ports, and waits until the component port accepts TCP connections.
// StartProsody calls it; calling it while the server runs fails the test.
func (p *Prosody) Start(t TB) {
	t.Helper()
	if p.proc != nil && !p.proc.exited() {
		t.Fatalf("peertest: prosody already running")
	}
	p.proc = startProcess(t, "prosody", p.Dir, filepath.Join(p.Dir, "prosody.log"), syscall.SIGTERM, nil, nil,
		"prosody", "-F", "--config", p.config)
	p.proc.waitReady(t, startTimeout(10*time.Second), func() error {
		if err := dialable(p.ComponentAddr); err != nil {
			return err
		}
		return dialable(p.C2SAddr)
	})
}

// Stop stops the server (SIGTERM to its process group) and waits for it to
// exit. Start brings it back. Stopping a stopped server does nothing.
func (p *Prosody) Stop(t TB) {
	t.Helper()
	if p.proc != nil {
		p.proc.stop()
	}
}

// Register creates the account user@Domain with the given password using
// prosodyctl (works whether the server is running or not).
func (p *Prosody) Register(t TB, user, password string) {
	t.Helper()
	cmd := exec.Command("prosodyctl", "--config", p.config, "register", user, p.Domain, password)
	cmd.Dir = p.Dir
	runCmd(t, "prosody register "+user, cmd)
}

// Pid returns the process ID of the running Prosody, or 0.
func (p *Prosody) Pid() int {
	if p.proc == nil || p.proc.exited() {
		return 0
	}
	return p.proc.cmd.Process.Pid
}

// Shell runs one command of Prosody's admin shell (mod_admin_shell, over its
// socket in the data directory) on the running server and returns its
// output; a line starting with ">" is Lua run inside the server. A failure
// to run it fails the test.
func (p *Prosody) Shell(t TB, command string) string {
	t.Helper()
	cmd := exec.Command("prosodyctl", "--config", p.config, "shell", command)
	cmd.Dir = p.Dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("peertest: prosody shell %q: %v\n%s", command, err, out)
	}
	return string(out)
}
