package main

import (
	"context"
	"fmt"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// The portal of the demo: a Matrix room and a MUC of Prosody's, joined by
// the YAML's mapping.portals.
const (
	roomAliasName = "lobby"
	roomAlias     = "#" + roomAliasName + ":" + serverName
	roomMUC       = "lobby@" + peertest.MUCDomain
	roomSIP       = "sip:lobby@" + sipDomain // phones write here to post in the room
	botMXID       = "@parley:" + serverName  // the appservice's bot
)

// room is the group chat part of the scripted conversation. bob makes the
// public room #lobby and invites Parley's bot, which joins it; alice enters
// the MUC, where Parley's listener already is. Each writes once, and each
// reads the other's post from a participant of its own; then bob changes
// the room's topic, and the MUC's subject follows. (The phone posts in the
// room later, in phoneCall.)
func (d *demo) room(clients *runner, alice *peertest.XMPPClient, inbox *xmppInbox, bob *peertest.MatrixClient) {
	fmt.Printf("\ntranscript, continued: the group chat %s ↔ %s (a portal in the YAML)\n", roomAlias, roomMUC)
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		RoomAliasName: roomAliasName, Preset: "public_chat", Name: "Lobby", Invite: []id.UserID{botMXID},
	})
	if err != nil {
		d.fail("bob could not create %s: %v", roomAlias, err)
	}
	say("matrix", "%s created %s (%s) and invited Parley's bot %s", bob.UserID, roomAlias, resp.RoomID, botMXID)
	d.lobby = resp.RoomID
	d.waitJoined(bob, resp.RoomID, botMXID)
	say("matrix", "%s joined %s", botMXID, roomAlias)

	alice.JoinRoom(clients, roomMUC, "Alice")
	inbox.wait(d, "the join of "+roomMUC, func(e peertest.XMPPEvent) bool { return e.Ev == "joined" && e.Room == roomMUC })
	say("xmpp", "%s entered %s as Alice (Parley's listener is there as Parley)", aliceJID, roomMUC)

	body := "Hello everyone in the lobby, Alice here on XMPP."
	sent := time.Now()
	alice.SendGroupchat(clients, roomMUC, "demo-room-1", body)
	say("xmpp", "%s/Alice → %s: %s", roomMUC, roomMUC, body)
	m, ok := bob.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Room == resp.RoomID && m.Body == body })
	if !ok {
		d.fail("bob did not see alice's post %q in %s within %s", body, roomAlias, waitTimeout)
	}
	name := ""
	if dn, err := bob.GetDisplayName(ctx, m.Sender); err == nil && dn.DisplayName != "" {
		name = " (" + dn.DisplayName + ")"
	}
	say("matrix", "%s%s in %s: %s  [%s]", m.Sender, name, roomAlias, m.Body, round(time.Since(sent)))

	body = "Hi Alice! Bob from Matrix, in the same room."
	sent = time.Now()
	if _, err := bob.SendText(ctx, resp.RoomID, "demo-room-2", body); err != nil {
		d.fail("bob could not post in %s: %v", roomAlias, err)
	}
	say("matrix", "%s in %s: %s", bob.UserID, roomAlias, body)
	e := inbox.wait(d, fmt.Sprintf("bob's post %q", body), func(e peertest.XMPPEvent) bool {
		return e.Ev == "groupchat" && e.Room == roomMUC && e.Body == body
	})
	say("xmpp", "%s/%s → %s: %s  [%s]", roomMUC, e.Nick, roomMUC, e.Body, round(time.Since(sent)))

	// bob sets the room's topic: it becomes the MUC's subject (set by
	// Parley's listener, a moderator of the MUC it made).
	topic := "Plans for the week"
	sent = time.Now()
	if _, err := bob.SendStateEvent(ctx, resp.RoomID, event.StateTopic, "", &event.TopicEventContent{Topic: topic}); err != nil {
		d.fail("bob could not set the topic of %s: %v", roomAlias, err)
	}
	say("matrix", "%s set the topic of %s: %s", bob.UserID, roomAlias, topic)
	e = inbox.wait(d, fmt.Sprintf("the subject %q", topic), func(e peertest.XMPPEvent) bool {
		return e.Ev == "subject" && e.Room == roomMUC && e.Body == topic
	})
	say("xmpp", "%s/%s set the subject of %s: %s  [%s]", roomMUC, e.Nick, roomMUC, e.Body, round(time.Since(sent)))
	d.timings = append(d.timings, timing{"room", time.Since(t0)})
}
