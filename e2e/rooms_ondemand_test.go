package e2e

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// onDemandPolicy lets the Matrix users whose names start with "mx" open
// portals to rooms of Prosody's MUC service.
const onDemandPolicy = `  portals_on_demand:
    users: ["matrix:@mx*:localhost"]
    muc_services: [` + peertest.MUCDomain + `]
`

// A Matrix user joins #_xmpp_daily_conference.localhost:localhost, an alias
// in Parley's namespace that no one created: Parley creates the room, opens
// the portal to daily@conference.localhost, and its listener joins that
// MUC. Posts then go both ways between the Matrix user and two XMPP users
// in the MUC, and still do after Parley is killed and started again. An
// alias naming a MUC service the policy does not list is refused and
// creates nothing; a user the policy does not let open portals joins the
// room made for an alias but is told it is not bridged.
func TestRoomPortalOnDemand(t *testing.T) {
	const (
		muc   = "daily@" + peertest.MUCDomain
		alias = "#_xmpp_daily_conference.localhost:localhost"
	)
	st := newStack(t, stackSettings{mapping: onDemandPolicy})

	xmpp := map[string]*peertest.XMPPClient{}
	for i, name := range []string{"xa", "xb"} {
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

	mx := peertest.ConnectMatrix(t, st.hs, "mx1", "mx1password")
	ctx := timeout(t, 30*time.Second)
	if err := mx.SetDisplayName(ctx, "MX1 Matrix"); err != nil {
		t.Fatal(err)
	}
	joined, err := mx.JoinRoom(ctx, alias, nil)
	if err != nil {
		t.Fatalf("mx1 joins %s: %v", alias, err)
	}
	room := joined.RoomID
	if resp, err := mx.ResolveAlias(ctx, id.RoomAlias(alias)); err != nil || resp.RoomID != room {
		t.Fatalf("%s resolves to %v (%v), want the room mx1 joined, %s", alias, resp, err, room)
	}
	listening := func(what string) {
		t.Helper()
		nextXMPP(t, xmpp["xa"], what, func(e peertest.XMPPEvent) bool {
			return e.Ev == "presence" && e.From == muc+"/Parley" && e.Type != "unavailable" && e.Type != "error"
		})
	}
	listening("Parley's listener in the MUC of the new portal")

	exchange := func(round string) {
		t.Helper()
		for _, name := range []string{"xa", "xb"} {
			xmpp[name].SendGroupchat(t, muc, round+"-"+name, round+" from "+name)
		}
		sctx := timeout(t, 15*time.Second)
		if _, err := mx.SendText(sctx, room, round+"-mx1", round+" from mx1"); err != nil {
			t.Fatalf("mx1 posts: %v", err)
		}
		seen := map[string]bool{}
		mctx := timeout(t, 30*time.Second)
		for len(seen) < 2 {
			m, ok := mx.NextMessage(mctx, func(m peertest.MatrixMessage) bool {
				return m.Room == room && strings.HasPrefix(m.Body, round+" from x")
			})
			if !ok {
				t.Fatalf("%s: mx1 saw only %v of the XMPP posts", round, seen)
			}
			author := strings.TrimPrefix(m.Body, round+" from ")
			if want := "@_xmpp_" + author + "_localhost:localhost"; string(m.Sender) != want {
				t.Errorf("%s: mx1 sees %q from %s, want %s", round, m.Body, m.Sender, want)
			}
			seen[author] = true
		}
		for name, c := range xmpp {
			e := nextXMPP(t, c, round+" post of mx1", func(e peertest.XMPPEvent) bool {
				return e.Ev == "groupchat" && e.Room == muc && !e.Delayed && e.Body == round+" from mx1"
			})
			if e.Nick != "MX1 Matrix" {
				t.Errorf("%s: %s sees the post of mx1 from %q, want \"MX1 Matrix\"", round, name, e.Nick)
			}
		}
	}
	exchange("first")

	// The portal is kept: after a crash and a start, the listener is in the
	// MUC again and posts go on both ways.
	// (Prosody keeps the occupants of a component that went away: the
	// XMPP users see no leave, and the posts of the next round, which
	// reach Matrix only through the listener, tell that it is back.)
	st.stop(syscall.SIGKILL)
	st.start(true)
	exchange("again")
	_, second, _ := strings.Cut(st.log(), "---- start 2")
	if !strings.Contains(second, "portals opened on demand loaded") ||
		!strings.Contains(second, `msg="xmpp listening in room" network=xmpp room=`+muc) {
		t.Error("the log of the second start does not say the stored portal was loaded and its MUC joined")
	}

	// A MUC service the policy does not list: the alias does not exist,
	// and no room is made.
	const refused = "#_xmpp_secret_muc.example.org:localhost"
	before, err := mx.JoinedRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mx.JoinRoom(ctx, refused, nil); !errors.Is(err, mautrix.MNotFound) {
		t.Fatalf("mx1 joins %s: %v, want M_NOT_FOUND", refused, err)
	}
	if _, err := mx.ResolveAlias(ctx, id.RoomAlias(refused)); !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("%s resolves: %v, want M_NOT_FOUND", refused, err)
	}
	after, err := mx.JoinedRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.JoinedRooms) != len(before.JoinedRooms) {
		t.Errorf("mx1 is in %d rooms after the refused join, %d before", len(after.JoinedRooms), len(before.JoinedRooms))
	}
	if log := st.log(); !strings.Contains(log, "portal on demand refused") || !strings.Contains(log, "muc.example.org is not a MUC service portals may reach") {
		t.Errorf("the log does not say why %s was refused", refused)
	}

	// Someone the policy does not let open portals: the room is made (the
	// homeserver does not say who asked), but they are told it is not
	// bridged; mx1 joining it opens the portal.
	const (
		lounge    = "#_xmpp_lounge_conference.localhost:localhost"
		loungeMUC = "lounge@" + peertest.MUCDomain
	)
	enterMUC(t, xmpp["xa"], loungeMUC, "XA XMPP", "")
	outsider := peertest.ConnectMatrix(t, st.hs, "outsider", "outsiderpassword")
	oj, err := outsider.JoinRoom(ctx, lounge, nil)
	if err != nil {
		t.Fatalf("outsider joins %s: %v", lounge, err)
	}
	nctx := timeout(t, 30*time.Second)
	notice, ok := outsider.NextMessage(nctx, func(m peertest.MatrixMessage) bool { return m.Room == oj.RoomID })
	if !ok {
		t.Fatal("outsider is not told the room is not bridged")
	}
	if !strings.Contains(notice.Body, "@outsider:localhost: this room is not bridged with the XMPP group chat lounge@conference.localhost") ||
		!strings.Contains(notice.Body, "you may not open portals") {
		t.Errorf("outsider is told %q", notice.Body)
	}
	pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if e, ok := xmpp["xa"].Next(pctx, func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == loungeMUC+"/Parley"
	}); ok {
		t.Errorf("Parley's listener is in the lounge before anyone allowed joined it: %+v", e)
	}
	cancel()
	if _, err := mx.JoinRoom(ctx, lounge, nil); err != nil {
		t.Fatalf("mx1 joins %s: %v", lounge, err)
	}
	nextXMPP(t, xmpp["xa"], "Parley's listener in the lounge once mx1 joined", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == loungeMUC+"/Parley" && e.Type != "unavailable" && e.Type != "error"
	})
}
