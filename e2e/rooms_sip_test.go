package e2e

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// A portal with a SIP address: the Matrix room #desk:localhost, the MUC
// desk@conference.localhost and sip:desk@parley.localhost, with phone 1002
// a member from the YAML. Real sipp phones, Prosody with slixmpp, Synapse:
//   - phone 1001 writes to the room: it joins, and its post reaches the MUC
//     and the Matrix room from its own ghost, and phone 1002 from the
//     room's address with 1001's name;
//   - XMPP and Matrix posts reach both phones with the speaker's name;
//   - 1002's post reaches 1001, and its /who lists everyone;
//   - after Parley restarts, both phones are still in the room;
//   - after 1001's /leave, its ghost leaves and posts reach 1002 only.
func TestRoomPortalSIP(t *testing.T) {
	const (
		alias = "#desk:localhost"
		muc   = "desk@" + peertest.MUCDomain
		room  = "sip:desk@" + sipDomain
	)
	st := newStack(t, stackSettings{sipPortals: []sipPortal{{matrix: alias, xmpp: muc, sip: room, phones: []string{"sip:1002@" + sipDomain}}}})
	ctx := timeout(t, 4*time.Minute)

	mona := peertest.ConnectMatrix(t, st.hs, "mona", "monapassword")
	resp, err := mona.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "desk", Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	matrixRoom := resp.RoomID
	if err := mona.SetDisplayName(ctx, "Mona M"); err != nil {
		t.Fatal(err)
	}
	st.prosody.Register(t, "xena", "xenapassword")
	xena := peertest.ConnectXMPP(t, st.prosody, "xena", "xenapassword")
	enterMUC(t, xena, muc, "Xena", "anyone")
	st.start(true)
	nextXMPP(t, xena, "Parley in the room", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == muc+"/Parley" && e.Type != "unavailable" && e.Type != "error"
	})
	phone1 := registeredPhone(t, st, "1001", 100)
	phone2 := registeredPhone(t, st, "1002", 100)

	// 1001 writes first: it joins, and its post goes everywhere.
	sipMessage(t, st, "1001", "desk", "hello desk, 1001 here", "202")
	e := nextXMPP(t, xena, "1001's post", func(e peertest.XMPPEvent) bool {
		return e.Ev == "groupchat" && e.Room == muc && e.Body == "hello desk, 1001 here"
	})
	if e.Nick != "1001" {
		t.Errorf("the MUC sees 1001's post from %q, want the nick 1001", e.Nick)
	}
	m, ok := mona.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Room == matrixRoom && m.Body == "hello desk, 1001 here" })
	if ghost := id.UserID("@_sip_1001_" + sipDomain + ":localhost"); !ok || m.Sender != ghost {
		t.Errorf("the Matrix room sees 1001's post from %q (%v), want %s", m.Sender, ok, ghost)
	}
	got := waitPhoneBody(t, phone2, "1001: hello desk, 1001 here")
	if from := got.Header("From"); !strings.Contains(from, "<"+room+">") || !strings.Contains(from, `"1001 (desk)"`) {
		t.Errorf("1002 got 1001's post from %q, want \"1001 (desk)\" <%s>", from, room)
	}
	waitPhoneBody(t, phone1, "You are in desk: what you write to this address goes to the room. Send /leave to leave.")
	waitMember(t, mona, matrixRoom, id.UserID("@_sip_1001_"+sipDomain+":localhost"), "1001")

	// XMPP and Matrix posts reach both phones, from the room, named.
	xena.SendGroupchat(t, muc, "x-1", "hi phones, Xena here")
	if _, err := mona.SendText(ctx, matrixRoom, "m-1", "hi phones, Mona here"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*peertest.SippProcess{phone1, phone2} {
		for _, body := range []string{"Xena: hi phones, Xena here", "Mona M: hi phones, Mona here"} {
			if got := waitPhoneBody(t, p, body); !strings.Contains(got.Header("From"), "<"+room+">") {
				t.Errorf("%s got %q from %q", p.Name, body, got.Header("From"))
			}
		}
	}

	// A phone's post reaches the other phones.
	sipMessage(t, st, "1002", "desk", "1002 says hi", "202")
	waitPhoneBody(t, phone1, "1002: 1002 says hi")

	// /who lists the people of every side, then the phones.
	sipMessage(t, st, "1002", "desk", "/who", "202")
	waitPhoneBody(t, phone2, "In desk: Mona M, Xena; phones: 1002 (you), 1001.")

	// Membership is durable: after a restart, 1001, which joined by
	// writing, still gets the room's posts.
	// (A post while Parley's listener rejoins is caught up from the
	// MUC's history.)
	st.stop(syscall.SIGTERM)
	st.start(true)
	xena.SendGroupchat(t, muc, "x-r", "after the restart")
	waitPhoneBody(t, phone1, "Xena: after the restart")
	waitPhoneBody(t, phone2, "Xena: after the restart")

	// /leave: 1001 is told, its ghost leaves, and it hears no more.
	sipMessage(t, st, "1001", "desk", "/leave", "202")
	waitPhoneBody(t, phone1, "You left desk. Send /join, or any message, to join again.")
	// Its ghost leaves the MUC (where it joined before the restart) and
	// the Matrix room.
	nextXMPP(t, xena, "1001 leaving the MUC", func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && e.From == muc+"/1001" && e.Type == "unavailable"
	})
	ghost1001 := id.UserID("@_sip_1001_" + sipDomain + ":localhost")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		members, err := mona.JoinedMembers(ctx, matrixRoom)
		if err == nil {
			if _, in := members.Joined[ghost1001]; !in {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still in the Matrix room after 1001 left", ghost1001)
		}
	}
	xena.SendGroupchat(t, muc, "x-2", "only 1002 now")
	waitPhoneBody(t, phone2, "Xena: only 1002 now")
	time.Sleep(time.Second) // a moment for a wrong delivery to show
	for _, m := range phone1.Received("MESSAGE") {
		if strings.Contains(m.Body, "only 1002 now") {
			t.Errorf("1001 got %q after it left", m.Body)
		}
	}
	// Every phone got each post once (a retransmission aside).
	for _, p := range []*peertest.SippProcess{phone1, phone2} {
		seen := map[string]bool{}
		for _, m := range p.Received("MESSAGE") {
			key := m.Header("Call-ID")
			if seen[m.Body] && !seen[key] {
				t.Errorf("%s got %q twice, in two requests", p.Name, m.Body)
			}
			seen[m.Body], seen[key] = true, true
		}
	}
}

// waitPhoneBody waits until the phone received a MESSAGE with body, and
// returns it.
func waitPhoneBody(t *testing.T, p *peertest.SippProcess, body string) peertest.SipMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		for _, m := range p.Received("MESSAGE") {
			if m.Body == body {
				return m
			}
		}
		select {
		case <-ctx.Done():
			var bodies []string
			for _, m := range p.Received("MESSAGE") {
				bodies = append(bodies, m.Body)
			}
			t.Fatalf("%s got no MESSAGE %q; it got %q", p.Name, body, bodies)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
