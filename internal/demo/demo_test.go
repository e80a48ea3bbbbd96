package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/internal/peertest"
)

// make demo's scripted conversation crosses every network in every
// direction, each message shown as the receiving client sees it, and then
// the phone calls bob and bob calls the phone back: each side hears the
// other's tone, and each hangup reaches the other side. The demo runs as
// make demo runs it, without staying up at the end.
func TestDemoCrossesEveryDirection(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the demo starts Prosody, Synapse, sipp, baresip, a Matrix VoIP client and Parley")
	}
	for _, bin := range []string{"prosody", "sipp", "baresip"} {
		_, err := exec.LookPath(bin)
		peertest.Require(t, bin, err)
	}
	_, err := os.Stat(peertest.SynapsePython())
	peertest.Require(t, "synapse", err)
	peertest.VoIPPython(t)

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
	t.Logf("demo transcript:\n%s", out)
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
	// The group chat: each side reads the other's post from a participant
	// of its own (alice's ghost in the room, bob's alias in the MUC).
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`\n  \[matrix\] @_xmpp_\S+:localhost \(Alice\) in #lobby:localhost: Hello everyone in the lobby, Alice here on XMPP\.`),
		regexp.MustCompile(`\n  \[xmpp\]   lobby@conference\.localhost/Bob Matrix → lobby@conference\.localhost: Hi Alice! Bob from Matrix, in the same room\.`),
		// bob's topic as the MUC's subject; the phone's post in both rooms.
		regexp.MustCompile(`\n  \[xmpp\]   lobby@conference\.localhost/\S+ set the subject of lobby@conference\.localhost: Plans for the week`),
		regexp.MustCompile(`\n  \[xmpp\]   lobby@conference\.localhost/1001 → lobby@conference\.localhost: Hello lobby, extension 1001 writing from a SIP phone\.`),
		regexp.MustCompile(`\n  \[matrix\] @_sip_1001_parley\.localhost:localhost in #lobby:localhost: Hello lobby, extension 1001 writing from a SIP phone\.`),
	} {
		if !re.MatchString(string(out)) {
			t.Errorf("the transcript of the group chat lacks a line matching %s", re)
		}
	}
	transcript := string(out)
	_, calls, _ := strings.Cut(transcript, "transcript, continued: the phone calls bob")
	toMatrix, fromMatrix, _ := strings.Cut(calls, "transcript, continued: bob calls the phone back")
	for _, c := range []struct {
		call, part string
		lines      []string
	}{
		{"SIP → Matrix", toMatrix, []string{
			"[sip]    sip:1001@parley.localhost (1000 Hz tone) dials sip:bob@parley.localhost",
			"[matrix] @_sip_1001_parley.localhost:localhost → @bob:localhost: m.call.invite in !",
			"[matrix] @bob:localhost → @_sip_1001_parley.localhost:localhost: m.call.answer",
			"[sip]    sip:1001@parley.localhost: call established with sip:bob@parley.localhost (200 OK)",
			"[sip]    sip:1001@parley.localhost hangs up (BYE): call with sip:bob@parley.localhost terminated",
			"[matrix] @_sip_1001_parley.localhost:localhost → @bob:localhost: m.call.hangup ",
		}},
		{"Matrix → SIP", fromMatrix, []string{
			"[matrix] @bob:localhost → @_sip_1001_parley.localhost:localhost: m.call.invite in !",
			"[sip]    sip:bob@parley.localhost → sip:1001@parley.localhost: INVITE; the phone answers on its own (200 OK",
			"[matrix] @_sip_1001_parley.localhost:localhost → @bob:localhost: m.call.answer",
			"[matrix] @bob:localhost hangs up after ",
			"[sip]    sip:bob@parley.localhost → sip:1001@parley.localhost: BYE: call with sip:bob@parley.localhost terminated",
		}},
	} {
		for _, line := range c.lines {
			if !strings.Contains(c.part, "\n  "+line) {
				t.Errorf("the transcript of the %s call lacks %q", c.call, line)
			}
		}
		// Each side heard the other's tone (a share of at least one half of
		// what it received), and hardly its own.
		for _, heard := range []*regexp.Regexp{
			regexp.MustCompile(`\n  \[matrix\] @bob:localhost heard the phone's 1000 Hz tone: ratio ([0-9.]+) over [0-9]+ RTP packets \(his own 440 Hz: ([0-9.]+)\)`),
			regexp.MustCompile(`\n  \[sip\]    sip:1001@parley.localhost heard bob's 440 Hz tone: share ([0-9.]+) of [0-9.]+ s recorded \(its own 1000 Hz: ([0-9.]+)\)`),
		} {
			m := heard.FindStringSubmatch(c.part)
			if m == nil {
				t.Errorf("the transcript of the %s call lacks a line matching %s", c.call, heard)
				continue
			}
			if tone, _ := strconv.ParseFloat(m[1], 64); tone < 0.5 {
				t.Errorf("%s call: %s", c.call, strings.TrimSpace(m[0]))
			}
			if own, _ := strconv.ParseFloat(m[2], 64); own > 0.1 {
				t.Errorf("%s call: %s", c.call, strings.TrimSpace(m[0]))
			}
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
}
