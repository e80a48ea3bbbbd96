package e2e

import (
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mevent "maunium.net/go/mautrix/event"
	mid "maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

func scenario(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// publish has phone user publish its presence with an RPID activity.
func publish(t *testing.T, st *stack, user, activity, note string) {
	t.Helper()
	publishFor(t, st, user, activity, note, 600)
}

// publishFor is publish with a lifetime of expires seconds.
func publishFor(t *testing.T, st *stack, user, activity, note string, expires int) {
	t.Helper()
	r := peertest.RunSipp(t, peertest.SippOptions{Scenario: scenario(t, "uac_publish.xml"), Target: st.sipAddr, Service: user,
		Vars:     map[string]string{"domain": sipDomain, "activity": activity, "note": note, "expires": strconv.Itoa(expires)},
		AuthUser: user, AuthPassword: sipUsers[user], Name: "publish-" + user, AllowFailure: true})
	if !r.OK() {
		t.Fatalf("PUBLISH from %s:\n%s\nparley:\n%s", user, exchange(r.Messages()), tail(st.log(), 20))
	}
}

// presenceKey is a phone's presence key: watcher subscribes to the presence
// of the user part `of` of parley's domain and answers every NOTIFY.
func presenceKey(t *testing.T, st *stack, watcher, of string) *peertest.SippProcess {
	t.Helper()
	return presenceKeyFor(t, st, watcher, of, 600)
}

// presenceKeyFor is presenceKey with a subscription of expires seconds,
// never refreshed.
func presenceKeyFor(t *testing.T, st *stack, watcher, of string, expires int) *peertest.SippProcess {
	t.Helper()
	return peertest.StartSipp(t, peertest.SippOptions{Scenario: scenario(t, "uac_subscribe.xml"), Target: st.sipAddr, Service: of,
		Vars:     map[string]string{"domain": sipDomain, "watcher": watcher, "expires": strconv.Itoa(expires)},
		AuthUser: watcher, AuthPassword: sipUsers[watcher], Timeout: 2 * time.Minute, Name: "key-" + watcher + "-" + of})
}

// waitNotify waits for a NOTIFY whose PIDF body contains all of want.
func waitNotify(t *testing.T, key *peertest.SippProcess, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range key.Received("NOTIFY") {
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(m.Body, w)
			}
			if ok {
				return m.Body
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	var bodies []string
	for _, m := range key.Received("NOTIFY") {
		bodies = append(bodies, m.Body)
	}
	t.Fatalf("no NOTIFY with %q; got %d:\n%s", want, len(bodies), strings.Join(bodies, "\n----\n"))
	return ""
}

// waitMatrixPresence waits until a Matrix client sees user in state with a
// status containing status.
func waitMatrixPresence(t *testing.T, c *peertest.MatrixClient, user mid.UserID, state mevent.Presence, status string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		p, err := c.GetPresence(t.Context(), user)
		if err == nil {
			last = string(p.Presence) + " " + p.StatusMsg
			if p.Presence == state && strings.Contains(p.StatusMsg, status) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s never showed %s %q on Matrix (last: %s)", user, state, status, last)
}

func waitXMPPPresence(t testing.TB, c *peertest.XMPPClient, from, show, status string) {
	t.Helper()
	ctx := timeout(t, 30*time.Second)
	e, ok := c.Next(ctx, func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && bare(e.From) == from && e.Type != "subscribe" && e.Type != "subscribed" && e.Show == show &&
			strings.Contains(e.Status, status)
	})
	if !ok {
		t.Fatalf("%s never saw %s as %q %q", c.JID, from, show, status)
	}
	_ = e
}

// TestPresence carries presence every way between SIP, XMPP and Matrix,
// with real clients: sipp phones (PUBLISH, and SUBSCRIBE as a presence
// key), slixmpp on Prosody, mautrix on Synapse.
func TestPresence(t *testing.T) {
	st, alice, bob, _ := chat(t, "synapse")

	t.Run("sip publish reaches xmpp and matrix", func(t *testing.T) {
		alice.Subscribe(t, "1001+parley.localhost@matrix.localhost")
		// bob watches the phone by having a direct chat with its ghost.
		const phoneGhost = mid.UserID("@_sip_1001_parley.localhost:localhost")
		resp, err := bob.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Invite: []mid.UserID{phoneGhost}, IsDirect: true,
			Preset: "trusted_private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		waitJoined(t, bob, resp.RoomID, phoneGhost)
		time.Sleep(500 * time.Millisecond) // the subscriptions are recorded
		publish(t, st, "1001", "away", "at lunch")
		waitXMPPPresence(t, alice, "1001+parley.localhost@matrix.localhost", "away", "at lunch")
		waitMatrixPresence(t, bob, phoneGhost, mevent.PresenceUnavailable, "at lunch")
	})
	t.Run("xmpp presence reaches a sip presence key and matrix", func(t *testing.T) {
		key := presenceKey(t, st, "1002", "xmpp_alice_localhost")
		alice.Subscribe(t, bobGhostJID) // bob's ghost shares and asks for alice's presence
		time.Sleep(time.Second)
		alice.SetPresence(t, "dnd", "deep in code")
		body := waitNotify(t, key, "busy")
		if !strings.Contains(body, "entity=\"sip:xmpp_alice_localhost@parley.localhost\"") {
			t.Errorf("NOTIFY for the wrong presentity:\n%s", body)
		}
		waitMatrixPresence(t, bob, aliceGhostMXID, mevent.PresenceUnavailable, "deep in code")
	})
	t.Run("matrix presence reaches xmpp and sip watchers", func(t *testing.T) {
		key := presenceKey(t, st, "1003", "matrix_bob_localhost")
		if err := bob.SetPresence(t.Context(), mautrix.ReqPresence{Presence: mevent.PresenceUnavailable, StatusMsg: "in a meeting"}); err != nil {
			t.Fatal(err)
		}
		waitXMPPPresence(t, alice, bobGhostJID, "away", "in a meeting")
		waitNotify(t, key, "away")
	})
}

// TestMergedPresence: a phone's presence key on the alias of dana, who is on
// XMPP and on Matrix, shows one state merged from both (on the phone wins,
// otherwise the most available).
func TestMergedPresence(t *testing.T) {
	st := newStack(t, stackSettings{homeserver: "synapse"})
	st.prosody.Register(t, "dana", "danapass")
	st.prosody.Register(t, "alice", "alicepass")
	st.start(true)
	danaX := peertest.ConnectXMPP(t, st.prosody, "dana", "danapass")
	danaM := peertest.ConnectMatrix(t, st.hs, "dana", "danapassword")
	alice := peertest.ConnectXMPP(t, st.prosody, "alice", "alicepass")
	// Synapse tells the appservice of dana's Matrix presence only if she
	// shares a room with a ghost: give her a DM with alice's ghost.
	alice.Send(t, "dana%localhost@matrix.localhost", "hi-dana", "hi dana", false)
	if _, ok := danaM.NextMessage(timeout(t, 30*time.Second), nil); !ok {
		t.Fatal("dana's Matrix client got no DM")
	}

	key := presenceKey(t, st, "1002", "dana")
	danaX.SetPresence(t, "dnd", "focus time")
	waitNotify(t, key, "busy", "focus time") // XMPP dnd, Matrix not known yet: dnd
	if err := danaM.SetPresence(t.Context(), mautrix.ReqPresence{Presence: mevent.PresenceUnavailable, StatusMsg: "coffee"}); err != nil {
		t.Fatal(err)
	}
	// XMPP says dnd, Matrix says away: away is more available, so away.
	body := waitNotify(t, key, "away", "coffee")
	if strings.Contains(body, "busy") {
		t.Errorf("merged state kept dnd:\n%s", body)
	}
	if !strings.Contains(body, `entity="sip:dana@parley.localhost"`) {
		t.Errorf("NOTIFY is not for dana's alias:\n%s", body)
	}
}

// TestPresenceExpiry: a PUBLISH that is not refreshed ends when it expires
// (RFC 3903 §6: the phone is offline again for its XMPP watcher), and a SIP
// subscription that is not refreshed ends with a NOTIFY
// "terminated;reason=timeout" (RFC 6665 §4.1.3), with real sipp phones.
func TestPresenceExpiry(t *testing.T) {
	st, alice, _, _ := chat(t, "synapse") // the stack allows lifetimes down to 2 s
	const phone = "1001+parley.localhost@matrix.localhost"
	alice.Subscribe(t, phone)
	time.Sleep(500 * time.Millisecond) // the subscription is recorded
	publishFor(t, st, "1001", "away", "back in a moment", 3)
	waitXMPPPresence(t, alice, phone, "away", "back in a moment")
	ctx := timeout(t, 30*time.Second)
	if _, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && bare(e.From) == phone && e.Type == "unavailable"
	}); !ok {
		t.Fatalf("the phone's publication never expired for alice:\n%s", tail(st.log(), 20))
	}

	key := presenceKeyFor(t, st, "1002", "xmpp_alice_localhost", 3)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var states []string
		for _, m := range key.Received("NOTIFY") {
			for _, h := range m.Headers {
				if strings.EqualFold(h.Name, "Subscription-State") {
					states = append(states, h.Value)
				}
			}
		}
		if n := len(states); n > 0 && strings.HasPrefix(states[n-1], "terminated") {
			if states[0] == "" || !strings.HasPrefix(states[0], "active") || states[n-1] != "terminated;reason=timeout" {
				t.Fatalf("Subscription-State of the NOTIFYs: %q, want active… then terminated;reason=timeout", states)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the subscription never ended; Subscription-State of the NOTIFYs: %q", states)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestPresenceAfterRestart: Parley keeps no presence across a restart, and
// an XMPP server sends a user's presence to a subscribed ghost only when it
// changes. So after a restart the ghosts probe the users they had asked
// for presence; a SIP key that subscribes then sees the XMPP user's state
// although she has not changed it since.
func TestPresenceAfterRestart(t *testing.T) {
	st, alice, _, _ := chat(t, "synapse")
	before := presenceKey(t, st, "1002", "xmpp_alice_localhost") // alice's ghost is asked for her presence
	waitNotify(t, before)                                        // subscribed (open or closed: alice may be online already)
	time.Sleep(time.Second)                                      // alice's client approved the ghost's request
	alice.SetPresence(t, "dnd", "deep in code")
	waitNotify(t, before, "busy", "deep in code")

	st.stop(syscall.SIGKILL)
	st.start(true)
	after := presenceKeyFor(t, st, "1003", "xmpp_alice_localhost", 600)
	waitNotify(t, after, "busy", "deep in code")
}
