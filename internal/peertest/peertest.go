// Package peertest starts real peer servers (Prosody, Synapse, Dendrite,
// PostgreSQL) for Parley's integration tests.
//
// Every server runs as a child process in its own process group, listens on
// 127.0.0.1 only (free ports picked at start), keeps all its state and its log
// in a per-test temporary directory, and is stopped by t.Cleanup. When a
// server does not become ready in time the test fails with the tail of that
// server's log.
//
// The binaries come from the Debian packages (prosody, postgresql) and from
// the peers cache directory (see Dir) that scripts/install-peers.sh fills
// (the Synapse venv and the Dendrite binaries). A missing binary is reported
// through Require: the test is skipped locally and fails when $CI is set.
package peertest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TB is the part of testing.TB that peertest uses, so that a program that is
// not a test (internal/demo) can start the same servers and clients:
// testing.TB has a private method and only the testing package implements it.
// *testing.T and *testing.B satisfy TB.
//
// Fatal, Fatalf and Skip must not return (testing's stop the test goroutine).
// Cleanup functions run in reverse order of registration when the test or
// program ends. TempDir returns a new empty directory on every call.
type TB interface {
	Helper()
	Cleanup(f func())
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Log(args ...any)
	Logf(format string, args ...any)
	Skip(args ...any)
	TempDir() string
}

// Require reports a missing peer. When err is nil it does nothing. Otherwise
// it calls t.Skip with a message naming the peer, the error and how to install
// it — or t.Fatal instead when the CI environment variable is set (non-empty),
// so that a CI run never silently skips integration tests.
func Require(t TB, peer string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("peer %s is not available: %v (run scripts/install-peers.sh; peers dir %s)", peer, err, Dir())
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

var (
	dirOnce sync.Once
	dirPath string
)

// Dir returns the peers cache directory: $PARLEY_PEERS when set, otherwise
// <repo>/.cache/peers where <repo> is the nearest directory containing go.mod,
// searched upwards from the working directory (and, failing that, from this
// source file). It is the directory scripts/install-peers.sh installs into.
func Dir() string {
	if d := os.Getenv("PARLEY_PEERS"); d != "" {
		return d
	}
	dirOnce.Do(func() {
		var starts []string
		if wd, err := os.Getwd(); err == nil {
			starts = append(starts, wd)
		}
		if _, file, _, ok := runtime.Caller(0); ok {
			starts = append(starts, filepath.Dir(file))
		}
		for _, s := range starts {
			if root := findRepoRoot(s); root != "" {
				dirPath = filepath.Join(root, ".cache", "peers")
				return
			}
		}
		dirPath = filepath.Join(".cache", "peers")
	})
	return dirPath
}

func findRepoRoot(dir string) string {
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago (the
// kernel picks it; the listener is closed before returning). It fails the test
// if no port can be obtained.
func FreePort(t TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("peertest: no free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// randomSecret returns n random bytes, hex encoded.
func randomSecret(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// startTimeout is how long a server may take to become ready.
func startTimeout(base time.Duration) time.Duration {
	if os.Getenv("CI") != "" {
		return 2 * base
	}
	return base
}

// process is one running server, leader of its own process group.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	stopSig syscall.Signal
	done    chan struct{}
	waitErr error
	started time.Time
}

// startProcess starts argv in dir with stdout and stderr appended to logPath.
// cred, when non-nil, runs the process as another OS user.
func startProcess(t TB, name, dir, logPath string, stopSig syscall.Signal, cred *syscall.Credential, env []string, argv ...string) *process {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("peertest: %s: open log: %v", name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "\n=== peertest: %s starting at %s: %s\n", name, time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = sysProcAttr()
	cmd.SysProcAttr.Credential = cred
	p := &process{name: name, logPath: logPath, cmd: cmd, stopSig: stopSig, done: make(chan struct{}), started: time.Now()}
	if err := cmd.Start(); err != nil {
		t.Fatalf("peertest: %s: start %s: %v", name, argv[0], err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends the stop signal to the process group, waits for the leader to
// exit (SIGKILL after a grace period) and then kills whatever is left of the
// group. It is safe to call more than once.
func (p *process) stop() {
	pgid := p.cmd.Process.Pid
	if !p.exited() {
		_ = syscall.Kill(-pgid, p.stopSig)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	// Stray members of the group (helpers, workers) must not outlive the test.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// waitReady polls ready every 50 ms until it returns nil. It fails the test
// with the log tail when the process exits first or timeout passes.
func (p *process) waitReady(t TB, timeout time.Duration, ready func() error) time.Duration {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if p.exited() {
			t.Fatalf("peertest: %s exited during startup (%v); last check: %v\n--- tail of %s ---\n%s",
				p.name, p.waitErr, last, p.logPath, logTail(p.logPath))
		}
		if last = ready(); last == nil {
			d := time.Since(p.started)
			t.Logf("peertest: %s ready in %v (log %s)", p.name, d.Round(time.Millisecond), p.logPath)
			return d
		}
		if time.Now().After(deadline) {
			p.stop()
			t.Fatalf("peertest: %s not ready after %v: %v\n--- tail of %s ---\n%s",
				p.name, timeout, last, p.logPath, logTail(p.logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logTail returns the last lines of a log file (at most about 6 KB).
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	const max = 6 << 10
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// dialable reports whether addr accepts a TCP connection.
func dialable(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// lookBinary finds an executable file at an absolute path or on PATH.
func lookBinary(name string) (string, error) {
	if filepath.IsAbs(name) {
		st, err := os.Stat(name)
		if err != nil {
			return "", err
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return "", errors.New(name + " is not executable")
		}
		return name, nil
	}
	return exec.LookPath(name)
}

// runCmd runs a short helper command and fails the test with its output on error.
func runCmd(t TB, what string, cmd *exec.Cmd) []byte {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("peertest: %s: %s: %v\n%s", what, strings.Join(cmd.Args, " "), err, out)
	}
	return out
}
