package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/parleygw/parley/internal/peertest"
)

var _ peertest.TB = (*runner)(nil)

// runner is what peertest needs from a test (peertest.TB), for a program. A
// fatal error or a missing peer ends the program: the cleanups run, newest
// first, and the process exits. Log lines go to out.
//
// A runner made by scope shares its parent's exit but keeps its own cleanups,
// which close runs early (and the parent's exit runs if close was not called).
type runner struct {
	dir    string // scratch directory: TempDir makes directories under it
	out    io.Writer
	parent *runner // nil for the root

	mu       sync.Mutex
	cleanups []func()
	closed   bool
	temps    int // directories TempDir made (root only)

	// root only: set once exit has started, and what to do afterwards.
	exiting   bool
	failed    bool   // the demo failed: cleanups may say more (Failed)
	why       string // the first line of the failure, repeated at the end
	removeDir bool   // remove dir after a successful exit
}

func newRunner(dir string, out io.Writer, removeDir bool) *runner {
	return &runner{dir: dir, out: out, removeDir: removeDir}
}

func (r *runner) root() *runner {
	for r.parent != nil {
		r = r.parent
	}
	return r
}

// Helper does nothing: there is no test log to attribute lines in.
func (r *runner) Helper() {}

// Log prints a progress line from peertest (a server ready, a client's
// standard error).
func (r *runner) Log(args ...any) { r.Logf("%s", strings.TrimSuffix(fmt.Sprintln(args...), "\n")) }

// Logf prints a progress line from peertest.
func (r *runner) Logf(format string, args ...any) {
	_, _ = fmt.Fprintf(r.out, "  · %s\n", fmt.Sprintf(format, args...))
}

// Fatal prints the error and ends the program with status 1.
func (r *runner) Fatal(args ...any) { r.fail(strings.TrimSuffix(fmt.Sprintln(args...), "\n")) }

// Fatalf prints the error and ends the program with status 1.
func (r *runner) Fatalf(format string, args ...any) { r.fail(fmt.Sprintf(format, args...)) }

func (r *runner) fail(msg string) {
	root := r.root()
	if root.stopping() {
		// The servers are being stopped under our feet: not news.
		select {}
	}
	_, _ = fmt.Fprintf(os.Stderr, "\ndemo: FAILED: %s\n", msg)
	root.mu.Lock()
	root.failed = true
	root.why, _, _ = strings.Cut(msg, "\n")
	root.mu.Unlock()
	root.exit(1, true)
}

// Failed reports whether the demo failed, for the cleanups of peertest
// that then print more (the VoIP client's standard error).
func (r *runner) Failed() bool {
	root := r.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	return root.failed
}

// Skip is how peertest reports a missing server or client: the demo cannot
// run without it.
func (r *runner) Skip(args ...any) {
	_, _ = fmt.Fprintf(os.Stderr, "\ndemo: %s\n\nThe demo needs the local peers. Install them with\n\n    make peers    (scripts/install-peers.sh)\n\nand run `make demo` again.\n",
		strings.TrimSuffix(fmt.Sprintln(args...), "\n"))
	r.root().exit(1, false)
}

// Cleanup registers f to run when the runner closes or the program exits,
// after every function registered later. Registered once closing has begun,
// f runs at once.
func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		f()
		return
	}
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}

// TempDir makes a new directory under the scratch directory.
func (r *runner) TempDir() string {
	root := r.root()
	root.mu.Lock()
	root.temps++
	n := root.temps
	root.mu.Unlock()
	d := filepath.Join(root.dir, fmt.Sprintf("tmp%02d", n))
	if err := os.MkdirAll(d, 0o750); err != nil {
		r.Fatalf("temporary directory: %v", err)
	}
	return d
}

// scope returns a runner whose cleanups run when close is called, or with
// r's if r closes first.
func (r *runner) scope() *runner {
	s := &runner{dir: r.dir, out: r.out, parent: r}
	r.Cleanup(s.close)
	return s
}

// quiet returns a scope of r (see scope) that prints no progress lines.
func (r *runner) quiet() *runner {
	s := r.scope()
	s.out = io.Discard
	return s
}

// close runs r's cleanups, newest first. Calling it again does nothing.
func (r *runner) close() {
	r.mu.Lock()
	r.closed = true
	fs := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// stopping reports whether exit has begun.
func (r *runner) stopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.exiting
}

// exit runs every cleanup and ends the program with code. A scratch
// directory the demo created is removed unless keepLogs. It never returns: a
// second caller (a signal during the cleanups, a server found stopped) waits
// for the first to end the program. Cleanup functions must not call Fatal.
func (r *runner) exit(code int, keepLogs bool) {
	r.mu.Lock()
	if r.exiting {
		r.mu.Unlock()
		select {}
	}
	r.exiting = true
	why := r.why
	r.mu.Unlock()
	t0 := time.Now()
	r.close()
	r.Logf("everything stopped in %s", round(time.Since(t0)))
	switch {
	case keepLogs:
		_, _ = fmt.Fprintf(os.Stderr, "demo: logs kept in %s\n", r.dir)
		if why != "" {
			// The cleanups printed much since the failure: say it again
			// where the eye (and a truncated log) ends.
			_, _ = fmt.Fprintf(os.Stderr, "demo: FAILED: %s (in full above)\n", why)
		}
	case r.removeDir:
		_ = os.RemoveAll(r.dir)
	}
	os.Exit(code)
}
