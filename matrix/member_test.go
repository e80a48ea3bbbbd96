package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	mevent "maunium.net/go/mautrix/event"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// memberChangeEvent is an m.room.member event of target in room by sender
// with content, and prev as unsigned.prev_content when it is not "".
func memberChangeEvent(eventID, sender, room, target, content, prev string) string {
	unsigned := ""
	if prev != "" {
		unsigned = `,"unsigned":{"prev_content":` + prev + `}`
	}
	return fmt.Sprintf(`{"type":"m.room.member","event_id":%q,"sender":%q,"room_id":%q,"state_key":%q,"origin_server_ts":1700000000000,"content":%s%s}`,
		eventID, sender, room, target, content, unsigned)
}

func TestMemberChange(t *testing.T) {
	for _, c := range []struct {
		name, content, prev string
		known               bool
		knownName           string
		change              event.MemberChange
		shown               string
	}{
		{name: "first join", content: `{"membership":"join","displayname":"Bob"}`, change: event.MemberJoined, shown: "Bob"},
		{name: "join without a name", content: `{"membership":"join"}`, change: event.MemberJoined},
		{name: "join after an invite", content: `{"membership":"join","displayname":"Bob"}`, prev: `{"membership":"invite"}`, change: event.MemberJoined, shown: "Bob"},
		{name: "join after a leave", content: `{"membership":"join","displayname":"Bob"}`, prev: `{"membership":"leave"}`, change: event.MemberJoined, shown: "Bob"},
		{name: "rename", content: `{"membership":"join","displayname":"Robert"}`, prev: `{"membership":"join","displayname":"Bob"}`, change: event.MemberRenamed, shown: "Robert"},
		{name: "name removed", content: `{"membership":"join"}`, prev: `{"membership":"join","displayname":"Bob"}`, change: event.MemberRenamed},
		{name: "avatar only", content: `{"membership":"join","displayname":"Bob","avatar_url":"mxc://x/y"}`, prev: `{"membership":"join","displayname":"Bob"}`},
		{name: "rename known without prev_content", content: `{"membership":"join","displayname":"Robert"}`, known: true, knownName: "Bob", change: event.MemberRenamed, shown: "Robert"},
		{name: "same name known without prev_content", content: `{"membership":"join","displayname":"Bob"}`, known: true, knownName: "Bob"},
		{name: "leave", content: `{"membership":"leave"}`, prev: `{"membership":"join","displayname":"Bob"}`, change: event.MemberLeft, shown: "Bob"},
		{name: "ban", content: `{"membership":"ban","reason":"spam"}`, prev: `{"membership":"join","displayname":"Bob"}`, change: event.MemberLeft, shown: "Bob"},
		{name: "leave without prev_content", content: `{"membership":"leave"}`, change: event.MemberLeft},
		{name: "invite refused", content: `{"membership":"leave"}`, prev: `{"membership":"invite"}`},
		{name: "knock withdrawn", content: `{"membership":"leave"}`, prev: `{"membership":"knock"}`},
		{name: "ban after a leave", content: `{"membership":"ban"}`, prev: `{"membership":"leave"}`},
		{name: "invite", content: `{"membership":"invite","displayname":"Bob"}`},
		{name: "knock", content: `{"membership":"knock"}`},
		{name: "malformed prev_content", content: `{"membership":"join","displayname":"Bob"}`, prev: `{"membership":5}`, change: event.MemberJoined, shown: "Bob"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var evt mevent.Event
			if err := json.Unmarshal([]byte(memberChangeEvent("$m", testUser, teamRoom, testUser, c.content, c.prev)), &evt); err != nil {
				t.Fatal(err)
			}
			var content mevent.MemberEventContent
			if err := json.Unmarshal(evt.Content.VeryRaw, &content); err != nil {
				t.Fatal(err)
			}
			change, shown := memberChange(&evt, &content, c.known, c.knownName)
			if change != c.change || shown != c.shown {
				t.Errorf("memberChange = %v %q, want %v %q", change, shown, c.change, c.shown)
			}
		})
	}
}

func TestPortalMemberInbound(t *testing.T) {
	const (
		bob   = "@bob:localhost"
		carol = "@carol:localhost"
	)
	a, _, host, _ := portalAdapter(t, nil, teamAlias)
	status, code := putTxn(t, a, "t1", txnBody(
		memberChangeEvent("$j1", bob, teamRoom, bob, `{"membership":"join","displayname":"Bobby"}`, `{"membership":"invite"}`),
		memberChangeEvent("$r1", bob, teamRoom, bob, `{"membership":"join","displayname":"Robert"}`, `{"membership":"join","displayname":"Bobby"}`),
		memberChangeEvent("$a1", bob, teamRoom, bob, `{"membership":"join","displayname":"Robert","avatar_url":"mxc://localhost/a"}`, `{"membership":"join","displayname":"Robert"}`),
		memberChangeEvent("$i1", testUser, teamRoom, carol, `{"membership":"invite"}`, ""),
		memberChangeEvent("$j2", carol, teamRoom, carol, `{"membership":"join"}`, `{"membership":"invite"}`),
		memberChangeEvent("$k1", testUser, teamRoom, bob, `{"membership":"leave","reason":"too loud"}`, `{"membership":"join","displayname":"Robert"}`),
		memberChangeEvent("$b1", testUser, teamRoom, carol, `{"membership":"ban","reason":"spam"}`, `{"membership":"join"}`),
		memberChangeEvent("$b2", testUser, teamRoom, bob, `{"membership":"ban"}`, `{"membership":"leave"}`),
		memberChangeEvent("$g1", testGhost, teamRoom, testGhost, `{"membership":"join","displayname":"Ghost"}`, ""),
		memberChangeEvent("$g2", testGhost, teamRoom, testGhost, `{"membership":"leave"}`, `{"membership":"join","displayname":"Ghost"}`),
		memberChangeEvent("$p1", testBot, teamRoom, testBot, `{"membership":"join","displayname":"Parley"}`, `{"membership":"join"}`),
		memberChangeEvent("$o1", bob, "!other:localhost", bob, `{"membership":"join","displayname":"Bob"}`, ""),
		memberChangeEvent("$l1", bob, teamRoom, bob, `{"membership":"leave"}`, `{"membership":"invite"}`),
	))
	if status != http.StatusOK {
		t.Fatalf("transaction: %d %s", status, code)
	}
	room := event.Address{Network: event.Matrix, ID: teamAlias}
	from := func(u string) event.Address { return event.Address{Network: event.Matrix, ID: u} }
	want := []event.Member{
		{Header: event.Header{ID: "$j1", From: from(bob), To: room, Room: true, FromName: "Bobby"}, Change: event.MemberJoined, Name: "Bobby"},
		{Header: event.Header{ID: "$r1", From: from(bob), To: room, Room: true, FromName: "Robert"}, Change: event.MemberRenamed, Name: "Robert"},
		{Header: event.Header{ID: "$j2", From: from(carol), To: room, Room: true}, Change: event.MemberJoined, Name: "carol"},
		{Header: event.Header{ID: "$k1", From: from(bob), To: room, Room: true, FromName: "Robert"}, Change: event.MemberLeft, Reason: "too loud"},
		{Header: event.Header{ID: "$b1", From: from(carol), To: room, Room: true}, Change: event.MemberLeft, Reason: "spam"},
	}
	var got []*event.Member
	for _, e := range host.events() {
		if m, ok := e.(*event.Member); ok {
			got = append(got, m)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("dispatched %d membership changes, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		m := *got[i]
		if m.Time.IsZero() {
			t.Errorf("change %d has no time", i)
		}
		m.Time = w.Time
		if m != w {
			t.Errorf("change %d:\n got  %+v\n want %+v", i, m, w)
		}
	}
}

func TestPortalMemberInboundNotBridged(t *testing.T) {
	a, _, host, _ := portalAdapter(t, nil, teamAlias)
	host.setDispatchErr(func(evt event.Event) error {
		switch evt.Head().ID {
		case "$refused":
			return bridges.ErrRefused
		case "$noroute":
			return bridges.ErrNoRoute
		case "$storage":
			return errStorage
		}
		return nil
	})
	join := `{"membership":"join","displayname":"Bob"}`
	if status, _ := putTxn(t, a, "t1", txnBody(
		memberChangeEvent("$refused", "@bob:localhost", teamRoom, "@bob:localhost", join, ""),
		memberChangeEvent("$noroute", "@carol:localhost", teamRoom, "@carol:localhost", join, ""),
	)); status != http.StatusOK {
		t.Errorf("transaction with changes not bridged: %d, want 200", status)
	}
	if status, _ := putTxn(t, a, "t2", txnBody(memberChangeEvent("$storage", "@dan:localhost", teamRoom, "@dan:localhost", join, ""))); status != http.StatusInternalServerError {
		t.Errorf("transaction with a storage error: %d, want 500", status)
	}
	// Sent again, the join is still a join: the name was not learnt.
	host.setDispatchErr(nil)
	if status, _ := putTxn(t, a, "t2", txnBody(memberChangeEvent("$storage", "@dan:localhost", teamRoom, "@dan:localhost", join, ""))); status != http.StatusOK {
		t.Fatalf("transaction sent again: %d", status)
	}
	if evts := host.events(); len(evts) != 1 || evts[0].(*event.Member).Change != event.MemberJoined {
		t.Errorf("dispatched %+v", evts)
	}
}

// ghostMember is a membership change of a ghost in a portal room.
func ghostMember(srcID, ghost, room string, change event.MemberChange, name string) *event.Member {
	return &event.Member{Header: event.Header{
		ID:       srcID,
		From:     event.Address{Network: event.Matrix, ID: ghost},
		To:       event.Address{Network: event.Matrix, ID: room},
		FromName: "Bob",
		Room:     true,
	}, Change: change, Name: name}
}

// requestLines returns hs's requests as "METHOD path as user_id" lines.
func requestLines(hs *fakeHS) string {
	var lines []string
	for _, r := range hs.requests() {
		lines = append(lines, r.Method+" "+r.Path+" as "+r.Query["user_id"])
	}
	return strings.Join(lines, "\n")
}

func TestPortalMemberSend(t *testing.T) {
	a, hs, _, _ := portalAdapter(t, nil, teamAlias)
	ctx := context.Background()
	const (
		v3    = "/_matrix/client/v3/"
		state = v3 + "rooms/" + teamRoom + "/state/m.room.member/" + testGhost
	)
	step := func(name string, m *event.Member, want ...string) {
		t.Helper()
		hs.reset()
		if _, err := a.Send(ctx, m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := requestLines(hs); got != strings.Join(want, "\n") {
			t.Errorf("%s: requests:\n%s\nwant:\n%s", name, got, strings.Join(want, "\n"))
		}
	}
	profile := func() (string, bool) {
		hs.mu.Lock()
		defer hs.mu.Unlock()
		name, ok := hs.profiles[teamRoom][testGhost]
		return name, ok
	}

	joined := ghostMember("x-j1", testGhost, teamAlias, event.MemberJoined, "Bob (xmpp)")
	step("join", joined,
		"GET "+state+" as "+testBot,
		"POST "+v3+"register as ",
		"PUT "+v3+"profile/"+testGhost+"/displayname as "+testGhost,
		"POST "+v3+"join/"+teamRoom+" as "+testGhost,
		"GET "+state+" as "+testBot,
		"PUT "+state+" as "+testGhost,
	)
	if name, _ := profile(); !hs.isMember(teamRoom, testGhost) || name != "Bob (xmpp)" {
		t.Errorf("after the join: member %v, name %q", hs.isMember(teamRoom, testGhost), name)
	}
	step("join again", joined)
	renamed := ghostMember("x-r1", testGhost, teamAlias, event.MemberRenamed, "Robert")
	step("rename", renamed, "GET "+state+" as "+testBot, "PUT "+state+" as "+testGhost)
	if name, _ := profile(); name != "Robert" {
		t.Errorf("after the rename: name %q", name)
	}
	step("rename again", renamed)
	step("join once renamed", ghostMember("x-j2", testGhost, teamAlias, event.MemberJoined, "Robert"))

	left := ghostMember("x-l1", testGhost, teamAlias, event.MemberLeft, "")
	left.Reason = "gone home"
	step("leave", left, "POST "+v3+"rooms/"+teamRoom+"/leave as "+testGhost)
	if hs.isMember(teamRoom, testGhost) {
		t.Error("the ghost is still in the room")
	}
	if reqs := hs.requests(); len(reqs) != 1 || reqs[0].Body["reason"] != "gone home" {
		t.Errorf("leave request %+v", reqs)
	}
	step("leave again", left, "GET "+state+" as "+testBot)
	step("rename once left", renamed, "GET "+state+" as "+testBot)

	// Joined again with its global name: the join shows it already (and
	// the ghost is registered and named already).
	step("join with the global name", ghostMember("x-j3", testGhost, teamAlias, event.MemberJoined, "Bob"),
		"GET "+state+" as "+testBot,
		"POST "+v3+"join/"+teamRoom+" as "+testGhost,
		"GET "+state+" as "+testBot,
	)
}

func TestPortalMemberSendAfterRestart(t *testing.T) {
	// The ghost is in the room, named there, from an earlier run: nothing
	// is sent again, and it is not joined again (a join would show its
	// global name).
	a, hs, _, _ := portalAdapter(t, func(hs *fakeHS) {
		hs.members[teamRoom] = append(hs.members[teamRoom], testGhost)
		hs.profiles[teamRoom] = map[string]string{testGhost: "Bob (xmpp)"}
	}, teamAlias)
	if _, err := a.Send(context.Background(), ghostMember("x-j1", testGhost, teamAlias, event.MemberJoined, "Bob (xmpp)")); err != nil {
		t.Fatal(err)
	}
	want := "GET /_matrix/client/v3/rooms/" + teamRoom + "/state/m.room.member/" + testGhost + " as " + testBot
	if got := requestLines(hs); got != want {
		t.Errorf("requests:\n%s\nwant:\n%s", got, want)
	}
	// A member event of the ghost seen in a transaction is known too.
	hs.reset()
	if status, _ := putTxn(t, a, "t1", txnBody(memberChangeEvent("$g", testGhost, teamRoom, testGhost, `{"membership":"join","displayname":"Robert"}`, ""))); status != http.StatusOK {
		t.Fatal("transaction refused")
	}
	if _, err := a.Send(context.Background(), ghostMember("x-r1", testGhost, teamAlias, event.MemberRenamed, "Robert")); err != nil {
		t.Fatal(err)
	}
	if got := requestLines(hs); got != "" {
		t.Errorf("requests for a name the room shows already:\n%s", got)
	}
}

func TestPortalMemberSendGhostRemovedUnseen(t *testing.T) {
	a, hs, _, _ := portalAdapter(t, nil, teamAlias)
	ctx := context.Background()
	const (
		v3    = "/_matrix/client/v3/"
		state = v3 + "rooms/" + teamRoom + "/state/m.room.member/" + testGhost
	)
	if _, err := a.Send(ctx, ghostMember("x-j1", testGhost, teamAlias, event.MemberJoined, "Bob")); err != nil {
		t.Fatal(err)
	}
	// Kicked, and the transaction that tells has not come yet.
	hs.mu.Lock()
	hs.members[teamRoom] = []string{testUser, testBot}
	delete(hs.profiles[teamRoom], testGhost)
	hs.left[teamRoom] = map[string]bool{testGhost: true}
	hs.mu.Unlock()

	hs.reset()
	if _, err := a.Send(ctx, ghostMember("x-r1", testGhost, teamAlias, event.MemberRenamed, "Robert")); err != nil {
		t.Fatal(err)
	}
	if got, want := requestLines(hs), "GET "+state+" as "+testBot; got != want {
		t.Errorf("rename of a ghost removed: requests:\n%s\nwant:\n%s", got, want)
	}
	if hs.isMember(teamRoom, testGhost) {
		t.Error("a rename brought the ghost back")
	}
	hs.reset()
	if _, err := a.Send(ctx, ghostMember("x-j2", testGhost, teamAlias, event.MemberJoined, "Robert")); err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"GET " + state + " as " + testBot,
		"POST " + v3 + "join/" + teamRoom + " as " + testGhost,
		"GET " + state + " as " + testBot,
		"PUT " + state + " as " + testGhost,
	}, "\n")
	if got := requestLines(hs); got != want {
		t.Errorf("join of a ghost removed: requests:\n%s\nwant:\n%s", got, want)
	}
	if !hs.isMember(teamRoom, testGhost) {
		t.Error("the ghost did not join again")
	}
}

func TestPortalPostAfterRestartKeepsRoomName(t *testing.T) {
	// The ghost is in the room from an earlier run, with a name of its own
	// there: its first post does not join it again (which would show its
	// global name instead).
	a, hs, _, _ := portalAdapter(t, func(hs *fakeHS) {
		hs.members[teamRoom] = append(hs.members[teamRoom], testGhost)
		hs.profiles[teamRoom] = map[string]string{testGhost: "Bob (lobby)"}
	}, teamAlias)
	if _, err := a.Send(context.Background(), roomMessage("r1", testGhost, "Bob", teamAlias, "hi")); err != nil {
		t.Fatal(err)
	}
	for _, r := range hs.requests() {
		if strings.Contains(r.Path, "/join") {
			t.Errorf("the ghost joined again: %v", r)
		}
	}
	if n := len(hs.roomEvents(teamRoom)); n != 1 {
		t.Errorf("%d events in the room, want the post", n)
	}
}

func TestPortalMemberSendErrors(t *testing.T) {
	a, hs, _, _ := portalAdapter(t, nil, teamAlias)
	ctx := context.Background()
	notRoom := ghostMember("r", testGhost, teamAlias, event.MemberJoined, "Bob")
	notRoom.Room = false
	for name, m := range map[string]*event.Member{
		"not a portal":     ghostMember("r", testGhost, "#other:localhost", event.MemberJoined, "Bob"),
		"the bot":          ghostMember("r", testBot, teamAlias, event.MemberJoined, "Bot"),
		"a real user":      ghostMember("r", testUser, teamAlias, event.MemberJoined, "Alice"),
		"not in a room":    notRoom,
		"no change":        ghostMember("r", testGhost, teamAlias, 0, "Bob"),
		"other network":    {Header: event.Header{ID: "r", From: event.Address{Network: event.XMPP, ID: "a@b"}, To: event.Address{Network: event.Matrix, ID: teamAlias}, Room: true}, Change: event.MemberJoined},
		"change not known": ghostMember("r", testGhost, teamAlias, 9, "Bob"),
	} {
		if _, err := a.Send(ctx, m); !bridges.IsPermanent(err) {
			t.Errorf("%s: %v, want a permanent error", name, err)
		}
	}

	// The homeserver down: the change is tried again.
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		return http.StatusBadGateway, `{"errcode":"M_UNKNOWN","error":"down"}`, true
	})
	if _, err := a.Send(ctx, ghostMember("r", testGhost, teamAlias, event.MemberJoined, "Bob")); err == nil || bridges.IsPermanent(err) {
		t.Errorf("join with the homeserver down: %v, want a retryable error", err)
	}
	hs.setOverride(nil)
	if _, err := a.Send(ctx, ghostMember("r", testGhost, teamAlias, event.MemberJoined, "Bob")); err != nil {
		t.Errorf("join once the homeserver is back: %v", err)
	}
}

// FuzzMemberChange feeds member events, content and prev_content from the
// homeserver, to memberChange: it never fails, and what it finds is a
// change the content can stand for.
func FuzzMemberChange(f *testing.F) {
	f.Add(`{"membership":"join","displayname":"Bob"}`, `{"membership":"invite"}`)
	f.Add(`{"membership":"join","displayname":"Robert"}`, `{"membership":"join","displayname":"Bob"}`)
	f.Add(`{"membership":"ban","reason":"spam"}`, `{"membership":"join"}`)
	f.Add(`{"membership":"leave"}`, `{"membership":5}`)
	f.Add(`{"membership":"knock"}`, `null`)
	f.Fuzz(func(t *testing.T, content, prev string) {
		var evt mevent.Event
		if json.Unmarshal([]byte(memberChangeEvent("$m", testUser, teamRoom, testUser, content, prev)), &evt) != nil {
			return
		}
		var c mevent.MemberEventContent
		if json.Unmarshal(evt.Content.VeryRaw, &c) != nil {
			return
		}
		for _, known := range []bool{false, true} {
			change, _ := memberChange(&evt, &c, known, "Bob")
			switch {
			case change == 0:
			case !change.Valid():
				t.Fatalf("change %v", change)
			case change == event.MemberLeft && c.Membership != mevent.MembershipLeave && c.Membership != mevent.MembershipBan:
				t.Fatalf("left with membership %q", c.Membership)
			case change != event.MemberLeft && c.Membership != mevent.MembershipJoin:
				t.Fatalf("%v with membership %q", change, c.Membership)
			}
		}
	})
}
