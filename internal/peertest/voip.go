package peertest

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// VoIPClient is a running e2e/testdata/voipclient.py: a Matrix VoIP client
// no one here wrote the media of (aiortc's WebRTC, matrix-nio's Matrix),
// from the venv scripts/install-peers.sh makes. Its JSON lines come one by
// one through Next.
type VoIPClient struct {
	t      TB
	cmd    *exec.Cmd
	lines  chan map[string]any
	mu     sync.Mutex
	stderr strings.Builder
	seen   []map[string]any
}

// VoIPPython returns the venv's interpreter, or fails (in CI) or skips the
// test when aiortc and matrix-nio are not there.
func VoIPPython(t TB) string {
	t.Helper()
	python := filepath.Join(Dir(), "voip-venv", "bin", "python")
	err := exec.Command(python, "-c", "import aiortc, nio").Run()
	Require(t, "voip client (aiortc, matrix-nio in "+filepath.Join(Dir(), "voip-venv")+")", err)
	return python
}

// StartVoIPClient runs voipclient.py with args, offering loopback
// candidates (the tests run on loopback only).
func StartVoIPClient(t TB, args ...string) *VoIPClient {
	t.Helper()
	python := VoIPPython(t)
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(findRepoRoot(filepath.Dir(file)), "e2e", "testdata", "voipclient.py")
	cmd := exec.Command(python, append([]string{script, "--loopback"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &VoIPClient{t: t, cmd: cmd, lines: make(chan map[string]any, 1000)}
	cmd.Stderr = lockedWriter{c}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				c.lines <- m
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if f, ok := t.(interface{ Failed() bool }); ok && f.Failed() {
			c.mu.Lock()
			t.Logf("voipclient stderr:\n%s", c.stderr.String())
			c.mu.Unlock()
		}
	})
	return c
}

type lockedWriter struct{ c *VoIPClient }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	return w.c.stderr.Write(p)
}

// Next returns the client's next line of the event name, failing the test
// after timeout or when the client exits first.
func (c *VoIPClient) Next(name string, timeout time.Duration) map[string]any {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("voipclient exited before %q; its lines: %v", name, c.seen)
			}
			c.seen = append(c.seen, m)
			if m["event"] == name {
				return m
			}
		case <-deadline:
			c.t.Fatalf("voipclient: no %q in %s; its lines: %v", name, timeout, c.seen)
		}
	}
}
