package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// An XMPP user opens a Matrix room from their client: joining
// #team%localhost@matrix.localhost, a room of Parley's own MUC service,
// opens a portal to #team:localhost, which no YAML portal names. Posts
// cross both ways, each seen once; the Matrix members are occupants named
// by their display names; a later XMPP joiner gets the room's history; a
// Matrix user's coming and an XMPP user's going show on the other side.
func TestRoomServed(t *testing.T) {
	const (
		alias = "#team:localhost"
		muc   = "#team%localhost@" + componentDomain
	)
	st := newStack(t, stackSettings{mapping: servedPolicy("*")})
	ctx := timeout(t, 3*time.Minute)

	mx1 := peertest.ConnectMatrix(t, st.hs, "mx1", "mx1password")
	if err := mx1.SetDisplayName(ctx, "MX1 Matrix"); err != nil {
		t.Fatal(err)
	}
	resp, err := mx1.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "team", Preset: "public_chat", Name: "Team"})
	if err != nil {
		t.Fatalf("create %s: %v", alias, err)
	}
	room := resp.RoomID
	st.start(true)

	// xa opens the room by joining it.
	st.prosody.Register(t, "xa", "xapassword")
	xa := peertest.ConnectXMPP(t, st.prosody, "xa", "xapassword")
	xa.JoinRoom(t, muc, "XA")
	nextXMPP(t, xa, "join of "+muc, func(e peertest.XMPPEvent) bool { return e.Ev == "joined" && e.Room == muc })
	ghost := id.UserID("@_xmpp_xa_localhost:localhost")
	waitMember(t, mx1, room, ghost, "XA")

	// Posts both ways.
	xa.SendGroupchat(t, muc, "post-xa", "hello from xa")
	m, ok := mx1.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Room == room && m.Body == "hello from xa" })
	if !ok || m.Sender != ghost {
		t.Fatalf("mx1 sees %+v, %v; want xa's post from %s", m, ok, ghost)
	}
	nextXMPP(t, xa, "the reflection of xa's post", func(e peertest.XMPPEvent) bool {
		return e.Ev == "groupchat" && e.Room == muc && e.Nick == "XA" && e.Body == "hello from xa"
	})
	if _, err := mx1.SendText(ctx, room, "post-mx1", "hello from mx1"); err != nil {
		t.Fatal(err)
	}
	e := nextXMPP(t, xa, "mx1's post", func(e peertest.XMPPEvent) bool { return e.Ev == "groupchat" && e.Room == muc })
	if e.Nick != "MX1 Matrix" || e.Body != "hello from mx1" || e.Delayed {
		t.Fatalf("xa sees %+v, want mx1's post from MX1 Matrix", e)
	}

	// A Matrix user who joins is an occupant.
	mx2 := peertest.ConnectMatrix(t, st.hs, "mx2", "mx2password")
	if err := mx2.SetDisplayName(ctx, "MX2 Matrix"); err != nil {
		t.Fatal(err)
	}
	if _, err := mx2.JoinRoom(ctx, alias, nil); err != nil {
		t.Fatal(err)
	}
	nextXMPP(t, xa, "MX2 in the room", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == muc+"/MX2 Matrix" && e.Type != "unavailable" && e.Type != "error"
	})

	// xb joins later and asks for the history: both posts, delayed.
	st.prosody.Register(t, "xb", "xbpassword")
	xb := peertest.ConnectXMPP(t, st.prosody, "xb", "xbpassword")
	xb.JoinRoomWithHistory(t, muc, "XB", 10)
	nextXMPP(t, xb, "XB joined", func(e peertest.XMPPEvent) bool { return e.Ev == "joined" && e.Room == muc })
	var history []string
	for len(history) < 2 {
		e := nextXMPP(t, xb, "the history", func(e peertest.XMPPEvent) bool { return e.Ev == "groupchat" && e.Room == muc })
		if !e.Delayed {
			t.Fatalf("xb sees %+v before the history ends", e)
		}
		history = append(history, e.Nick+": "+e.Body)
	}
	if want := "XA: hello from xa|MX1 Matrix: hello from mx1"; strings.Join(history, "|") != want {
		t.Errorf("history %q, want %q", strings.Join(history, "|"), want)
	}
	nextXMPP(t, xa, "XB in the room", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == muc+"/XB" && e.Type != "unavailable"
	})

	// mx2 posts: each XMPP user sees it once; xb posts: each Matrix
	// user sees it once.
	if _, err := mx2.SendText(ctx, room, "post-mx2", "hello from mx2"); err != nil {
		t.Fatal(err)
	}
	xb.SendGroupchat(t, muc, "post-xb", "hello from xb")
	for name, c := range map[string]*peertest.XMPPClient{"xa": xa, "xb": xb} {
		seen := map[string]int{}
		wait, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for len(seen) < 2 {
			e, ok := c.Next(wait, func(e peertest.XMPPEvent) bool { return e.Ev == "groupchat" && e.Room == muc && !e.Delayed })
			if !ok {
				break
			}
			seen[e.Nick+": "+e.Body]++
		}
		cancel()
		if seen["MX2 Matrix: hello from mx2"] != 1 || seen["XB: hello from xb"] != 1 {
			t.Errorf("%s sees %v", name, seen)
		}
	}
	for name, c := range map[string]*peertest.MatrixClient{"mx1": mx1, "mx2": mx2} {
		m, ok := c.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Room == room && m.Body == "hello from xb" })
		if !ok || m.Sender != id.UserID("@_xmpp_xb_localhost:localhost") {
			t.Errorf("%s sees %+v, %v; want xb's post from its ghost", name, m, ok)
		}
	}
	// A moment for duplicates to show.
	time.Sleep(time.Second)
	for name, c := range map[string]*peertest.MatrixClient{"mx1": mx1, "mx2": mx2} {
		wait, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		if m, ok := c.NextMessage(wait, func(m peertest.MatrixMessage) bool {
			return m.Room == room && strings.HasPrefix(m.Body, "hello from x")
		}); ok {
			t.Errorf("%s sees %q once more", name, m.Body)
		}
		cancel()
	}
	for name, c := range map[string]*peertest.XMPPClient{"xa": xa, "xb": xb} {
		wait, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		if e, ok := c.Next(wait, func(e peertest.XMPPEvent) bool { return e.Ev == "groupchat" && !e.Delayed }); ok {
			t.Errorf("%s sees %q from %q once more", name, e.Body, e.Nick)
		}
		cancel()
	}

	// xa leaves: xb sees it, and xa's ghost leaves the Matrix room.
	xa.LeaveRoom(t, muc, "XA", "bye")
	nextXMPP(t, xb, "XA leaving", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == muc+"/XA" && e.Type == "unavailable"
	})
	waitGone(t, mx1, room, ghost)
	// xb goes offline without leaving: the server tells the room, and
	// xb's ghost leaves the Matrix room too.
	xb.Quit(t)
	waitGone(t, mx1, room, id.UserID("@_xmpp_xb_localhost:localhost"))
}

// waitGone waits until user is no member of room, as c sees the room.
func waitGone(t *testing.T, c *peertest.MatrixClient, room id.RoomID, user id.UserID) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		members, err := c.JoinedMembers(ctx, room)
		cancel()
		if err == nil {
			if _, in := members.Joined[user]; !in {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still in %s", user, room)
		}
	}
}

// servedPolicy lets users (a "network:id" pattern) open portals from XMPP,
// to rooms Parley serves under its component domain.
func servedPolicy(users string) string {
	return "  portals_on_demand:\n    users: [\"" + users + "\"]\n    muc_services: [" + componentDomain + "]\n"
}

// A join the policy refuses opens no portal: the client is told why, with
// not-allowed, and the Matrix room gets no one.
func TestRoomServedRefused(t *testing.T) {
	const (
		alias = "#closed:localhost"
		muc   = "#closed%localhost@" + componentDomain
	)
	st := newStack(t, stackSettings{mapping: servedPolicy("xmpp:xa@localhost")})
	ctx := timeout(t, 2*time.Minute)
	mx1 := peertest.ConnectMatrix(t, st.hs, "mx1", "mx1password")
	resp, err := mx1.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "closed", Preset: "public_chat"})
	if err != nil {
		t.Fatalf("create %s: %v", alias, err)
	}
	st.start(true)

	st.prosody.Register(t, "xz", "xzpassword")
	xz := peertest.ConnectXMPP(t, st.prosody, "xz", "xzpassword")
	xz.JoinRoom(t, muc, "XZ")
	e := nextXMPP(t, xz, "the refusal of the join", func(e peertest.XMPPEvent) bool {
		return (e.Ev == "presence-error" && strings.HasPrefix(e.From, muc)) || (e.Ev == "joined" && e.Room == muc)
	})
	if e.Ev != "presence-error" || e.Condition != "not-allowed" || !strings.Contains(e.Text, "xz@localhost may not open portals") {
		t.Fatalf("the join got %+v, want not-allowed naming why", e)
	}
	t.Logf("xz is told: %s", e.Text)
	members, err := mx1.JoinedMembers(ctx, resp.RoomID)
	if err != nil {
		t.Fatal(err)
	}
	if len(members.Joined) != 1 {
		t.Errorf("the refused room has %d members, want only its creator", len(members.Joined))
	}
}
