package matrix

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// countRequests counts the fake homeserver's sends and message reads.
func countRequests(hs *fakeHS) (sends, looks int) {
	for _, r := range hs.requests() {
		switch {
		case r.Method == http.MethodPut && strings.Contains(r.Path, "/send/"):
			sends++
		case r.Method == http.MethodGet && strings.HasSuffix(r.Path, "/messages"):
			looks++
		}
	}
	return sends, looks
}

// TestResendFindsTheEarlierEvent is the crash that Dendrite turns into a
// duplicate: an earlier attempt reached the homeserver, which stored the
// event but forgot the transaction ID because the request never completed.
// A repeated attempt finds the marked event in the room and sends nothing.
func TestResendFindsTheEarlierEvent(t *testing.T) {
	failure := func() event.Event {
		return &event.Failure{Header: event.Header{ID: "fail-1",
			From: event.Address{Network: event.Matrix, ID: testGhost},
			To:   event.Address{Network: event.Matrix, ID: testUser}},
			EventID: "xmpp-orig", Reason: "gone"}
	}
	for _, tc := range []struct {
		name    string
		evt     func() event.Event
		attempt bridges.Attempt
		// found: the repeated attempt finds the event and sends nothing.
		found bool
	}{
		{"retry", func() event.Event { return outMessage("xmpp-1", "hello") }, bridges.Attempt{Retry: 1}, true},
		{"resumed after a restart", func() event.Event { return outMessage("xmpp-1", "hello") }, bridges.Attempt{Resumed: true}, true},
		{"failure notice resumed", failure, bridges.Attempt{Resumed: true}, true},
		// A first attempt does not look: the homeserver, having forgotten
		// the transaction ID, makes a second event (what the mark is for).
		{"first attempt", func() event.Event { return outMessage("xmpp-1", "hello") }, bridges.Attempt{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, hs, host := connectedAdapter(t)
			linkDM(host)
			ctx := context.Background()
			// Other messages in the room, before and after.
			if _, err := a.Send(ctx, outMessage("xmpp-0", "before")); err != nil {
				t.Fatal(err)
			}
			first, err := a.Send(ctx, tc.evt())
			if err != nil {
				t.Fatal(err)
			}
			hs.forgetTransactions()
			hs.reset()
			again, err := a.Send(bridges.WithAttempt(ctx, tc.attempt), tc.evt())
			if err != nil {
				t.Fatal(err)
			}
			sends, looks := countRequests(hs)
			events := hs.roomEvents(testRoom)
			if !tc.found {
				if looks != 0 || sends != 1 || len(events) != 3 {
					t.Errorf("first attempt: %d looks, %d sends, %d events in the room; want 0, 1, 3", looks, sends, len(events))
				}
				return
			}
			if again != first {
				t.Errorf("repeated attempt gave %q, want the earlier event %q", again, first)
			}
			if looks != 1 || sends != 0 || len(events) != 2 {
				t.Errorf("%d looks, %d sends, %d events in the room; want 1, 0, 2", looks, sends, len(events))
			}
			for _, r := range hs.requests() {
				if r.Query["user_id"] != testGhost || !strings.Contains(r.Query["filter"], testGhost) || r.Query["dir"] != "b" {
					t.Errorf("look %s %v: want backwards, as the ghost, filtered to the ghost", r, r.Query)
				}
			}
		})
	}
}

// TestSendMarksEveryEvent checks the mark on what the adapter sends.
func TestSendMarksEveryEvent(t *testing.T) {
	a, hs, host := connectedAdapter(t)
	linkDM(host)
	if _, err := a.Send(context.Background(), outMessage("xmpp-1", "hello")); err != nil {
		t.Fatal(err)
	}
	events := hs.roomEvents(testRoom)
	if len(events) != 1 || events[0].Content[sourceKey] != txnID("xmpp-1") || events[0].Content["body"] != "hello" {
		t.Fatalf("events %+v", events)
	}
}

// TestResumedLooksOncePerDM: after a restart only the first resumed entry
// of a DM that is not found needs a look; the earlier run sent the DM's
// events in order, so it sent none of those behind it. Found ones are
// looked for one by one; retries always look.
func TestResumedLooksOncePerDM(t *testing.T) {
	a, hs, host := connectedAdapter(t)
	linkDM(host)
	ctx := context.Background()
	if _, err := a.Send(ctx, outMessage("m1", "one")); err != nil {
		t.Fatal(err)
	}
	hs.forgetTransactions()
	hs.reset()
	resumed := bridges.WithAttempt(ctx, bridges.Attempt{Resumed: true})
	for i, want := range []struct{ sends, looks int }{
		{0, 1}, // m1: found
		{1, 2}, // m2: looked for, not found, sent
		{2, 2}, // m3: sent without a look
		{3, 2}, // m4
	} {
		if _, err := a.Send(resumed, outMessage(fmt.Sprintf("m%d", i+1), "x")); err != nil {
			t.Fatal(err)
		}
		if sends, looks := countRequests(hs); sends != want.sends || looks != want.looks {
			t.Errorf("after m%d: %d sends, %d looks; want %d, %d", i+1, sends, looks, want.sends, want.looks)
		}
	}
	if _, err := a.Send(bridges.WithAttempt(ctx, bridges.Attempt{Resumed: true, Retry: 1}), outMessage("m4", "x")); err != nil {
		t.Fatal(err)
	}
	if sends, looks := countRequests(hs); sends != 3 || looks != 3 {
		t.Errorf("a retry of m4: %d sends, %d looks; want 3, 3 (found)", sends, looks)
	}
	if n := len(hs.roomEvents(testRoom)); n != 4 {
		t.Errorf("%d events in the room, want 4", n)
	}
}

// TestResendLookErrors: a look that may work later holds the send back (the
// router retries); one that cannot (a homeserver without the endpoint)
// falls back on the transaction ID.
func TestResendLookErrors(t *testing.T) {
	for _, tc := range []struct {
		status    int
		body      string
		permanent bool
		sends     int
	}{
		{http.StatusBadGateway, `{"errcode":"M_UNKNOWN","error":"down"}`, false, 0},
		{http.StatusTooManyRequests, `{"errcode":"M_LIMIT_EXCEEDED","error":"slow down"}`, false, 0},
		{http.StatusNotFound, `{"errcode":"M_UNRECOGNIZED","error":"unrecognized"}`, false, 1},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			a, hs, host := connectedAdapter(t)
			linkDM(host)
			hs.setOverride(func(r hsRequest) (int, string, bool) {
				if strings.HasSuffix(r.Path, "/messages") {
					return tc.status, tc.body, true
				}
				return 0, "", false
			})
			_, err := a.Send(bridges.WithAttempt(context.Background(), bridges.Attempt{Retry: 1}), outMessage("m1", "x"))
			if sends, _ := countRequests(hs); sends != tc.sends {
				t.Errorf("%d sends, want %d", sends, tc.sends)
			}
			if (err != nil) != (tc.sends == 0) || bridges.IsPermanent(err) {
				t.Errorf("Send: %v", err)
			}
		})
	}
}

// TestResendLookIsBounded: the look reads at most lookBack events. A marked
// event further back is not found, and the message is sent again (which
// the transaction ID still de-duplicates on most homeservers).
func TestResendLookIsBounded(t *testing.T) {
	a, hs, host := connectedAdapter(t)
	linkDM(host)
	ctx := context.Background()
	if _, err := a.Send(ctx, outMessage("old", "x")); err != nil {
		t.Fatal(err)
	}
	for i := range lookBack {
		if _, err := a.Send(ctx, outMessage(fmt.Sprint("n", i), "x")); err != nil {
			t.Fatal(err)
		}
	}
	hs.forgetTransactions()
	hs.reset()
	if _, err := a.Send(bridges.WithAttempt(ctx, bridges.Attempt{Retry: 1}), outMessage("n0", "x")); err != nil {
		t.Fatal(err)
	}
	if sends, looks := countRequests(hs); sends != 0 || looks != 2 {
		t.Errorf("n0, %d back: %d sends, %d looks; want 0, 2", lookBack, sends, looks)
	}
	hs.reset()
	if _, err := a.Send(bridges.WithAttempt(ctx, bridges.Attempt{Retry: 1}), outMessage("old", "x")); err != nil {
		t.Fatal(err)
	}
	if sends, looks := countRequests(hs); sends != 1 || looks != lookBack/lookPage {
		t.Errorf("old, %d back: %d sends, %d looks; want 1, %d", lookBack+1, sends, looks, lookBack/lookPage)
	}
}

// TestNewRoomNeedsNoLook: a resumed entry whose DM room is created now
// cannot have been sent there before.
func TestNewRoomNeedsNoLook(t *testing.T) {
	a, hs, _ := connectedAdapter(t)
	if _, err := a.Send(bridges.WithAttempt(context.Background(), bridges.Attempt{Resumed: true, Retry: 2}), outMessage("m1", "x")); err != nil {
		t.Fatal(err)
	}
	if sends, looks := countRequests(hs); sends != 1 || looks != 0 {
		t.Errorf("%d sends, %d looks; want 1, 0", sends, looks)
	}
}

// TestOwnInviteLinksTheDM: a crash between creating a DM room and linking
// it left the user in a room whose messages were acknowledged to the
// homeserver and dropped ("not a dm"). The ghost's own is_direct invite,
// which the homeserver sends back in a transaction, now links the room.
func TestOwnInviteLinksTheDM(t *testing.T) {
	const orphan = "!orphan:localhost"
	for _, tc := range []struct {
		name       string
		linked     bool // the pair has a DM room already
		wantDMLink string
	}{
		{"no dm yet", false, orphan},
		{"another dm since", true, testRoom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := newFakeHS(t, "as-secret")
			host := newFakeHost()
			if tc.linked {
				linkDM(host)
			}
			a := newTestAdapter(t, hs, host)
			body := txnBody(memberEvent("$inv", testGhost, orphan, testUser, "invite", true),
				textEvent("$m1", testUser, orphan, "hello from the older room"))
			if status, code := putTxn(t, a, "t1", body); status != http.StatusOK {
				t.Fatalf("got %d %s", status, code)
			}
			if v, _ := host.links.Value("room:" + orphan); v != testGhost+"|"+testUser {
				t.Errorf("room link %q", v)
			}
			if v, _ := host.links.Value("dm:" + testGhost + "|" + testUser); v != tc.wantDMLink {
				t.Errorf("dm link %q, want %q", v, tc.wantDMLink)
			}
			var got []string
			for _, e := range host.events() {
				if m, ok := e.(*event.Message); ok {
					got = append(got, m.Body)
				}
			}
			if len(got) != 1 || got[0] != "hello from the older room" {
				t.Errorf("dispatched %v", got)
			}
		})
	}
}
