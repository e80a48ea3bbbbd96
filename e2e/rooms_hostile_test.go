package e2e

import (
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/names"
	"github.com/parleygw/parley/internal/peertest"
)

// Hostile names neither break a portal nor impersonate anyone. Matrix users
// named with a right-to-left override and control characters, with the
// nick of an XMPP occupant, with the listener's nick "Parley", and with 250
// characters post into the MUC: each post arrives once, from a nick of its
// own that is clean, short and nobody else's. XMPP users with a 300
// character nick and with the display name of a Matrix user post into the
// Matrix room: each post arrives once, from a ghost, never from the Matrix
// user named alike. Plain posts still cross both ways afterwards.
func TestRoomHostileNicks(t *testing.T) {
	const (
		alias = "#hostile:localhost"
		muc   = "hostile@" + peertest.MUCDomain
	)
	long := strings.Repeat("Ω", 250)
	hostileNames := map[string]string{
		"mrtl":  "\u202eXA XMPP\u0007\u200f",
		"mnick": "XA XMPP",
		"mbot":  "Parley",
		"mlong": long,
	}
	st := newStack(t, stackSettings{portals: [][2]string{{alias, muc}}})
	ctx := timeout(t, 3*time.Minute)

	owner := peertest.ConnectMatrix(t, st.hs, "mx1", "mx1password")
	if err := owner.SetDisplayName(ctx, "MX1 Matrix"); err != nil {
		t.Fatal(err)
	}
	resp, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "hostile", Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	mx := map[string]*peertest.MatrixClient{}
	for name, display := range hostileNames {
		c := peertest.ConnectMatrix(t, st.hs, name, name+"password")
		if err := c.SetDisplayName(ctx, display); err != nil {
			t.Fatalf("%s takes the name %q: %v", name, display, err)
		}
		if _, err := c.JoinRoom(ctx, alias, nil); err != nil {
			t.Fatal(err)
		}
		mx[name] = c
	}

	xmppNicks := map[string]string{
		"xa":    "XA XMPP",
		"xlong": strings.Repeat("ж", 300),
		"xmx1":  "MX1 Matrix",
	}
	xmpp := map[string]*peertest.XMPPClient{}
	for _, name := range []string{"xa", "xlong", "xmx1"} {
		st.prosody.Register(t, name, name+"password")
		c := peertest.ConnectXMPP(t, st.prosody, name, name+"password")
		whois := ""
		if name == "xa" {
			whois = "anyone"
		}
		enterMUC(t, c, muc, xmppNicks[name], whois)
		xmpp[name] = c
	}
	st.start(true)
	nextXMPP(t, xmpp["xa"], "Parley in the room", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == muc+"/Parley" && e.Type != "unavailable" && e.Type != "error"
	})

	for name, c := range mx {
		if _, err := c.SendText(ctx, room, "post-"+name, "hostile post from "+name); err != nil {
			t.Fatalf("%s posts: %v", name, err)
		}
	}
	for name, c := range xmpp {
		c.SendGroupchat(t, muc, "post-"+name, "hostile post from "+name)
	}

	// On XMPP: each Matrix post once, from a clean nick of its own.
	taken := map[string]bool{"Parley": true}
	for _, n := range xmppNicks {
		taken[n] = true
	}
	nicks := map[string]string{}
	for deadline := time.Now().Add(30 * time.Second); len(nicks) < len(mx) && time.Now().Before(deadline); {
		e, ok := xmpp["xa"].Next(ctx, func(e peertest.XMPPEvent) bool {
			return e.Ev == "groupchat" && e.Room == muc && !e.Delayed && strings.HasPrefix(e.Body, "hostile post from m")
		})
		if !ok {
			break
		}
		author := strings.TrimPrefix(e.Body, "hostile post from ")
		if _, dup := nicks[author]; dup {
			t.Errorf("the post of %s arrives twice in the MUC", author)
		}
		nicks[author] = e.Nick
	}
	seenNick := map[string]string{}
	for name := range mx {
		nick, ok := nicks[name]
		if !ok {
			t.Errorf("the post of %s (%q) never reached the MUC", name, hostileNames[name])
			continue
		}
		t.Logf("%q posts in the MUC as %q", hostileNames[name], nick)
		if taken[nick] {
			t.Errorf("%s posts in the MUC as %q, someone else's nick", name, nick)
		}
		if other, dup := seenNick[nick]; dup {
			t.Errorf("%s and %s post in the MUC under one nick %q", name, other, nick)
		}
		seenNick[nick] = name
		if n := utf8.RuneCountInString(nick); n == 0 || n > 64 {
			t.Errorf("%s posts in the MUC as a nick of %d characters", name, n)
		}
		for _, r := range nick {
			if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || unicode.Is(unicode.Cf, r) {
				t.Errorf("%s's nick %q holds %U", name, nick, r)
			}
		}
	}

	// On Matrix: each XMPP post once, from a ghost.
	senders := map[string]id.UserID{}
	for deadline := time.Now().Add(30 * time.Second); len(senders) < len(xmpp) && time.Now().Before(deadline); {
		m, ok := owner.NextMessage(ctx, func(m peertest.MatrixMessage) bool {
			return m.Room == room && strings.HasPrefix(m.Body, "hostile post from x")
		})
		if !ok {
			break
		}
		author := strings.TrimPrefix(m.Body, "hostile post from ")
		if _, dup := senders[author]; dup {
			t.Errorf("the post of %s arrives twice in the Matrix room", author)
		}
		senders[author] = m.Sender
	}
	for name := range xmpp {
		sender, ok := senders[name]
		if !ok {
			t.Errorf("the post of %s (nick of %d characters) never reached the Matrix room", name, utf8.RuneCountInString(xmppNicks[name]))
			continue
		}
		if want := id.UserID("@_xmpp_" + name + "_localhost:localhost"); sender != want {
			t.Errorf("the post of %s comes from %s, want its ghost %s", name, sender, want)
		}
		members, err := owner.JoinedMembers(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		got := members.Joined[sender].DisplayName
		t.Logf("%s is named %d characters in the room", sender, utf8.RuneCountInString(got))
		if want := names.Truncate(xmppNicks[name], 256); got != want {
			t.Errorf("%s is named %q in the room, want its nick cut to 256 characters, %q", sender, got, want)
		}
	}

	// The portal still carries plain posts both ways.
	xmpp["xa"].SendGroupchat(t, muc, "after", "still here")
	if _, ok := owner.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Room == room && m.Body == "still here" }); !ok {
		t.Error("a plain XMPP post after the hostile ones did not cross")
	}
	if _, err := owner.SendText(ctx, room, "after", "me too"); err != nil {
		t.Fatal(err)
	}
	nextXMPP(t, xmpp["xa"], "a plain Matrix post after the hostile ones", func(e peertest.XMPPEvent) bool {
		return e.Ev == "groupchat" && e.Room == muc && e.Body == "me too"
	})
}
