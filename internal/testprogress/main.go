// Command testprogress shows the progress of a long `go test` run: it reads
// `go test -json` on standard input and prints one line as each top-level
// test ends (pass, FAIL or skip, with its time or the reason of the skip),
// the whole output of each test that fails, and go test's own lines per
// package (`ok`, `FAIL`, `?`) as go test prints them, so the closing lines
// of a run read as before. While no line has been printed for -every, it
// lists the tests still running and for how long. `make test` runs it
// through scripts/test.sh.
//
// Usage:
//
//	go test -json ./... | testprogress [-trim PREFIX] [-every 1m]
//
// It exits 1 when a test or a package failed (or did not build), 2 when it
// cannot read its input, 0 otherwise.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	trim := flag.String("trim", "", "a `PREFIX` to cut from package paths (the module path and a slash)")
	every := flag.Duration("every", 30*time.Second, "after this long without a line, list the tests still running (0: never)")
	flag.Parse()
	f := newFormatter(os.Stdout, *trim)
	done := make(chan struct{})
	if *every > 0 {
		go func() {
			t := time.NewTicker(*every / 4)
			defer t.Stop()
			for {
				select {
				case now := <-t.C:
					f.tick(now, *every)
				case <-done:
					return
				}
			}
		}()
	}
	err := f.read(os.Stdin)
	close(done)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testprogress:", err)
		os.Exit(2)
	}
	if f.hasFailed() {
		os.Exit(1)
	}
}

// testEvent is one line of `go test -json` (cmd/test2json), with the
// build events of Go 1.24 and later (ImportPath, build-output, build-fail).
type testEvent struct {
	Time       time.Time
	Action     string
	Package    string
	ImportPath string
	Test       string
	Elapsed    float64
	Output     string
}

// test is a top-level test that is running.
type test struct {
	started time.Time
	output  []string // its output and its subtests', printed if it fails
}

// formatter turns test events into progress lines. Its methods are safe for
// concurrent use (the ticker calls tick).
type formatter struct {
	mu      sync.Mutex
	w       io.Writer
	trim    string
	running map[[2]string]*test // by package and top-level test name
	last    time.Time           // when a line was last printed
	failed  bool
}

func newFormatter(w io.Writer, trim string) *formatter {
	return &formatter{w: w, trim: trim, running: map[[2]string]*test{}, last: time.Now()}
}

// hasFailed reports whether a test or a package failed.
func (f *formatter) hasFailed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// read formats every line of r until its end.
func (f *formatter) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		f.line(sc.Bytes(), time.Now())
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read go test -json: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushRunning("")
	return nil
}

// line formats one input line; now is when it was read.
func (f *formatter) line(b []byte, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var e testEvent
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &e) != nil {
		f.print(now, string(b)+"\n") // not go test -json: a go command's own message
		return
	}
	pkg := e.Package
	if pkg == "" {
		pkg = e.ImportPath
	}
	switch {
	case e.Action == "build-output":
		f.print(now, e.Output)
	case e.Action == "build-fail":
		f.failed = true
	case e.Test == "":
		f.packageEvent(e, pkg, now)
	default:
		f.testEvent(e, pkg, now)
	}
}

// packageEvent prints go test's own lines of a package (its ok or FAIL line,
// panics, timeouts), except the bare PASS that go test prints only with -v.
func (f *formatter) packageEvent(e testEvent, pkg string, now time.Time) {
	switch e.Action {
	case "output":
		if e.Output != "PASS\n" {
			f.print(now, e.Output)
		}
	case "fail":
		f.failed = true
		f.flushRunning(pkg) // a timeout or a panic: what the running tests said
	}
}

func (f *formatter) testEvent(e testEvent, pkg string, now time.Time) {
	name, _, sub := strings.Cut(e.Test, "/")
	key := [2]string{pkg, name}
	t := f.running[key]
	switch e.Action {
	case "run":
		if !sub && t == nil {
			f.running[key] = &test{started: now}
		}
	case "output":
		if t != nil {
			t.output = append(t.output, e.Output)
		}
	case "pass", "skip", "fail":
		if sub || t == nil {
			if e.Action == "fail" {
				f.failed = true
			}
			return
		}
		delete(f.running, key)
		elapsed := fmt.Sprintf("(%.2fs)", e.Elapsed)
		switch e.Action {
		case "pass":
			f.print(now, fmt.Sprintf("  pass  %s %s %s\n", f.short(pkg), name, elapsed))
		case "skip":
			f.print(now, fmt.Sprintf("  skip  %s %s%s\n", f.short(pkg), name, skipReason(t.output)))
		case "fail":
			f.failed = true
			f.print(now, fmt.Sprintf("  FAIL  %s %s %s\n", f.short(pkg), name, elapsed))
			f.print(now, strings.Join(t.output, ""))
		}
	}
}

// flushRunning prints the output of the tests of pkg ("" for every package)
// that never ended, and forgets them. f.mu is held.
func (f *formatter) flushRunning(pkg string) {
	for _, key := range f.sortedRunning() {
		if pkg != "" && key[0] != pkg {
			continue
		}
		t := f.running[key]
		delete(f.running, key)
		f.print(time.Now(), fmt.Sprintf("  ended without a result: %s %s\n%s", f.short(key[0]), key[1], strings.Join(t.output, "")))
	}
}

// tick lists the tests still running when nothing was printed for every.
func (f *formatter) tick(now time.Time, every time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Sub(f.last) < every || len(f.running) == 0 {
		return
	}
	var names []string
	for _, key := range f.sortedRunning() {
		names = append(names, fmt.Sprintf("%s %s (%s)", f.short(key[0]), key[1], now.Sub(f.running[key].started).Round(time.Second)))
	}
	f.print(now, "  ...   still running: "+strings.Join(names, ", ")+"\n")
}

func (f *formatter) sortedRunning() [][2]string {
	keys := make([][2]string, 0, len(f.running))
	for k := range f.running {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i][0] < keys[j][0] || keys[i][0] == keys[j][0] && keys[i][1] < keys[j][1]
	})
	return keys
}

// print writes s. f.mu is held.
func (f *formatter) print(now time.Time, s string) {
	if s == "" {
		return
	}
	_, _ = io.WriteString(f.w, s)
	f.last = now
}

func (f *formatter) short(pkg string) string {
	if s := strings.TrimPrefix(pkg, f.trim); s != "" {
		return s
	}
	return pkg
}

// skipReason returns ": " and the last line a skipped test logged (the
// reason of t.Skip), or "".
func skipReason(output []string) string {
	for i := len(output) - 1; i >= 0; i-- {
		s := strings.TrimSpace(output[i])
		if s == "" || strings.HasPrefix(s, "--- SKIP") || strings.HasPrefix(s, "=== ") {
			continue
		}
		return ": " + s
	}
	return ""
}
