package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/peertest"
)

// Portal rooms against a real homeserver: a user's public room that the
// bot joins at start, and an invite-only room that it joins once invited.

func TestIntegrationSynapsePortal(t *testing.T) {
	testPortalIntegration(t, func(t *testing.T, reg string) *peertest.Homeserver {
		return peertest.StartSynapse(t, peertest.HomeserverOptions{Registration: reg})
	})
}

func TestIntegrationDendritePortal(t *testing.T) {
	testPortalIntegration(t, func(t *testing.T, reg string) *peertest.Homeserver {
		return peertest.StartDendrite(t, peertest.HomeserverOptions{Registration: reg})
	})
}

func testPortalIntegration(t *testing.T, start func(t *testing.T, registration string) *peertest.Homeserver) {
	cfg, hs := startIntegrationHomeserver(t, start)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	alice := peertest.ConnectMatrix(t, hs, "alice", "alice-password")
	if err := alice.SetDisplayName(ctx, "Alice Liddell"); err != nil {
		t.Fatal(err)
	}
	team, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "team", Name: "Team"})
	if err != nil {
		t.Fatalf("create the public room: %v", err)
	}
	closed, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomAliasName: "closed", Name: "Closed"})
	if err != nil {
		t.Fatalf("create the invite-only room: %v", err)
	}
	const (
		teamAlias   = "#team:localhost"
		closedAlias = "#closed:localhost"
		bob         = "@_xmpp_bob=40example.org:localhost"
		carol       = "@_xmpp_carol=40example.org:localhost"
	)
	bot := botID(cfg.withDefaults())

	host := newFakeRoomHost(teamAlias, closedAlias)
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := startIntegrationAdapter(t, cfg, host, log)
	host.waitState(t, bridges.Connected)

	joined := func(room id.RoomID, user id.UserID) bool {
		members, err := alice.JoinedMembers(ctx, room)
		if err != nil {
			return false
		}
		_, ok := members.Joined[user]
		return ok
	}
	roomMessages := func() []*event.Message {
		var out []*event.Message
		for _, e := range host.events() {
			if m, ok := e.(*event.Message); ok && m.Room {
				out = append(out, m)
			}
		}
		return out
	}

	t.Run("bot joins the public room at start", func(t *testing.T) {
		waitFor(t, "the bot in the public room", func() bool { return joined(team.RoomID, bot) })
	})

	t.Run("a user's post is dispatched", func(t *testing.T) {
		posted, err := alice.SendText(ctx, team.RoomID, "team-1", "hello team")
		if err != nil {
			t.Fatal(err)
		}
		msg := waitDispatched(t, host.fakeHost, posted.String())
		want := event.Header{
			ID:       posted.String(),
			From:     event.Address{Network: event.Matrix, ID: alice.UserID.String()},
			To:       event.Address{Network: event.Matrix, ID: teamAlias},
			FromName: "Alice Liddell",
			Room:     true,
			Time:     msg.Time,
		}
		if msg.Header != want || msg.Body != "hello team" {
			t.Errorf("dispatched %+v, want header %+v", msg, want)
		}
	})

	t.Run("ghosts post with their names", func(t *testing.T) {
		for _, p := range []struct{ ghost, name, id, body string }{
			{bob, "Bob Builder", "xmpp-room-1", "hello from bob"},
			{carol, "Carol Singer", "xmpp-room-2", "hello from carol"},
		} {
			evtID, err := a.Send(ctx, &event.Message{Header: event.Header{
				ID:       p.id,
				From:     event.Address{Network: event.Matrix, ID: p.ghost},
				To:       event.Address{Network: event.Matrix, ID: teamAlias},
				FromName: p.name,
				Room:     true,
			}, Body: p.body})
			if err != nil {
				t.Fatalf("send as %s: %v", p.ghost, err)
			}
			got, ok := alice.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Room == team.RoomID && m.Sender == id.UserID(p.ghost) })
			if !ok {
				t.Fatalf("alice did not see the post of %s", p.ghost)
			}
			if got.Body != p.body || got.EventID.String() != evtID {
				t.Errorf("alice saw %+v, want %q as %s", got, p.body, evtID)
			}
			var member mevent.MemberEventContent
			if err := alice.StateEvent(ctx, team.RoomID, mevent.StateMember, p.ghost, &member); err != nil {
				t.Fatalf("member event of %s: %v", p.ghost, err)
			}
			if member.Membership != mevent.MembershipJoin || member.Displayname != p.name {
				t.Errorf("%s in the room: %+v, want joined as %q", p.ghost, member, p.name)
			}
			// Sent again (a retry): the same event, not a second post.
			again, err := a.Send(bridges.WithAttempt(ctx, bridges.Attempt{Retry: 1}), &event.Message{Header: event.Header{
				ID:   p.id,
				From: event.Address{Network: event.Matrix, ID: p.ghost},
				To:   event.Address{Network: event.Matrix, ID: teamAlias},
				Room: true,
			}, Body: p.body})
			if err != nil || again != evtID {
				t.Errorf("resend = %q, %v; want %q", again, err, evtID)
			}
		}

		// The ghosts' posts came back to the adapter in transactions before
		// alice's next one: none of them was dispatched.
		last, err := alice.SendText(ctx, team.RoomID, "team-2", "bye")
		if err != nil {
			t.Fatal(err)
		}
		waitDispatched(t, host.fakeHost, last.String())
		msgs := roomMessages()
		if len(msgs) != 2 {
			t.Errorf("dispatched %d room messages, want alice's 2: %+v", len(msgs), msgs)
		}
		for _, m := range host.events() {
			if owner := id.UserID(m.Head().From.ID); a.owns(owner) {
				t.Errorf("dispatched an event of the appservice's own %s: %+v", owner, m)
			}
		}
	})

	t.Run("a user's membership is dispatched", func(t *testing.T) {
		testPortalMembersInbound(ctx, t, a, hs, alice, team.RoomID, teamAlias, host)
	})

	t.Run("ghosts join, are named and leave", func(t *testing.T) {
		testPortalMembersOutbound(ctx, t, a, hs, alice, team.RoomID, teamAlias, bob)
	})

	t.Run("invite-only room", func(t *testing.T) {
		waitFor(t, "a warning about the invite-only room", func() bool {
			return len(logs.lines("level=WARN", "room="+closedAlias, "invite the bot")) > 0
		})
		if joined(closed.RoomID, bot) {
			t.Fatal("the bot is in the invite-only room uninvited")
		}
		// A post for it fails for now, to be tried again.
		post := &event.Message{Header: event.Header{
			ID:       "xmpp-closed-1",
			From:     event.Address{Network: event.Matrix, ID: bob},
			To:       event.Address{Network: event.Matrix, ID: closedAlias},
			FromName: "Bob Builder",
			Room:     true,
		}, Body: "let me in"}
		if _, err := a.Send(ctx, post); err == nil || bridges.IsPermanent(err) {
			t.Errorf("send to the invite-only room: %v, want a retryable error", err)
		}

		if _, err := alice.InviteUser(ctx, closed.RoomID, &mautrix.ReqInviteUser{UserID: bot}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the bot in the invite-only room", func() bool { return joined(closed.RoomID, bot) })
		// The adapter says so once its join returns, which may be just
		// after the homeserver shows the bot as a member.
		waitFor(t, "the room said reachable once joined", func() bool {
			return host.wasReachable(event.Address{Network: event.Matrix, ID: closedAlias})
		})

		// Now the ghost gets in (invited by the bot) and posts.
		evtID, err := a.Send(ctx, post)
		if err != nil {
			t.Fatalf("send once the bot is in: %v", err)
		}
		got, ok := alice.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Room == closed.RoomID })
		if !ok || got.Sender != bob || got.Body != "let me in" || got.EventID.String() != evtID {
			t.Errorf("alice saw %+v (%v), want bob's post %s", got, ok, evtID)
		}

		posted, err := alice.SendText(ctx, closed.RoomID, "closed-1", "welcome")
		if err != nil {
			t.Fatal(err)
		}
		msg := waitDispatched(t, host.fakeHost, posted.String())
		if msg.To != (event.Address{Network: event.Matrix, ID: closedAlias}) || !msg.Room || msg.FromName != "Alice Liddell" {
			t.Errorf("dispatched %+v", msg)
		}
	})
}

// testPortalMembersInbound has dave join the portal room, change his name,
// leave, join again and be kicked by alice: each is one event.Member, and
// nothing else of the room's membership (the bot's, the ghosts') is.
func testPortalMembersInbound(ctx context.Context, t *testing.T, a *Adapter, hs *peertest.Homeserver, alice *peertest.MatrixClient,
	room id.RoomID, name string, host *fakeRoomHost) {
	dave := peertest.ConnectMatrix(t, hs, "dave", "dave-password")
	if err := dave.SetDisplayName(ctx, "Dave Original"); err != nil {
		t.Fatal(err)
	}
	members := func() []*event.Member {
		var out []*event.Member
		for _, e := range host.events() {
			if m, ok := e.(*event.Member); ok {
				out = append(out, m)
			}
		}
		return out
	}
	before := len(members())
	waitMember := func(n int) *event.Member {
		t.Helper()
		waitFor(t, fmt.Sprintf("membership change %d", n), func() bool { return len(members()) >= before+n })
		return members()[before+n-1]
	}
	check := func(m *event.Member, change event.MemberChange, fromName, newName, reason string) {
		t.Helper()
		want := event.Header{
			ID: m.ID, From: event.Address{Network: event.Matrix, ID: dave.UserID.String()},
			To: event.Address{Network: event.Matrix, ID: name}, FromName: fromName, Room: true, Time: m.Time,
		}
		if m.Header != want || !strings.HasPrefix(m.ID, "$") || m.Time.IsZero() ||
			m.Change != change || m.Name != newName || m.Reason != reason {
			t.Errorf("dispatched %+v, want %s %q (reason %q) with header %+v", m, change, newName, reason, want)
		}
	}

	if _, err := dave.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	check(waitMember(1), event.MemberJoined, "Dave Original", "Dave Original", "")
	if err := dave.SetDisplayName(ctx, "Dave Renamed"); err != nil {
		t.Fatal(err)
	}
	check(waitMember(2), event.MemberRenamed, "Dave Renamed", "Dave Renamed", "")
	if _, err := dave.LeaveRoom(ctx, room, &mautrix.ReqLeave{Reason: "lunch"}); err != nil {
		t.Fatal(err)
	}
	check(waitMember(3), event.MemberLeft, "Dave Renamed", "", ownLeaveReason(hs, "lunch"))
	if _, err := dave.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	check(waitMember(4), event.MemberJoined, "Dave Renamed", "Dave Renamed", "")
	if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: dave.UserID, Reason: "too loud"}); err != nil {
		t.Fatal(err)
	}
	check(waitMember(5), event.MemberLeft, "Dave Renamed", "", "too loud")

	// alice's post comes after everything above: nothing more was
	// dispatched, and nothing of the appservice's own users.
	last, err := alice.SendText(ctx, room, "members-1", "after the members")
	if err != nil {
		t.Fatal(err)
	}
	waitDispatched(t, host.fakeHost, last.String())
	if n := len(members()) - before; n != 5 {
		t.Errorf("dispatched %d membership changes, want 5: %+v", n, members()[before:])
	}
	for _, e := range host.events() {
		if owner := id.UserID(e.Head().From.ID); a.owns(owner) {
			t.Errorf("dispatched an event of the appservice's own %s: %+v", owner, e)
		}
	}
}

// testPortalMembersOutbound joins a ghost to the portal room with a name
// of its own there, renames it and has it leave, each twice; and names
// there a ghost that joined to post (bob). alice sees each in the room's
// state, once.
func testPortalMembersOutbound(ctx context.Context, t *testing.T, a *Adapter, hs *peertest.Homeserver, alice *peertest.MatrixClient,
	room id.RoomID, name, bob string) {
	const erin = "@_xmpp_erin=40example.org:localhost"
	member := func(ghost string, change event.MemberChange, shown, reason string) *event.Member {
		return &event.Member{Header: event.Header{
			ID:       "xmpp-member-" + change.String() + "-" + ghost,
			From:     event.Address{Network: event.Matrix, ID: ghost},
			To:       event.Address{Network: event.Matrix, ID: name},
			FromName: "Erin Global",
			Room:     true,
		}, Change: change, Name: shown, Reason: reason}
	}
	state := func(ghost string) *mevent.Event {
		t.Helper()
		evt, err := alice.FullStateEvent(ctx, room, mevent.StateMember, ghost)
		if err != nil {
			t.Fatalf("member event of %s: %v", ghost, err)
		}
		return evt
	}
	apply := func(what string, m *event.Member, membership mevent.Membership, shown, reason string) {
		t.Helper()
		if _, err := a.Send(ctx, m); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		evt := state(m.From.ID)
		var got mevent.MemberEventContent
		if err := json.Unmarshal(evt.Content.VeryRaw, &got); err != nil {
			t.Fatal(err)
		}
		if got.Membership != membership || got.Displayname != shown || got.Reason != reason {
			t.Errorf("%s: alice sees %+v, want %s as %q (reason %q)", what, got, membership, shown, reason)
		}
		// Delivered again (after a crash): nothing changes.
		if _, err := a.Send(ctx, m); err != nil {
			t.Fatalf("%s again: %v", what, err)
		}
		if again := state(m.From.ID); again.ID != evt.ID {
			t.Errorf("%s again: a new member event %s (was %s)", what, again.ID, evt.ID)
		}
	}
	apply("erin joins", member(erin, event.MemberJoined, "Erin (xmpp)", ""), mevent.MembershipJoin, "Erin (xmpp)", "")
	joined, err := alice.JoinedMembers(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := joined.Joined[id.UserID(erin)]; !ok || m.DisplayName != "Erin (xmpp)" {
		t.Errorf("erin in the joined members: %+v (%v)", m, ok)
	}
	apply("erin renamed", member(erin, event.MemberRenamed, "Erin E.", ""), mevent.MembershipJoin, "Erin E.", "")
	apply("erin leaves", member(erin, event.MemberLeft, "", "gone home"), mevent.MembershipLeave, "", ownLeaveReason(hs, "gone home"))
	joined, err = alice.JoinedMembers(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := joined.Joined[id.UserID(erin)]; ok {
		t.Error("erin is still in the room")
	}
	// Renamed once gone: nothing.
	before := state(erin).ID
	if _, err := a.Send(ctx, member(erin, event.MemberRenamed, "Erin Again", "")); err != nil {
		t.Fatal(err)
	}
	if after := state(erin).ID; after != before {
		t.Errorf("a rename of a ghost not in the room sent %s", after)
	}

	// bob joined to post, with his global name: named in the room, his
	// global name stays.
	bobName := &event.Member{Header: event.Header{
		ID: "xmpp-member-bob", From: event.Address{Network: event.Matrix, ID: bob},
		To: event.Address{Network: event.Matrix, ID: name}, FromName: "Bob Builder", Room: true,
	}, Change: event.MemberJoined, Name: "Bob (lobby)"}
	apply("bob named in the room", bobName, mevent.MembershipJoin, "Bob (lobby)", "")
	global, err := alice.GetDisplayName(ctx, id.UserID(bob))
	if err != nil || global.DisplayName != "Bob Builder" {
		t.Errorf("bob's global name %+v, %v; want Bob Builder", global, err)
	}
}

// ownLeaveReason is the reason hs keeps in the event of a user who leaves
// with reason: Dendrite drops it (a kick's it keeps).
func ownLeaveReason(hs *peertest.Homeserver, reason string) string {
	if hs.Kind == "dendrite" {
		return ""
	}
	return reason
}
