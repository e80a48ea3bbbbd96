package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// roomSeen is what one participant of a portal saw: for each post (by its
// text, which is its ID), the copies it got, by the ID that tells a copy
// from another post (the Matrix event ID; the room's stanza-id, XEP-0359,
// which a copy from the room's history shares with the live one), and who
// each copy came from.
type roomSeen struct {
	mu    sync.Mutex
	posts map[string]map[string]string // post → copy ID → sender
}

func newRoomSeen() *roomSeen { return &roomSeen{posts: map[string]map[string]string{}} }

func (s *roomSeen) add(post, copyID, sender string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.posts[post] == nil {
		s.posts[post] = map[string]string{}
	}
	s.posts[post][copyID] = sender
}

// copies returns the copies of post seen and their senders.
func (s *roomSeen) copies(post string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, sender := range s.posts[post] {
		out = append(out, sender)
	}
	slices.Sort(out)
	return out
}

// TestRoomRestarts runs a conversation in one portal through restarts of
// each server and of Parley: XMPP users (slixmpp on Prosody's MUC) and
// Matrix users (on Synapse) keep posting while
//
//	(a) Prosody is restarted (the Matrix users post while it is down, and
//	    the XMPP users, whose connections it ended, come back and ask the
//	    room for what they missed),
//	(b) Synapse is restarted (the XMPP users post while it is down),
//	(c) Parley is killed with SIGKILL and started again, with both sides
//	    posting while it is down (more than the 20 messages a MUC gives as
//	    history at a join).
//
// At the end every post is seen exactly once by every participant on the
// other side, from the participant that stands for its author, and no one
// sees a post of their own side come back from Parley: the test counts lost
// and duplicated posts by their text and fails with their list.
func TestRoomRestarts(t *testing.T) {
	const (
		alias = "#lounge:localhost"
		muc   = "lounge@" + peertest.MUCDomain
		// Posts per user in each stretch; downPosts while a server or
		// Parley is down.
		livePosts, downPosts = 4, 12
	)
	st := newStack(t, stackSettings{portals: [][2]string{{alias, muc}}})
	ctx := timeout(t, 8*time.Minute)

	mxNames, xNames := []string{"ma", "mb"}, []string{"xa", "xb"}
	nickOf := map[string]string{"xa": "XA XMPP", "xb": "XB XMPP", "ma": "MA Matrix", "mb": "MB Matrix"}
	seen := map[string]*roomSeen{}
	for _, n := range append(slices.Clone(mxNames), xNames...) {
		seen[n] = newRoomSeen()
	}

	// The Matrix side.
	mx := map[string]*peertest.MatrixClient{}
	var room id.RoomID
	for i, name := range mxNames {
		c := peertest.ConnectMatrix(t, st.hs, name, name+"password")
		mx[name] = c
		if i == 0 {
			resp, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "lounge", Preset: "public_chat"})
			if err != nil {
				t.Fatalf("create %s: %v", alias, err)
			}
			room = resp.RoomID
		} else if _, err := c.JoinRoom(ctx, alias, nil); err != nil {
			t.Fatalf("%s joins %s: %v", name, alias, err)
		}
		if err := c.SetDisplayName(ctx, nickOf[name]); err != nil {
			t.Fatal(err)
		}
	}

	// The XMPP side: xa owns the room, which shows real JIDs and is
	// persistent (it outlives a restart of Prosody, as a portal's room
	// does).
	for _, name := range xNames {
		st.prosody.Register(t, name, name+"password")
	}
	var xmu sync.Mutex
	xc := map[string]*peertest.XMPPClient{}
	// enter connects the XMPP user name and enters the room, asking for
	// the history since since when it is not zero; it then reads what
	// the user sees until the connection ends.
	enter := func(name string, since time.Time) {
		t.Helper()
		c := peertest.ConnectXMPP(t, st.prosody, name, name+"password")
		if since.IsZero() {
			c.JoinRoom(t, muc, nickOf[name])
		} else {
			c.RejoinRoom(t, muc, nickOf[name], since)
		}
		nextXMPP(t, c, "join of "+muc, func(e peertest.XMPPEvent) bool { return e.Ev == "joined" && e.Room == muc })
		if name == "xa" && since.IsZero() {
			c.ConfigurePersistentRoom(t, muc, "anyone")
			if e := nextXMPP(t, c, "configuration of "+muc, func(e peertest.XMPPEvent) bool {
				return (e.Ev == "configured" && e.Room == muc) || (e.Ev == "error" && e.From == muc)
			}); e.Ev == "error" {
				t.Fatalf("configure %s: %s %s", muc, e.Condition, e.Text)
			}
		}
		xmu.Lock()
		xc[name] = c
		xmu.Unlock()
		go func() {
			for {
				e, ok := c.Next(context.Background(), func(e peertest.XMPPEvent) bool { return e.Ev == "groupchat" && e.Room == muc })
				if !ok {
					return
				}
				copyID := e.SID
				if copyID == "" {
					copyID = "id:" + e.ID
				}
				seen[name].add(e.Body, copyID, e.Nick)
			}
		}()
	}
	for _, name := range xNames {
		enter(name, time.Time{})
	}
	for _, name := range mxNames {
		go func() {
			for {
				m, ok := mx[name].NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Room == room })
				if !ok {
					return
				}
				seen[name].add(m.Body, string(m.EventID), string(m.Sender))
			}
		}()
	}

	st.start(true)
	// The readers above take every event of the clients: Parley's log
	// says when its listener is in the room.
	for !strings.Contains(st.log(), "xmpp listening in room") {
		if ctx.Err() != nil {
			t.Fatal("Parley's listener did not join the room")
		}
		time.Sleep(100 * time.Millisecond)
	}

	var posts []string // every post, in order
	postMatrix := func(name, stretch string, i int) {
		t.Helper()
		p := fmt.Sprintf("%s-%s-%d", name, stretch, i)
		if _, err := mx[name].SendText(ctx, room, p, p); err != nil {
			t.Fatalf("%s posts %s: %v", name, p, err)
		}
		posts = append(posts, p)
	}
	postXMPP := func(name, stretch string, i int) {
		t.Helper()
		p := fmt.Sprintf("%s-%s-%d", name, stretch, i)
		xmu.Lock()
		c := xc[name]
		xmu.Unlock()
		c.SendGroupchat(t, muc, p, p)
		posts = append(posts, p)
	}
	converse := func(stretch string, n int, matrix, xmpp bool) {
		t.Helper()
		for i := range n {
			for _, name := range mxNames {
				if matrix {
					postMatrix(name, stretch, i)
				}
			}
			for _, name := range xNames {
				if xmpp {
					postXMPP(name, stretch, i)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	converse("before", livePosts, true, true)

	// (a) Prosody restarts while the Matrix users post.
	t.Log("restarting Prosody")
	down := time.Now().Add(-2 * time.Second)
	st.prosody.Stop(t)
	converse("prosody-down", downPosts/3, true, false)
	st.prosody.Start(t)
	converse("prosody-back", 1, true, false)
	for _, name := range xNames {
		enter(name, down)
	}
	converse("after-prosody", livePosts, true, true)

	// (b) Synapse restarts while the XMPP users post.
	t.Log("restarting Synapse")
	st.hs.Stop(t)
	converse("synapse-down", downPosts, false, true)
	st.hs.Start(t)
	converse("after-synapse", livePosts, true, true)

	// (c) Parley is killed while both sides post, more than a MUC's
	// history while it is down.
	t.Log("killing Parley")
	converse("parley-up", 2, true, true)
	st.stop(syscall.SIGKILL)
	converse("parley-down", downPosts, true, true)
	st.start(false)
	converse("after-parley", livePosts, true, true)

	// Wait until every participant has every post of the other side,
	// then a moment for duplicates to show.
	otherSide := func(reader, post string) bool {
		return strings.HasPrefix(reader, "m") != strings.HasPrefix(post, "m")
	}
	complete := func() bool {
		for reader, s := range seen {
			for _, p := range posts {
				if otherSide(reader, p) && len(s.copies(p)) == 0 {
					return false
				}
			}
		}
		return true
	}
	for !complete() && ctx.Err() == nil {
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)

	// The count.
	var lost, dups, wrong []string
	for _, reader := range append(slices.Clone(mxNames), xNames...) {
		s := seen[reader]
		for _, p := range posts {
			author, _, _ := strings.Cut(p, "-")
			copies := s.copies(p)
			if !otherSide(reader, p) {
				// Seen natively, from its author: a copy from
				// anyone else is Parley's echo.
				for _, from := range copies {
					if from != senderAs(reader, author, nickOf) {
						wrong = append(wrong, fmt.Sprintf("%s sees its side's %s again from %s", reader, p, from))
					}
				}
				continue
			}
			switch {
			case len(copies) == 0:
				lost = append(lost, reader+":"+p)
			case len(copies) > 1:
				dups = append(dups, fmt.Sprintf("%s:%s×%d", reader, p, len(copies)))
			}
			for _, from := range copies {
				if want := senderAs(reader, author, nickOf); from != want {
					wrong = append(wrong, fmt.Sprintf("%s sees %s from %s, want %s", reader, p, from, want))
				}
			}
		}
	}
	t.Logf("%d posts; %d lost, %d duplicated, %d from a wrong sender", len(posts), len(lost), len(dups), len(wrong))
	if len(lost)+len(dups)+len(wrong) > 0 {
		state, unsent, err := synapseUnsent(st)
		if keep := os.Getenv("PARLEY_KEEP_LOGS"); keep != "" {
			if b, err := os.ReadFile(filepath.Join(st.hs.Dir, "homeserver.log")); err == nil {
				_ = os.WriteFile(filepath.Join(keep, t.Name()+".homeserver.log"), b, 0o644)
			}
		}
		t.Logf("synapse: appservice state %q, %d events in transactions not acknowledged (err %v)", state, len(unsent), err)
		t.Errorf("lost: %v\nduplicated: %v\nwrong sender: %v", lost, dups, wrong)
	}
	if !strings.Contains(st.log(), "---- start 2") {
		t.Error("parley was not restarted")
	}
}

// senderAs returns who a post of author shows as from to reader: on
// Matrix, the author's MXID or the ghost of an XMPP author; on XMPP, the
// author's nick (a Matrix author's ghost takes their display name).
func senderAs(reader, author string, nickOf map[string]string) string {
	if strings.HasPrefix(reader, "m") {
		if strings.HasPrefix(author, "m") {
			return "@" + author + ":localhost"
		}
		return "@_xmpp_" + author + "_localhost:localhost"
	}
	return nickOf[author]
}
