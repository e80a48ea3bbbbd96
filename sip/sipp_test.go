package sip

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/peertest"
)

// These tests drive the adapter with sipp (Debian package sip-tester), a
// SIP test tool no one here wrote, from the XML scenarios in
// testdata/sipp. Without sipp they are skipped, or fail when $CI is set.

// sipp runs one sipp scenario to completion (-m 1) and fails the test,
// with sipp's output and error trace, when sipp reports a failure. remote is
// the host:port to send to ("" for a scenario that only answers). Each run
// gets its own SIP and media ports (PEERS.md: sipp binds an RTP port even
// for MESSAGE scenarios).
func sipp(t *testing.T, scenario, remote string, port int, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("sipp")
	peertest.Require(t, "sipp (Debian package sip-tester)", err)
	src, err := os.ReadFile(filepath.Join("testdata", "sipp", scenario))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sf := filepath.Join(dir, scenario)
	if err := os.WriteFile(sf, src, 0o644); err != nil {
		t.Fatal(err)
	}
	argv := []string{"-sf", sf, "-i", "127.0.0.1", "-p", strconv.Itoa(port),
		"-mp", strconv.Itoa(peertest.FreePort(t)), "-t", "u1", "-m", "1", "-nostdin",
		"-timeout", "20s", "-timeout_error", "-trace_err"}
	argv = append(argv, args...)
	if remote != "" {
		argv = append(argv, remote)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		var trace []string
		logs, _ := filepath.Glob(filepath.Join(dir, "*errors.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			trace = append(trace, string(b))
		}
		t.Fatalf("sipp %s: %v\n%s\n%s", scenario, err, tail(out.String(), 3000), strings.Join(trace, "\n"))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// TestSippRegisterAndMessage: sipp registers alice with digest
// authentication, then sends a MESSAGE to a ghost, answering the 407; the
// host gets the message and sipp the 202.
func TestSippRegisterAndMessage(t *testing.T) {
	a := startAdapter(t, nil, nil)
	sipp(t, "register_message.xml", a.udp, peertest.FreePort(t),
		"-s", "alice", "-au", "alice", "-ap", alicePassword,
		"-set", "domain", testDomain, "-set", "to", ghost, "-set", "text", "hello from sipp")
	m := a.host.waitDispatch(t)
	if m.From.ID != "sip:alice@"+testDomain || m.To.ID != ghost || m.FromName != "SIPp Phone" || strings.TrimSpace(m.Body) != "hello from sipp" {
		t.Errorf("dispatched %+v", m)
	}
	if !strings.HasPrefix(m.ID, "sip:alice@"+testDomain+"/") || !strings.HasSuffix(m.ID, "/4") {
		t.Errorf("event ID %q, want sip:alice@…/<Call-ID>/4", m.ID)
	}
	bs := storedBindings(t, a.host, "alice")
	if len(bs) != 1 || !strings.HasPrefix(bs[0].Contact, "sip:alice@127.0.0.1:") || bs[0].UserAgent != "sipp" {
		t.Errorf("stored bindings %+v", bs)
	}
}

// TestSippOversizedMessage: a MESSAGE beyond max_message_size is answered
// 413 after authentication, and not dispatched.
func TestSippOversizedMessage(t *testing.T) {
	a := startAdapter(t, nil, nil)
	sipp(t, "oversized_message.xml", a.udp, peertest.FreePort(t),
		"-s", "alice", "-au", "alice", "-ap", alicePassword,
		"-set", "domain", testDomain, "-set", "to", ghost, "-set", "text", strings.Repeat("0123456789", 900))
	if evs := a.host.events(); len(evs) != 0 {
		t.Errorf("the oversized message was dispatched: %v", evs)
	}
}

// TestSippReceivesMessage: Send delivers to a registered contact that is a
// sipp phone, which checks the content type and body.
func TestSippReceivesMessage(t *testing.T) {
	a := startAdapter(t, nil, nil)
	port := peertest.FreePort(t)
	register(t, newPeerUA(t), "UDP", a.udp, "bob", bobPassword, "<sip:bob@127.0.0.1:"+strconv.Itoa(port)+">")
	done := make(chan struct{})
	go func() {
		defer close(done)
		// sipp needs a moment to bind; Send fails (not permanently) until
		// the phone answers, as the router would retry.
		for range 50 {
			time.Sleep(100 * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := a.Send(ctx, &event.Message{
				Header: event.Header{ID: "sipp-1", From: event.Address{Network: event.SIP, ID: ghost}, To: event.Address{Network: event.SIP, ID: "sip:bob@" + testDomain}, Time: time.Now()},
				Body:   "Parley says hi",
			})
			cancel()
			if err == nil {
				return
			}
		}
	}()
	sipp(t, "receive_message.xml", "", port)
	<-done
}

// TestSippSubscribePresence: sipp subscribes to a ghost's presence as
// alice, answering the 407; it gets the first NOTIFY (offline), then the
// presence the test sends as the core would, then unsubscribes and gets
// the terminating NOTIFY.
func TestSippSubscribePresence(t *testing.T) {
	a := startAdapter(t, nil, nil)
	a.subs.interval = 100 * time.Millisecond
	alice := "sip:alice@" + testDomain
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case evt := <-a.host.dispatchCh:
			if s, ok := evt.(*event.Subscription); !ok || !s.Active || s.From.ID != alice || s.To.ID != ghost {
				t.Errorf("dispatched %#v, want alice's subscription to the ghost", evt)
				return
			}
		case <-time.After(20 * time.Second):
			t.Error("no subscription dispatched")
			return
		}
		if _, err := a.Send(context.Background(), presence(ghost, alice, event.Available, "hello from Parley")); err != nil {
			t.Errorf("Send presence: %v", err)
		}
	}()
	sipp(t, "subscribe_presence.xml", a.udp, peertest.FreePort(t),
		"-s", "alice", "-au", "alice", "-ap", alicePassword,
		"-set", "domain", testDomain, "-set", "to", ghost)
	<-done
	waitSubscription(t, a.host, alice, ghost, false)
}
