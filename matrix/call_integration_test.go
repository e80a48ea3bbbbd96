package matrix

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/peertest"
	"github.com/parleygw/parley/media"
)

// Calls against real Synapse, with a real WebRTC client on the other side:
// e2e/testdata/voipclient.py (aiortc and matrix-nio, from the venv that
// scripts/install-peers.sh makes). The fake core answers every call with
// an echo, so the client hears its own tone when media flows through the
// adapter's WebRTC leg both ways.

// echoHost is a CallHost that answers every inbound call at once with an
// echo of the caller's media, and keeps the call events.
type echoHost struct {
	*fakeCallHost
	a *Adapter
}

func (h *echoHost) Call(ctx context.Context, inv *event.CallInvite, m media.Endpoint) error {
	if err := h.fakeCallHost.Call(ctx, inv, m); err != nil {
		return err
	}
	m.SetPeer(echo{m})
	go func() {
		// the first audio codec of the offer, as a core would choose
		ans := event.Media{Codecs: inv.Offer.Codecs[:1]}
		if err := h.a.Signal(context.Background(), &event.CallAnswer{Call: inv.Call, Answer: ans}); err != nil {
			h.a.log.Error("echo host: answer", "err", err)
		}
	}()
	return nil
}

func TestCallIntegrationSynapse(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	peertest.VoIPPython(t)
	cfg := Config{
		HomeserverURL: "http://127.0.0.1:1",
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
	hs := peertest.StartSynapse(t, peertest.HomeserverOptions{Registration: regPath})
	cfg.HomeserverURL = hs.URL
	ports, err := media.NewPorts(netip.MustParseAddr("127.0.0.1"), 43000, 43099)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg, WithLogger(testLogger(t)), WithCalls(media.WebRTCConfig{Ports: ports, Loopback: true}))
	if err != nil {
		t.Fatal(err)
	}
	a.backoff = bridges.Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	host := &echoHost{fakeCallHost: &fakeCallHost{fakeHost: newFakeHost()}, a: a}
	if err := a.Start(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = a.Stop(sctx)
	})
	host.waitState(t, bridges.Connected)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const password = "alice-password"
	alice := peertest.ConnectMatrix(t, hs, "alice", password)
	const ghost = "@_xmpp_bob=40example.org:localhost"
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{ghost}, IsDirect: true, Preset: "trusted_private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID.String()
	waitFor(t, "the dm is linked", func() bool {
		v, _ := host.links.Value("room:" + room)
		return v == ghost+"|"+alice.UserID.String()
	})
	clientArgs := []string{"--homeserver", hs.URL, "--user", "alice", "--password", password, "--room", room, "--timeout", "60"}

	// The caller trickles its candidates, as browsers do: its offer has
	// none, they come in m.call.candidates.
	t.Run("user calls a ghost", func(t *testing.T) {
		c := peertest.StartVoIPClient(t, append(clientArgs, "--trickle", "--call", ghost, "--tone", "440", "--detect", "440", "--control", "1000", "--hangup-after", "3")...)
		c.Next("answer", 30*time.Second)
		res := c.Next("result", 60*time.Second)
		t.Logf("client: %v", res)
		if res["tone_detected"] != true || res["control_ratio"].(float64) > 0.1 || res["packets_received"].(float64) < 50 || res["ended_by"] != "local" {
			t.Fatalf("result %v", res)
		}
		var hup *event.CallHangup
		waitFor(t, "the hangup at the core", func() bool {
			for _, e := range host.callEvents() {
				if h, ok := e.(*event.CallHangup); ok && h.Call == res["call_id"] {
					hup = h
					return true
				}
			}
			return false
		})
		if hup.Reason != event.HangupNormal {
			t.Fatalf("hangup %+v", hup)
		}
		if _, ok := host.links.Value("call:" + hup.Call); ok {
			t.Fatal("ended call still recorded")
		}
	})

	t.Run("ghost calls the user", func(t *testing.T) {
		c := peertest.StartVoIPClient(t, append(clientArgs, "--answer", "--tone", "440", "--detect", "440", "--control", "1000")...)
		c.Next("ready", 30*time.Second)
		leg, err := a.Invite(ctx, &event.CallInvite{Header: event.Header{
			From: event.Address{Network: event.Matrix, ID: ghost},
			To:   event.Address{Network: event.Matrix, ID: alice.UserID.String()},
		}, Call: "out1", Offer: event.Media{Codecs: []event.Codec{
			{Name: "opus", ClockRate: 48000, Channels: 2, PayloadType: 96, FMTP: "minptime=10;useinbandfec=1"},
			{Name: "PCMU", ClockRate: 8000, PayloadType: 0},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		defer leg.Close()
		leg.SetPeer(echo{leg})
		inv := c.Next("invite", 30*time.Second)
		if inv["call_id"] != "out1" || inv["lifetime"] != float64(60000) || inv["version"] != "1" {
			t.Fatalf("invite %v", inv)
		}
		var ans *event.CallAnswer
		waitFor(t, "the answer at the core", func() bool {
			for _, e := range host.callEvents() {
				if x, ok := e.(*event.CallAnswer); ok && x.Call == "out1" {
					ans = x
					return true
				}
			}
			return false
		})
		if ans.Answer.Codecs[0].Name != "opus" || ans.Answer.Codecs[0].PayloadType != 96 {
			t.Fatalf("answer %+v", ans.Answer)
		}
		c.Next("select_answer", 30*time.Second)
		waitFor(t, "media both ways", func() bool { return leg.Stats().PacketsIn > 150 })
		if err := a.Signal(ctx, &event.CallHangup{Call: "out1", Reason: event.HangupNormal}); err != nil {
			t.Fatal(err)
		}
		res := c.Next("result", 30*time.Second)
		t.Logf("client: %v", res)
		if res["tone_detected"] != true || res["control_ratio"].(float64) > 0.1 || res["ended_by"] != "remote" || res["reason"] != "user_hangup" {
			t.Fatalf("result %v", res)
		}
	})

	t.Run("user rejects the ghost's call", func(t *testing.T) {
		c := peertest.StartVoIPClient(t, append(clientArgs, "--answer", "--reject")...)
		c.Next("ready", 30*time.Second)
		leg, err := a.Invite(ctx, &event.CallInvite{Header: event.Header{
			From: event.Address{Network: event.Matrix, ID: ghost},
			To:   event.Address{Network: event.Matrix, ID: alice.UserID.String()},
		}, Call: "out2", Offer: event.Media{Codecs: []event.Codec{{Name: "PCMU", ClockRate: 8000, PayloadType: 0}}}})
		if err != nil {
			t.Fatal(err)
		}
		defer leg.Close()
		c.Next("reject_sent", 30*time.Second)
		waitFor(t, "the reject at the core", func() bool {
			for _, e := range host.callEvents() {
				if h, ok := e.(*event.CallHangup); ok && h.Call == "out2" {
					return h.Reason == event.HangupDeclined
				}
			}
			return false
		})
	})
}
