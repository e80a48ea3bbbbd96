package scripts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testSh runs scripts/test.sh with args in a scratch module holding a
// passing package (good) and a failing one (bad).
func testSh(t *testing.T, args ...string) (string, int) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":            "module example.org/fixture\n\ngo 1.26\n",
		"good/good_test.go": "package good\n\nimport \"testing\"\n\nfunc TestGood(t *testing.T) {}\n",
		"bad/bad_test.go":   "package bad\n\nimport \"testing\"\n\nfunc TestBad(t *testing.T) { t.Fatal(\"broken on purpose\") }\n",
	}
	for name, text := range files {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script, err := filepath.Abs("test.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", append([]string{script, "-count=1"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run()
	return out.String(), cmd.ProcessState.ExitCode()
}

// make test's runner shows each test as it ends, keeps go test's
// own line per package, and fails when a test fails.
func TestTestShShowsProgressAndFails(t *testing.T) {
	out, code := testSh(t, "./...")
	if code == 0 {
		t.Errorf("a failing test did not fail the run:\n%s", out)
	}
	for _, want := range []string{
		"  pass  good TestGood (", "  FAIL  bad TestBad (", "broken on purpose",
		"\nok  \texample.org/fixture/good\t", "\nFAIL\texample.org/fixture/bad\t",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, code = testSh(t, "./good")
	if code != 0 || !strings.HasPrefix(lastLine(out), "ok  \texample.org/fixture/good\t") {
		t.Errorf("a passing run: exit %d, closing line %q:\n%s", code, lastLine(out), out)
	}
}

// When go test fails before it writes any JSON (here, a bad flag), the
// formatter at the end of the pipe sees no failure: the run must still fail
// (pipefail).
func TestTestShFailsWhenGoTestFailsAlone(t *testing.T) {
	out, code := testSh(t, "-timeout=forever", "./good")
	if code == 0 {
		t.Errorf("go test failed but the run exited 0:\n%s", out)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
