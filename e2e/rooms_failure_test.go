package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/parleygw/parley/internal/peertest"
)

// A post that the other side of a portal refuses is told to its poster: an
// XMPP user whose ghost may not speak in the Matrix room (only moderators
// may post there) gets a private message from Parley in the MUC saying so,
// and the room on Matrix shows nothing of it.
func TestRoomRefusedPostIsTold(t *testing.T) {
	const (
		alias = "#quiet:localhost"
		muc   = "quiet@" + peertest.MUCDomain
	)
	st := newStack(t, stackSettings{portals: [][2]string{{alias, muc}}})

	owner := peertest.ConnectMatrix(t, st.hs, "mxowner", "mxownerpassword")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	eventsDefault := 50
	resp, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		RoomAliasName: "quiet", Preset: "public_chat", Name: "Quiet",
		PowerLevelOverride: &event.PowerLevelsEventContent{EventsDefault: eventsDefault},
	})
	if err != nil {
		t.Fatalf("create %s: %v", alias, err)
	}
	room := resp.RoomID

	st.prosody.Register(t, "xq", "xqpassword")
	xq := peertest.ConnectXMPP(t, st.prosody, "xq", "xqpassword")
	enterMUC(t, xq, muc, "XQ", "anyone")

	st.start(true)
	nextXMPP(t, xq, "Parley in the room", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == muc+"/Parley" && e.Type != "unavailable" && e.Type != "error"
	})
	xq.SendGroupchat(t, muc, "refused-1", "may I speak?")
	e := nextXMPP(t, xq, "report of the refused post", func(e peertest.XMPPEvent) bool {
		return e.Ev == "message" && e.From == muc+"/Parley"
	})
	t.Logf("%s reads: %s", xq.JID, e.Body)
	if !strings.Contains(e.Body, "did not reach the other side of the room") || !strings.Contains(e.Body, muc) {
		t.Errorf("the report reads %q", e.Body)
	}
	// The Matrix room never shows the post.
	quiet, stop := context.WithTimeout(context.Background(), 2*time.Second)
	defer stop()
	if m, ok := owner.NextMessage(quiet, func(m peertest.MatrixMessage) bool { return m.Room == room }); ok {
		t.Errorf("the Matrix room shows %q from %s", m.Body, m.Sender)
	}
}
