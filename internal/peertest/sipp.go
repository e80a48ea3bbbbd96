package peertest

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The scenarios shipped with peertest, run by name (SippOptions.Scenario).
// Each file documents its call flow and its -set variables in a comment.
//
//go:embed sipp/*.xml
var sippFS embed.FS

// sippScenarioSpec is what peertest knows about an embedded scenario.
type sippScenarioSpec struct {
	defaults map[string]string // -set values used unless SippOptions.Vars has them
	required []string          // -set variables that must be given
	ooc      string            // default out-of-call scenario
}

var sippSpecs = map[string]sippScenarioSpec{
	"uac_register_auth.xml": {
		defaults: map[string]string{"expires": "3600"},
		required: []string{"domain"},
	},
	"uac_message.xml": {
		defaults: map[string]string{"from": "sip:sipp@127.0.0.1", "body": "hello from sipp", "ctype": "text/plain;charset=UTF-8"},
		required: []string{"domain"},
	},
	"uac_message_expect.xml": {
		defaults: map[string]string{"from": "sip:sipp@127.0.0.1", "body": "hello from sipp", "ctype": "text/plain;charset=UTF-8"},
		required: []string{"domain", "expect"},
	},
	"uas_message.xml": {},
	"uac_register_then_uas.xml": {
		defaults: map[string]string{"expires": "3600", "messages": "1"},
		required: []string{"domain"},
		ooc:      "uas_message.xml",
	},
}

// SippScenarios returns the names of the embedded scenarios.
func SippScenarios() []string {
	entries, _ := fs.ReadDir(sippFS, "sipp")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// SippScenario returns the text of the embedded scenario name (for instance
// to run a modified copy through SippOptions.ScenarioXML). It panics when
// there is no such scenario.
func SippScenario(name string) string {
	b, err := sippFS.ReadFile(path.Join("sipp", name))
	if err != nil {
		panic("peertest: no embedded sipp scenario " + name)
	}
	return string(b)
}

// SippOptions configure RunSipp and StartSipp. Zero values get defaults.
type SippOptions struct {
	// Scenario is the name of an embedded scenario ("uac_message.xml"; see
	// SippScenarios) or the path of a scenario file. With ScenarioXML set it
	// only names the run.
	Scenario string
	// ScenarioXML, when not empty, is the scenario itself.
	ScenarioXML string
	// OOCScenario is the out-of-call scenario (-oocsf), an embedded name or a
	// path. uac_register_then_uas.xml gets uas_message.xml unless set.
	OOCScenario string

	// Target is the remote host:port a UAC sends to. A UAS that waits for
	// requests leaves it empty.
	Target string
	// Transport is "udp" (default) or "tcp" (sipp -t u1 / t1).
	Transport string
	// Service is -s: the user part of the Request-URI, or the registered
	// user in the register scenarios (sipp's default is "service").
	Service string
	// AuthUser and AuthPassword answer digest challenges (-au, -ap; -au
	// defaults to Service).
	AuthUser, AuthPassword string
	// Vars are -set variables. They must be declared in the scenario's
	// <Global variables>; embedded scenarios fill in defaults for the
	// optional ones and the test fails when a required one is missing.
	Vars map[string]string

	// Calls is -m, the number of calls after which sipp exits (default 1).
	Calls int
	// Rate is -r, new calls per second (0: sipp's default, 10).
	Rate float64
	// Limit is -l, the maximum number of simultaneous calls (0: sipp's default).
	Limit int
	// LocalPort is -p, the SIP port sipp binds on 127.0.0.1 (0: a free one).
	LocalPort int
	// Timeout is sipp's global -timeout; with -timeout_error sipp then exits
	// with a failure. Default 15s for RunSipp and 60s for StartSipp (twice
	// that under CI). Go kills sipp 10s after it if sipp hangs.
	Timeout time.Duration

	// Args are extra sipp arguments (e.g. "-recv_timeout", "5000").
	Args []string
	// Name labels the run in logs (default: the scenario's base name).
	Name string
	// AllowFailure keeps RunSipp and Wait from failing the test when sipp
	// exits with a non-zero status: the caller checks SippResult.
	AllowFailure bool
}

// SippResult is the outcome of a finished sipp run.
type SippResult struct {
	// ExitCode is sipp's exit status: 0 when all calls succeeded, 1 when
	// some failed, 97 after an internal stop command, 99 when no call was
	// processed, 255 on a fatal error (or -timeout with -timeout_error);
	// -1 when sipp was killed by a signal.
	ExitCode int
	// Successful and Failed are the cumulated SuccessfulCall(C) and
	// FailedCall(C) of sipp's statistics (-trace_stat), main scenario only.
	Successful, Failed int
	// Duration is the wall time of the run.
	Duration time.Duration

	Dir        string // directory with the scenario copy and all the logs
	ErrorLog   string // -trace_err file (may not exist when sipp had nothing to say)
	MessageLog string // -trace_msg file: every SIP message sent and received
	StatFile   string // -trace_stat CSV
	LogFile    string // -trace_logs file: output of the scenario's <log> actions
	Output     string // sipp's stdout and stderr (screens, start errors)
}

// OK reports whether sipp exited 0 with no failed call.
func (r SippResult) OK() bool { return r.ExitCode == 0 && r.Failed == 0 }

// Messages returns every SIP message sipp logged (sent and received).
func (r SippResult) Messages() []SipMessage {
	msgs, _ := ParseSippMessageLog(r.MessageLog)
	return msgs
}

// Received returns the requests sipp received with the given method (all
// received requests when method is "").
func (r SippResult) Received(method string) []SipMessage {
	return filterSip(r.Messages(), method)
}

// Logs returns the lines the scenario's <log> actions wrote.
func (r SippResult) Logs() []string { return readLines(r.LogFile) }

// Diagnostics returns the tails of sipp's error log and output, for failure
// messages.
func (r SippResult) Diagnostics() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sipp exit code %d, %d successful / %d failed call(s), dir %s", r.ExitCode, r.Successful, r.Failed, r.Dir)
	if _, err := os.Stat(r.ErrorLog); err == nil {
		fmt.Fprintf(&b, "\n--- tail of %s ---\n%s", r.ErrorLog, logTail(r.ErrorLog))
	}
	fmt.Fprintf(&b, "\n--- tail of %s ---\n%s", r.Output, tailLines(logTail(r.Output), 40))
	return b.String()
}

func readLines(p string) []string {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// SippProcess is a sipp running in the background (StartSipp), typically a
// UAS waiting for requests.
type SippProcess struct {
	Name string
	// Addr is the host:port sipp's SIP socket is bound to (127.0.0.1).
	Addr string
	Port int
	// Transport is "udp" or "tcp".
	Transport string
	// Dir holds the logs (see SippResult).
	Dir string

	res     SippResult
	opts    SippOptions
	timeout time.Duration
	proc    *process
}

// sippRun is a prepared sipp command line.
type sippRun struct {
	name    string
	argv    []string
	res     SippResult
	port    int
	trans   string
	timeout time.Duration
}

func prepareSipp(t TB, opts SippOptions, defTimeout time.Duration) *sippRun {
	t.Helper()
	bin, err := lookBinary("sipp")
	Require(t, "sipp", err)

	if opts.Scenario == "" && opts.ScenarioXML == "" {
		t.Fatalf("peertest: sipp: no scenario")
	}
	name := opts.Name
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(opts.Scenario), ".xml")
		if name == "" || name == "." {
			name = "scenario"
		}
	}
	dir := t.TempDir()
	vars := map[string]string{}
	var spec sippScenarioSpec
	scen := ""
	switch {
	case opts.ScenarioXML != "":
		scen = filepath.Join(dir, "scenario.xml")
		writeFile(t, scen, opts.ScenarioXML)
	case isEmbeddedSipp(opts.Scenario):
		spec = sippSpecs[opts.Scenario]
		scen = filepath.Join(dir, opts.Scenario)
		writeFile(t, scen, SippScenario(opts.Scenario))
	default:
		if _, err := os.Stat(opts.Scenario); err != nil {
			t.Fatalf("peertest: sipp: scenario %q is neither embedded (%s) nor a readable file: %v",
				opts.Scenario, strings.Join(SippScenarios(), ", "), err)
		}
		scen = opts.Scenario
	}
	for k, v := range spec.defaults {
		vars[k] = v
	}
	for k, v := range opts.Vars {
		vars[k] = v
	}
	for _, k := range spec.required {
		if _, ok := vars[k]; !ok {
			t.Fatalf("peertest: sipp %s: -set variable %q is required (SippOptions.Vars)", opts.Scenario, k)
		}
	}
	ooc := opts.OOCScenario
	if ooc == "" {
		ooc = spec.ooc
	}
	if ooc != "" && isEmbeddedSipp(ooc) {
		p := filepath.Join(dir, "ooc_"+ooc)
		writeFile(t, p, SippScenario(ooc))
		ooc = p
	}

	trans := strings.ToLower(opts.Transport)
	switch trans {
	case "", "udp":
		trans = "udp"
	case "tcp":
	default:
		t.Fatalf("peertest: sipp: transport %q: want udp or tcp", opts.Transport)
	}
	port := opts.LocalPort
	if port == 0 {
		port = freeUDPTCPPort(t)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = startTimeout(defTimeout)
	}
	calls := opts.Calls
	if calls == 0 {
		calls = 1
	}

	r := &sippRun{name: name, port: port, trans: trans, timeout: timeout}
	r.res = SippResult{
		Dir:        dir,
		ErrorLog:   filepath.Join(dir, "errors.log"),
		MessageLog: filepath.Join(dir, "messages.log"),
		StatFile:   filepath.Join(dir, "stat.csv"),
		LogFile:    filepath.Join(dir, "logs.log"),
		Output:     filepath.Join(dir, "sipp.out"),
	}
	argv := []string{bin}
	if opts.Target != "" {
		argv = append(argv, opts.Target)
	}
	argv = append(argv, "-sf", scen)
	if ooc != "" {
		argv = append(argv, "-oocsf", ooc)
	}
	tflag := "u1"
	if trans == "tcp" {
		tflag = "t1"
	}
	argv = append(argv,
		"-t", tflag,
		"-i", "127.0.0.1",
		"-p", strconv.Itoa(port),
		"-mi", "127.0.0.1",
		"-mp", strconv.Itoa(freeUDPPorts(t, 4)),
		"-ci", "127.0.0.1",
		"-cp", strconv.Itoa(freeUDPTCPPort(t)),
		"-m", strconv.Itoa(calls),
		"-trace_err", "-error_file", r.res.ErrorLog,
		"-trace_msg", "-message_file", r.res.MessageLog,
		"-trace_stat", "-stf", r.res.StatFile,
		"-trace_logs", "-log_file", r.res.LogFile,
		"-timeout", strconv.Itoa(int((timeout+time.Second-1)/time.Second))+"s", "-timeout_error",
		"-nostdin",
	)
	if opts.Rate > 0 {
		argv = append(argv, "-r", strconv.FormatFloat(opts.Rate, 'f', -1, 64))
	}
	if opts.Limit > 0 {
		argv = append(argv, "-l", strconv.Itoa(opts.Limit))
	}
	if opts.Service != "" {
		argv = append(argv, "-s", opts.Service)
	}
	if opts.AuthUser != "" {
		argv = append(argv, "-au", opts.AuthUser)
	}
	if opts.AuthPassword != "" {
		argv = append(argv, "-ap", opts.AuthPassword)
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		argv = append(argv, "-set", k, vars[k])
	}
	argv = append(argv, opts.Args...)
	r.argv = argv
	return r
}

func isEmbeddedSipp(name string) bool {
	if strings.ContainsAny(name, `/\`) {
		return false
	}
	_, err := fs.Stat(sippFS, path.Join("sipp", name))
	return err == nil
}

func writeFile(t TB, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatalf("peertest: write %s: %v", p, err)
	}
}

func (r *sippRun) start(t TB) *process {
	t.Helper()
	return startProcess(t, "sipp "+r.name, r.res.Dir, r.res.Output, syscall.SIGTERM, nil, nil, r.argv...)
}

// finish waits (up to the sipp timeout plus a grace period) for p to exit
// and fills in the result.
func (r *sippRun) finish(p *process) SippResult {
	select {
	case <-p.done:
	case <-time.After(r.timeout + 10*time.Second):
		p.stop()
	}
	p.stop() // reap stray group members, no-op otherwise
	res := r.res
	res.Duration = time.Since(p.started)
	res.ExitCode = p.cmd.ProcessState.ExitCode()
	res.Successful, res.Failed, _ = parseSippStats(res.StatFile)
	return res
}

// parseSippStats reads the last line of a sipp -trace_stat CSV and returns
// its SuccessfulCall(C) and FailedCall(C) counters.
func parseSippStats(p string) (ok, failed int, err error) {
	lines := readLines(p)
	if len(lines) < 2 {
		return 0, 0, errors.New("no statistics in " + p)
	}
	head := strings.Split(lines[0], ";")
	last := strings.Split(lines[len(lines)-1], ";")
	col := func(name string) int {
		for i, h := range head {
			if h == name && i < len(last) {
				n, _ := strconv.Atoi(strings.TrimSpace(last[i]))
				return n
			}
		}
		return 0
	}
	return col("SuccessfulCall(C)"), col("FailedCall(C)"), nil
}

// RunSipp runs sipp in the foreground until it exits (after opts.Calls calls,
// or its timeout) and returns the outcome. Unless opts.AllowFailure is set, a
// non-zero exit status or a failed call fails the test with the tails of
// sipp's error log and output. The test is skipped (failed under CI) through
// Require when sipp is not installed.
func RunSipp(t TB, opts SippOptions) SippResult {
	t.Helper()
	var r *sippRun
	var res SippResult
	for attempt := 1; ; attempt++ {
		r = prepareSipp(t, opts, 15*time.Second)
		res = r.finish(r.start(t))
		if res.ExitCode != sippBindFailed || attempt == sippStarts {
			break
		}
		t.Logf("peertest: sipp %s could not bind its ports (exit %d); starting it again with others", r.name, res.ExitCode)
	}
	if !res.OK() && !opts.AllowFailure {
		t.Fatalf("peertest: sipp %s failed: %s", r.name, res.Diagnostics())
	}
	t.Logf("peertest: sipp %s: exit %d, %d successful / %d failed call(s) in %v (logs %s)",
		r.name, res.ExitCode, res.Successful, res.Failed, res.Duration.Round(time.Millisecond), res.Dir)
	return res
}

// sippBindFailed is sipp's exit status when it cannot bind one of its
// sockets. peertest checks that its ports are free before it starts sipp,
// but another test binary running at the same time may take one in
// between; sipp is then started again with new ports, up to sippStarts
// times in all.
const (
	sippBindFailed = 254
	sippStarts     = 3
)

// bindFailed waits until sipp p has bound its SIP port or exited, and
// reports whether it exited because it could not bind its sockets.
func (r *sippRun) bindFailed(p *process) bool {
	deadline := time.Now().Add(startTimeout(5 * time.Second))
	for time.Now().Before(deadline) {
		if p.exited() {
			return p.cmd.ProcessState.ExitCode() == sippBindFailed
		}
		if bound, ok := portBound(r.trans, r.port); !ok || bound {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// StartSipp starts sipp in the background and returns once its SIP socket is
// bound (for UDP sipp only reads requests after that; a UAC starts sending
// at once). t.Cleanup stops it. Wait collects the result of a sipp that ends
// on its own (after opts.Calls calls), Stop ends it earlier.
func StartSipp(t TB, opts SippOptions) *SippProcess {
	t.Helper()
	var r *sippRun
	var proc *process
	for attempt := 1; ; attempt++ {
		r = prepareSipp(t, opts, 60*time.Second)
		proc = r.start(t)
		if attempt == sippStarts || !r.bindFailed(proc) {
			break
		}
		t.Logf("peertest: sipp %s could not bind its ports (exit %d); starting it again with others", r.name, sippBindFailed)
	}
	s := &SippProcess{
		Name:      r.name,
		Addr:      net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)),
		Port:      r.port,
		Transport: r.trans,
		Dir:       r.res.Dir,
		res:       r.res,
		opts:      opts,
		timeout:   r.timeout,
	}
	s.proc = proc
	t.Cleanup(s.proc.stop)
	s.proc.waitReady(t, startTimeout(5*time.Second), func() error {
		bound, ok := portBound(r.trans, r.port)
		if !ok {
			// No /proc: give sipp a moment instead.
			if time.Since(s.proc.started) < 300*time.Millisecond {
				return errors.New("waiting")
			}
			return nil
		}
		if !bound {
			return fmt.Errorf("%s port %d not bound yet", r.trans, r.port)
		}
		return nil
	})
	return s
}

// URI returns sip:user@Addr, the address of a user at this sipp.
func (s *SippProcess) URI(user string) string {
	if user == "" {
		return "sip:" + s.Addr
	}
	return "sip:" + user + "@" + s.Addr
}

// Exited reports whether sipp has exited.
func (s *SippProcess) Exited() bool { return s.proc.exited() }

func (s *SippProcess) result() SippResult {
	r := &sippRun{name: s.Name, res: s.res, timeout: s.timeout}
	return r.finish(s.proc)
}

// Wait waits until sipp exits on its own (its calls are done, or its
// -timeout passed) and returns the outcome. Unless AllowFailure was set, a
// non-zero exit status or a failed call fails the test with sipp's logs.
func (s *SippProcess) Wait(t TB) SippResult {
	t.Helper()
	res := s.result()
	if !res.OK() && !s.opts.AllowFailure {
		t.Fatalf("peertest: sipp %s failed: %s", s.Name, res.Diagnostics())
	}
	t.Logf("peertest: sipp %s: exit %d, %d successful / %d failed call(s) after %v (logs %s)",
		s.Name, res.ExitCode, res.Successful, res.Failed, res.Duration.Round(time.Millisecond), res.Dir)
	return res
}

// Stop ends sipp (SIGUSR1, sipp's smooth exit: no new calls, statistics
// written; SIGTERM then SIGKILL to its process group if it lingers) and
// returns the outcome. It never fails the test: check the result. Stopping a
// sipp that already exited just returns its result.
func (s *SippProcess) Stop(t TB) SippResult {
	t.Helper()
	if !s.proc.exited() {
		_ = syscall.Kill(s.proc.cmd.Process.Pid, syscall.SIGUSR1)
		select {
		case <-s.proc.done:
		case <-time.After(3 * time.Second):
		}
		s.proc.stop()
	}
	return s.result()
}

// Messages returns the SIP messages sipp logged so far (sent and received).
func (s *SippProcess) Messages() []SipMessage {
	msgs, _ := ParseSippMessageLog(s.res.MessageLog)
	return msgs
}

// Received returns the requests with the given method sipp received so far
// (all received requests when method is "").
func (s *SippProcess) Received(method string) []SipMessage {
	return filterSip(s.Messages(), method)
}

// Logs returns the lines the scenario's <log> actions wrote so far.
func (s *SippProcess) Logs() []string { return readLines(s.res.LogFile) }

// WaitReceived waits until sipp has received at least n requests with the
// given method ("" for any) and returns them; it fails the test with sipp's
// logs when timeout passes first. A retransmitted request counts each time
// it arrives.
func (s *SippProcess) WaitReceived(t TB, method string, n int, timeout time.Duration) []SipMessage {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.Received(method)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) || s.proc.exited() {
			what := "timed out"
			if s.proc.exited() {
				what = "sipp exited"
			}
			t.Fatalf("peertest: sipp %s: %s waiting for %d %s request(s), got %d\n--- tail of %s ---\n%s\n--- tail of %s ---\n%s",
				s.Name, what, n, method, len(got), s.res.ErrorLog, logTail(s.res.ErrorLog),
				s.res.Output, tailLines(logTail(s.res.Output), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
