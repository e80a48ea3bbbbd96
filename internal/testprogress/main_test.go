package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// testdata/run.json is real go test -json output of four packages run at
// once: a passing one (a), one with a pass, a failing subtest and a skip (b),
// one that does not build (c) and one without tests (d).
func TestFormatsARealRun(t *testing.T) {
	in, err := os.ReadFile("testdata/run.json")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	f := newFormatter(&out, "exp/")
	if err := f.read(bytes.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if !f.hasFailed() {
		t.Error("a run with a failed test and a failed build did not fail")
	}
	if *update {
		if err := os.WriteFile("testdata/run.golden", out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/run.golden")
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Errorf("output differs from testdata/run.golden (go test -run %s -update rewrites it):\n%s", t.Name(), out.String())
	}
	// go test's own closing line of every package is there, as go test
	// prints it.
	for _, line := range []string{"ok  \texp/a\t", "FAIL\texp/b\t", "FAIL\texp/c [build failed]", "?   \texp/d\t[no test files]"} {
		if !strings.Contains(out.String(), "\n"+line) {
			t.Errorf("output lacks go test's line %q", line)
		}
	}
}

func TestPassingRunDoesNotFail(t *testing.T) {
	in, err := os.ReadFile("testdata/run.json")
	if err != nil {
		t.Fatal(err)
	}
	var pass []byte
	for _, l := range bytes.SplitAfter(in, []byte("\n")) {
		if bytes.Contains(l, []byte(`"Package":"exp/a"`)) {
			pass = append(pass, l...)
		}
	}
	var out bytes.Buffer
	f := newFormatter(&out, "exp/")
	if err := f.read(bytes.NewReader(pass)); err != nil {
		t.Fatal(err)
	}
	if f.hasFailed() {
		t.Errorf("a passing package failed:\n%s", out.String())
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); !strings.HasPrefix(lines[len(lines)-1], "ok  \texp/a\t") {
		t.Errorf("the closing line is not go test's ok line:\n%s", out.String())
	}
}

// While nothing is printed, tick lists the running tests; not otherwise.
func TestTickListsRunningTests(t *testing.T) {
	var out bytes.Buffer
	f := newFormatter(&out, "example.org/m/")
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	f.last = start // the last line printed
	f.line([]byte(`{"Action":"run","Package":"example.org/m/e2e","Test":"TestKill"}`), start)
	f.line([]byte(`{"Action":"run","Package":"example.org/m/e2e","Test":"TestKill/synapse"}`), start)
	f.tick(start.Add(30*time.Second), time.Minute)
	if out.Len() != 0 {
		t.Errorf("tick printed before a minute of silence: %q", out.String())
	}
	f.tick(start.Add(3*time.Minute), time.Minute)
	if got, want := out.String(), "  ...   still running: e2e TestKill (3m0s)\n"; got != want {
		t.Errorf("tick printed %q, want %q", got, want)
	}
}

// Lines that are not go test -json (the go command's own errors) pass
// through, and no input makes the formatter panic.
func FuzzFormatter(f *testing.F) {
	in, err := os.ReadFile("testdata/run.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, l := range bytes.Split(in, []byte("\n")) {
		f.Add(l)
	}
	f.Add([]byte("go: cannot find main module"))
	f.Add([]byte(`{"Action":"fail","Package":"p","Test":"T/x"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var out bytes.Buffer
		fm := newFormatter(&out, "")
		fm.line(line, time.Now())
		fm.tick(time.Now().Add(time.Hour), time.Minute)
		if len(line) > 0 && line[0] != '{' && !bytes.Contains(out.Bytes(), line) {
			t.Errorf("a line that is not JSON was not passed through: %q → %q", line, out.String())
		}
	})
}
