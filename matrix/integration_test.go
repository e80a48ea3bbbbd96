package matrix

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/peertest"
)

// The adapter against real homeservers. Skipped with -short, and (unless $CI
// is set) when scripts/install-peers.sh has not installed the peers.

func TestIntegrationSynapse(t *testing.T) {
	testIntegration(t, func(t *testing.T, reg string) *peertest.Homeserver {
		return peertest.StartSynapse(t, peertest.HomeserverOptions{Registration: reg})
	})
}

func TestIntegrationDendrite(t *testing.T) {
	testIntegration(t, func(t *testing.T, reg string) *peertest.Homeserver {
		return peertest.StartDendrite(t, peertest.HomeserverOptions{Registration: reg})
	})
}

func testIntegration(t *testing.T, start func(t *testing.T, registration string) *peertest.Homeserver) {
	a, host, hs, cfg := startIntegration(t, start)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	alice := peertest.ConnectMatrix(t, hs, "alice", "alice-password")
	const bob = "@_xmpp_bob=40example.org:localhost"

	t.Run("send creates a dm", func(t *testing.T) {
		evtID, err := a.Send(ctx, &event.Message{Header: event.Header{
			ID:       "xmpp-1",
			From:     event.Address{Network: event.Matrix, ID: bob},
			To:       event.Address{Network: event.Matrix, ID: alice.UserID.String()},
			FromName: "Bob",
		}, Body: "hello from xmpp", HTML: "hello from <b>xmpp</b>"})
		if err != nil {
			t.Fatal(err)
		}
		got, ok := alice.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Sender == bob })
		if !ok {
			t.Fatal("alice did not get the message")
		}
		if got.Body != "hello from xmpp" || got.HTML != "hello from <b>xmpp</b>" || got.EventID.String() != evtID {
			t.Errorf("alice got %+v, want event %s", got, evtID)
		}
		if inviter, ok := alice.Inviter(got.Room); !ok || inviter != bob {
			t.Errorf("invite to %s from %q (%v), want from %s", got.Room, inviter, ok, bob)
		}
		if name, err := alice.GetDisplayName(ctx, bob); err != nil || name.DisplayName != "Bob" {
			t.Errorf("display name of the ghost: %+v, %v", name, err)
		}

		// Sent again after a "crash": the homeserver de-duplicates it.
		again, err := a.Send(ctx, &event.Message{Header: event.Header{
			ID:   "xmpp-1",
			From: event.Address{Network: event.Matrix, ID: bob},
			To:   event.Address{Network: event.Matrix, ID: alice.UserID.String()},
		}, Body: "hello from xmpp"})
		if err != nil || again != evtID {
			t.Errorf("resend = %q, %v; want %q", again, err, evtID)
		}

		// Alice answers in the DM: the adapter dispatches it.
		answerID, err := alice.SendText(ctx, got.Room, "a1", "hi bob")
		if err != nil {
			t.Fatal(err)
		}
		msg := waitDispatched(t, host, answerID.String())
		if msg.From != (event.Address{Network: event.Matrix, ID: alice.UserID.String()}) ||
			msg.To != (event.Address{Network: event.Matrix, ID: bob}) || msg.Body != "hi bob" {
			t.Errorf("dispatched %+v", msg)
		}
	})

	t.Run("user invites a ghost", func(t *testing.T) {
		const carol = "@_xmpp_carol=40example.org:localhost"
		resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Invite:   []id.UserID{carol},
			IsDirect: true,
			Preset:   "trusted_private_chat",
		})
		if err != nil {
			t.Fatalf("create a dm with a ghost: %v", err)
		}
		waitFor(t, "the ghost joins", func() bool {
			members, err := alice.JoinedMembers(ctx, resp.RoomID)
			if err != nil {
				return false
			}
			_, ok := members.Joined[carol]
			return ok
		})
		// The link is stored right after the join; then the message.
		waitFor(t, "the dm is linked", func() bool {
			v, _ := host.links.Value("room:" + resp.RoomID.String())
			return v == carol+"|"+alice.UserID.String()
		})
		sent, err := alice.SendMessageEvent(ctx, resp.RoomID, mevent.EventMessage,
			&mevent.MessageEventContent{MsgType: mevent.MsgEmote, Body: "waves"})
		if err != nil {
			t.Fatal(err)
		}
		msg := waitDispatched(t, host, sent.EventID.String())
		if msg.To.ID != carol || msg.Body != "/me waves" {
			t.Errorf("dispatched %+v", msg)
		}
	})

	t.Run("wrong hs_token", func(t *testing.T) {
		if status, code := call(t, a, "PUT", "/_matrix/app/v1/transactions/forged", "bearer:"+cfg.ASToken,
			txnBody(textEvent("$forged", alice.UserID.String(), "!x:localhost", "x"))); status != 403 || code != "M_FORBIDDEN" {
			t.Errorf("wrong token: %d %s", status, code)
		}
		if status, _ := call(t, a, "GET", "/_matrix/app/v1/users/x", "", ""); status != 401 {
			t.Errorf("no token: %d", status)
		}
	})
}

// startIntegration starts a homeserver with start (skipping the test with
// -short) and an adapter registered with it, connected to a fakeHost. Both
// stop when the test ends.
func startIntegration(t *testing.T, start func(t *testing.T, registration string) *peertest.Homeserver) (*Adapter, *fakeHost, *peertest.Homeserver, Config) {
	t.Helper()
	cfg, hs := startIntegrationHomeserver(t, start)
	host := newFakeHost()
	a := startIntegrationAdapter(t, cfg, host, testLogger(t))
	host.waitState(t, bridges.Connected)
	return a, host, hs, cfg
}

// startIntegrationHomeserver starts a homeserver with start (skipping the
// test with -short), with the registration of the adapter configuration it
// returns.
func startIntegrationHomeserver(t *testing.T, start func(t *testing.T, registration string) *peertest.Homeserver) (Config, *peertest.Homeserver) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	cfg := Config{
		HomeserverURL: "http://127.0.0.1:1", // known once the homeserver runs
		ServerName:    "localhost",
		Listen:        fmt.Sprintf("127.0.0.1:%d", peertest.FreePort(t)),
		ASToken:       "as-" + rand.Text(),
		HSToken:       "hs-" + rand.Text(),
		Namespaces:    []string{`@_xmpp_.*:localhost`},
	}
	reg, err := Registration(cfg)
	if err != nil {
		t.Fatal(err)
	}
	regPath := filepath.Join(t.TempDir(), "registration.yaml")
	if err := os.WriteFile(regPath, reg, 0o600); err != nil {
		t.Fatal(err)
	}
	hs := start(t, regPath)
	cfg.HomeserverURL = hs.URL
	return cfg, hs
}

// startIntegrationAdapter starts an adapter with cfg and host, logging to
// log; it stops when the test ends.
func startIntegrationAdapter(t *testing.T, cfg Config, host bridges.Host, log *slog.Logger) *Adapter {
	t.Helper()
	a, err := New(cfg, WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	a.backoff = bridges.Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	if err := a.Start(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = a.Stop(sctx)
	})
	return a
}

// waitDispatched waits until host got a message with the given source ID.
func waitDispatched(t *testing.T, host *fakeHost, sourceID string) *event.Message {
	t.Helper()
	var found *event.Message
	waitFor(t, "dispatch of "+sourceID, func() bool {
		for _, e := range host.events() {
			if m, ok := e.(*event.Message); ok && m.ID == sourceID {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
