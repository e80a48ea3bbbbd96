package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/internal/peertest"
)

// make demo's scripted conversation crosses every network in every
// direction, each message shown as the receiving client sees it. The demo
// runs as make demo runs it, without staying up at the end.
func TestDemoCrossesEveryDirection(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the demo starts Prosody, Synapse, sipp and Parley")
	}
	for _, bin := range []string{"prosody", "sipp"} {
		_, err := exec.LookPath(bin)
		peertest.Require(t, bin, err)
	}
	_, err := os.Stat(peertest.SynapsePython())
	peertest.Require(t, "synapse", err)

	dir := t.TempDir()
	parley, demo := filepath.Join(dir, "parley"), filepath.Join(dir, "parley-demo")
	for bin, pkg := range map[string]string{parley: "github.com/parleygw/parley/cmd/parley", demo: "github.com/parleygw/parley/internal/demo"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo, "-parley", parley, "-keep-going=false", "-dir", filepath.Join(dir, "scratch"))
	cmd.Env = append(os.Environ(), "PARLEY_PEERS="+peertest.Dir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, tc := range []struct{ direction, line string }{
		{"XMPP → Matrix", "[matrix] @_xmpp_alice_localhost:localhost (alice@localhost) → @bob:localhost: "},
		{"Matrix → XMPP", "[xmpp]   bob@matrix.localhost (Bob Matrix) → alice@localhost: "},
		{"XMPP → SIP", "[sip]    sip:xmpp_alice_localhost@parley.localhost (alice@localhost) → sip:1001@parley.localhost: "},
		{"Matrix → SIP", "[sip]    sip:bob@parley.localhost (Bob Matrix) → sip:1001@parley.localhost: "},
		{"SIP → XMPP", "[xmpp]   1001+parley.localhost@matrix.localhost (sip:1001@parley.localhost) → alice@localhost: "},
		{"SIP → Matrix", "[matrix] @_sip_1001_parley.localhost:localhost (sip:1001@parley.localhost) → @bob:localhost: "},
	} {
		if !strings.Contains(string(out), "\n  "+tc.line) {
			t.Errorf("the transcript shows no %s message (%q)", tc.direction, tc.line)
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
}
