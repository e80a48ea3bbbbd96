package e2e

import (
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mevent "maunium.net/go/mautrix/event"

	"github.com/parleygw/parley/internal/peertest"
)

// TestPresenceDendrite: Dendrite pushes no presence to appservices, so
// parley polls the presence of the Matrix users who have a DM with a ghost
// (presence_poll_interval "auto", the default: every 30 s until the
// homeserver pushes some). bob, on Dendrite with presence enabled, changes
// his presence; alice on XMPP, subscribed to bob's ghost, and a SIP
// presence key see each change.
func TestPresenceDendrite(t *testing.T) {
	st := newStack(t, stackSettings{homeserver: "dendrite", dendritePresence: true})
	st.prosody.Register(t, "alice", "alicepass")
	st.start(true)
	alice := peertest.ConnectXMPP(t, st.prosody, "alice", "alicepass")
	bob := peertest.ConnectMatrix(t, st.hs, "bob", "bobpassword")
	dm(t, st, alice, bob)
	alice.Subscribe(t, bobGhostJID)
	key := presenceKey(t, st, "1003", "matrix_bob_localhost")
	time.Sleep(time.Second) // the subscriptions are recorded

	// bob's client syncs with set_presence=offline, which Dendrite does not
	// let override a presence set with PUT. Polls come every 30 s.
	if err := bob.SetPresence(t.Context(), mautrix.ReqPresence{Presence: mevent.PresenceUnavailable, StatusMsg: "in a meeting"}); err != nil {
		t.Fatal(err)
	}
	waitPolledPresence(t, alice, bobGhostJID, "away", "in a meeting")
	waitNotify(t, key, "away", "in a meeting")

	// Dendrite keeps the status_msg of a PUT without one: set a new one.
	if err := bob.SetPresence(t.Context(), mautrix.ReqPresence{Presence: mevent.PresenceOnline, StatusMsg: "back"}); err != nil {
		t.Fatal(err)
	}
	waitPolledPresence(t, alice, bobGhostJID, "", "back")
	waitNotify(t, key, "open", "back")

	log := st.log()
	if !strings.Contains(log, `msg="presence polling on"`) {
		t.Error("parley's log does not say that presence polling is on")
	}
	if strings.Contains(log, "homeserver pushes presence") {
		t.Error("Dendrite pushed presence to the appservice: update the docs of matrix/presence.go and the README")
	}
}

// waitPolledPresence waits for presence from `from` with show and a status
// containing status, long enough for one poll interval (30 s) and a slow
// machine.
func waitPolledPresence(t *testing.T, c *peertest.XMPPClient, from, show, status string) {
	t.Helper()
	ctx := timeout(t, 75*time.Second)
	_, ok := c.Next(ctx, func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && bare(e.From) == from && e.Type != "subscribe" && e.Type != "subscribed" &&
			e.Type != "unavailable" && e.Show == show && strings.Contains(e.Status, status)
	})
	if !ok {
		t.Fatalf("%s never saw %s as %q %q", c.JID, from, show, status)
	}
}
