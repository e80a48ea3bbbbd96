package e2e

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// A portal's topic crosses both ways: the MUC owner's change of subject
// becomes the Matrix room's topic (set by Parley's bot, to whom the room
// gives the power its ghosts lack), and a Matrix user's change of topic
// becomes the MUC's subject (set by their occupant, as the room lets
// occupants do).
func TestRoomTopic(t *testing.T) {
	const (
		alias = "#topics:localhost"
		muc   = "topics@" + peertest.MUCDomain
	)
	st := newStack(t, stackSettings{portals: [][2]string{{alias, muc}}})
	ctx := timeout(t, 2*time.Minute)

	owner := peertest.ConnectMatrix(t, st.hs, "mxowner", "mxownerpassword")
	resp, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		RoomAliasName: "topics", Preset: "public_chat",
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{"@parley:localhost": 50}},
	})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID

	st.prosody.Register(t, "xt", "xtpassword")
	xt := peertest.ConnectXMPP(t, st.prosody, "xt", "xtpassword")
	xt.JoinRoom(t, muc, "Tess")
	nextXMPP(t, xt, "join of "+muc, func(e peertest.XMPPEvent) bool { return e.Ev == "joined" && e.Room == muc })
	xt.LetOccupantsChangeSubject(t, muc, "anyone")
	nextXMPP(t, xt, "configuration of "+muc, func(e peertest.XMPPEvent) bool { return e.Ev == "configured" && e.Room == muc })

	st.start(true)
	nextXMPP(t, xt, "Parley in the room", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == muc+"/Parley" && e.Type != "unavailable" && e.Type != "error"
	})

	// XMPP → Matrix.
	xt.SetSubject(t, muc, "Plans from XMPP")
	waitTopic(t, owner, room, "Plans from XMPP")

	// Matrix → XMPP.
	if _, err := owner.SendStateEvent(ctx, room, event.StateTopic, "", &event.TopicEventContent{Topic: "Plans from Matrix"}); err != nil {
		t.Fatal(err)
	}
	e := nextXMPP(t, xt, "the Matrix topic as the MUC's subject", func(e peertest.XMPPEvent) bool {
		return e.Ev == "subject" && e.Room == muc && e.Body == "Plans from Matrix"
	})
	if e.Nick == "Parley" || e.Nick == "" {
		t.Errorf("the subject was changed by %q, want the Matrix user's occupant", e.Nick)
	}
	// Neither change comes back: the Matrix topic stays, and no other
	// subject reaches the MUC.
	quiet, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if e, ok := xt.Next(quiet, func(e peertest.XMPPEvent) bool { return e.Ev == "subject" }); ok {
		t.Errorf("the MUC's subject changed again, to %q by %q", e.Body, e.Nick)
	}
	waitTopic(t, owner, room, "Plans from Matrix")
}

// waitTopic waits until room's topic, as c reads it, is topic.
func waitTopic(t *testing.T, c *peertest.MatrixClient, room id.RoomID, topic string) {
	t.Helper()
	var last event.TopicEventContent
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.StateEvent(ctx, room, event.StateTopic, "", &last)
		cancel()
		if err == nil && last.Topic == topic {
			return
		}
	}
	t.Fatalf("the topic of %s is %q, want %q", room, last.Topic, topic)
}
