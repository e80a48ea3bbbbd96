package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// A portal joins the Matrix room #team:localhost and the MUC
// team@conference.localhost. Three XMPP users (slixmpp) and three Matrix
// users each post once: every participant on the other side sees every post
// exactly once, from a participant of its own named as its author, and no
// one sees their own post come back from a ghost.
func TestRoomPortal(t *testing.T) {
	const (
		alias = "#team:localhost"
		muc   = "team@" + peertest.MUCDomain
	)
	st := newStack(t, stackSettings{portals: [][2]string{{alias, muc}}})

	// The Matrix side: mx1 makes the public room, the others join it.
	mx := map[string]*peertest.MatrixClient{}
	var room id.RoomID
	for i, name := range []string{"mx1", "mx2", "mx3"} {
		c := peertest.ConnectMatrix(t, st.hs, name, name+"password")
		mx[name] = c
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if i == 0 {
			resp, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "team", Preset: "public_chat", Name: "Team"})
			if err != nil {
				cancel()
				t.Fatalf("create %s: %v", alias, err)
			}
			room = resp.RoomID
		} else if _, err := c.JoinRoom(ctx, alias, nil); err != nil {
			cancel()
			t.Fatalf("%s joins %s: %v", name, alias, err)
		}
		if err := c.SetDisplayName(ctx, strings.ToUpper(name)+" Matrix"); err != nil {
			cancel()
			t.Fatal(err)
		}
		cancel()
	}

	// The XMPP side: the first to join owns the room and lets everyone
	// see real JIDs; the others join as they are.
	xmpp := map[string]*peertest.XMPPClient{}
	for i, name := range []string{"xa", "xb", "xc"} {
		st.prosody.Register(t, name, name+"password")
		c := peertest.ConnectXMPP(t, st.prosody, name, name+"password")
		xmpp[name] = c
		whois := ""
		if i == 0 {
			whois = "anyone"
		}
		enterMUC(t, c, muc, strings.ToUpper(name)+" XMPP", whois)
	}

	st.start(true)
	// Parley's listener is in the room once its presence reaches a user.
	nextXMPP(t, xmpp["xa"], "Parley in the room", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == muc+"/Parley" && e.Type != "unavailable" && e.Type != "error"
	})

	for _, name := range []string{"xa", "xb", "xc"} {
		xmpp[name].SendGroupchat(t, muc, "post-"+name, "hello from "+name)
	}
	for _, name := range []string{"mx1", "mx2", "mx3"} {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if _, err := mx[name].SendText(ctx, room, "post-"+name, "hello from "+name); err != nil {
			cancel()
			t.Fatalf("%s posts: %v", name, err)
		}
		cancel()
	}

	// Every Matrix user sees each XMPP post once, from a ghost whose name
	// is its author's nick, and none of the Matrix posts from a ghost.
	for name, c := range mx {
		seen := map[string]int{}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for len(seen) < 3 {
			m, ok := c.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Room == room })
			if !ok {
				break
			}
			if strings.HasPrefix(m.Body, "hello from mx") {
				if m.Sender != id.UserID("@"+strings.TrimPrefix(m.Body, "hello from ")+":localhost") {
					t.Errorf("%s sees %q from %s, not its author", name, m.Body, m.Sender)
				}
				continue
			}
			author := strings.TrimPrefix(m.Body, "hello from ")
			seen[author]++
			if want := fmt.Sprintf("@_xmpp_%s_localhost:localhost", author); string(m.Sender) != want {
				t.Errorf("%s sees %q from %s, want %s", name, m.Body, m.Sender, want)
			}
			if dn, err := c.GetDisplayName(ctx, m.Sender); err != nil || dn.DisplayName != strings.ToUpper(author)+" XMPP" {
				t.Errorf("%s sees %q from %v (%v), want the name %q", name, m.Body, dn, err, strings.ToUpper(author)+" XMPP")
			}
		}
		cancel()
		for _, author := range []string{"xa", "xb", "xc"} {
			if seen[author] != 1 {
				t.Errorf("%s saw the post of %s %d times", name, author, seen[author])
			}
		}
	}
	// A moment for duplicates to show.
	time.Sleep(time.Second)
	for name, c := range mx {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		if m, ok := c.NextMessage(ctx, func(m peertest.MatrixMessage) bool {
			return m.Room == room && strings.HasPrefix(m.Body, "hello from x")
		}); ok {
			t.Errorf("%s sees %q a second time", name, m.Body)
		}
		cancel()
	}

	// Every XMPP user sees each Matrix post once, from the nick of its
	// author's display name, and no XMPP post twice.
	for name, c := range xmpp {
		seen := map[string]int{}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			e, ok := c.Next(ctx, func(e peertest.XMPPEvent) bool {
				return e.Ev == "groupchat" && e.Room == muc && !e.Delayed
			})
			if !ok {
				break
			}
			seen[e.Body]++
			if author, ok := strings.CutPrefix(e.Body, "hello from mx"); ok {
				if want := "MX" + author + " Matrix"; e.Nick != want {
					t.Errorf("%s sees %q from %q, want %q", name, e.Body, e.Nick, want)
				}
			}
			if len(seen) == 6 {
				break
			}
		}
		cancel()
		for _, author := range []string{"xa", "xb", "xc", "mx1", "mx2", "mx3"} {
			if n := seen["hello from "+author]; n != 1 {
				t.Errorf("%s saw the post of %s %d times", name, author, n)
			}
		}
		ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
		if e, ok := c.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "groupchat" && !e.Delayed }); ok {
			t.Errorf("%s sees %q from %q once more", name, e.Body, e.Nick)
		}
		cancel()
	}
}

// enterMUC has a real user join the MUC room as nick and, with whois set
// (the room's first occupant owns it), configure who sees real JIDs.
func enterMUC(t testing.TB, c *peertest.XMPPClient, room, nick, whois string) {
	t.Helper()
	c.JoinRoom(t, room, nick)
	nextXMPP(t, c, "join of "+room, func(e peertest.XMPPEvent) bool { return e.Ev == "joined" && e.Room == room })
	if whois != "" {
		c.ConfigureRoom(t, room, whois)
		e := nextXMPP(t, c, "configuration of "+room, func(e peertest.XMPPEvent) bool {
			return (e.Ev == "configured" && e.Room == room) || (e.Ev == "error" && e.From == room)
		})
		if e.Ev == "error" {
			t.Fatalf("configure %s: %s %s", room, e.Condition, e.Text)
		}
	}
}

// nextXMPP waits for the client's next event that match accepts.
func nextXMPP(t testing.TB, c *peertest.XMPPClient, what string, match func(peertest.XMPPEvent) bool) peertest.XMPPEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, ok := c.Next(ctx, match)
	if !ok {
		t.Fatalf("%s: no %s", c.JID, what)
	}
	return e
}

// Who is in a portal shows on both sides: an XMPP user in the MUC is a
// member of the Matrix room under their nick, and follows their nick
// changes and their leaving; a Matrix user who joins the room is an
// occupant of the MUC under their display name, changes nick when they
// change it, and leaves it with them.
func TestRoomMembership(t *testing.T) {
	const (
		alias = "#crew:localhost"
		muc   = "crew@" + peertest.MUCDomain
	)
	st := newStack(t, stackSettings{portals: [][2]string{{alias, muc}}})
	owner := peertest.ConnectMatrix(t, st.hs, "owner", "ownerpassword")
	ctx := timeout(t, 2*time.Minute)
	resp, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "crew", Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	st.prosody.Register(t, "xa", "xapassword")
	xa := peertest.ConnectXMPP(t, st.prosody, "xa", "xapassword")
	enterMUC(t, xa, muc, "Xavier", "anyone")
	st.start(true)

	// xa, in the MUC before Parley came, is a member of the room.
	ghost := id.UserID("@_xmpp_xa_localhost:localhost")
	waitMember(t, owner, room, ghost, "Xavier")
	xa.ChangeNick(t, muc, "Xavier B.")
	waitMember(t, owner, room, ghost, "Xavier B.")

	// A Matrix user joins: an occupant of the MUC under their name.
	mx := peertest.ConnectMatrix(t, st.hs, "mira", "mirapassword")
	if err := mx.SetDisplayName(ctx, "Mira M"); err != nil {
		t.Fatal(err)
	}
	if _, err := mx.JoinRoom(ctx, alias, nil); err != nil {
		t.Fatal(err)
	}
	nextXMPP(t, xa, "Mira in the MUC", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == muc+"/Mira M" && e.Type != "unavailable" && e.Type != "error"
	})
	// She changes her display name: her occupant changes its nick.
	if err := mx.SetDisplayName(ctx, "Mira Moon"); err != nil {
		t.Fatal(err)
	}
	nextXMPP(t, xa, "Mira's new nick in the MUC", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == muc+"/Mira Moon" && e.Type != "unavailable" && e.Type != "error"
	})
	if _, err := mx.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	nextXMPP(t, xa, "Mira leaving the MUC", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == muc+"/Mira Moon" && e.Type == "unavailable"
	})

	// xa leaves: so does the ghost.
	xa.LeaveRoom(t, muc, "Xavier B.", "bye")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		members, err := owner.JoinedMembers(ctx, room)
		if err == nil {
			if _, in := members.Joined[ghost]; !in {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still in the room after xa left the MUC", ghost)
		}
	}
}

// waitMember waits until user is a member of room with the display name
// name, as c sees the room.
func waitMember(t *testing.T, c *peertest.MatrixClient, room id.RoomID, user id.UserID, name string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		members, err := c.JoinedMembers(ctx, room)
		cancel()
		if err != nil {
			continue
		}
		if m, ok := members.Joined[user]; ok {
			if last = m.DisplayName; last == name {
				return
			}
		}
	}
	t.Fatalf("%s is not a member of %s named %q (last seen name %q)", user, room, name, last)
}
