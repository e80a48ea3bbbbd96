package matrix

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// fakeRoomHost is a fakeHost that carries rooms (bridges.RoomHost) and
// records the addresses said reachable again.
type fakeRoomHost struct {
	*fakeHost
	rooms     []event.Address
	mu        sync.Mutex
	reachable []event.Address
}

func newFakeRoomHost(rooms ...string) *fakeRoomHost {
	h := &fakeRoomHost{fakeHost: newFakeHost()}
	for _, r := range rooms {
		h.rooms = append(h.rooms, event.Address{Network: event.Matrix, ID: r})
	}
	return h
}

func (h *fakeRoomHost) Rooms(n event.Network) []event.Address {
	if n != event.Matrix {
		return nil
	}
	return h.rooms
}

func (h *fakeRoomHost) Reachable(a event.Address) {
	h.mu.Lock()
	h.reachable = append(h.reachable, a)
	h.mu.Unlock()
}

func (h *fakeRoomHost) wasReachable(a event.Address) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.reachable {
		if r == a {
			return true
		}
	}
	return false
}

var _ bridges.RoomHost = (*fakeRoomHost)(nil)

// logBuffer keeps what an adapter logs, for tests that check a warning.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the logged lines that contain every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		ok := l != ""
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

const (
	testBot   = "@parley:localhost"
	teamAlias = "#team:localhost"
	teamRoom  = "!team:localhost"
)

// portalAdapter starts an adapter with a host carrying rooms, against a
// fake homeserver where #team:localhost is the public room !team:localhost,
// waits until the bot joined what it could, and clears the requests.
func portalAdapter(t *testing.T, setup func(hs *fakeHS), rooms ...string) (*Adapter, *fakeHS, *fakeRoomHost, *logBuffer) {
	t.Helper()
	hs := newFakeHS(t, "as-secret")
	hs.aliases[teamAlias] = teamRoom
	hs.members[teamRoom] = []string{testUser}
	if setup != nil {
		setup(hs)
	}
	host := newFakeRoomHost(rooms...)
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := newTestAdapter(t, hs, host, log)
	host.waitState(t, bridges.Connected)
	waitFor(t, "the joins at start", func() bool {
		a.portals.mu.Lock()
		defer a.portals.mu.Unlock()
		return len(a.portals.botIn)+len(a.portals.refused)+len(a.portals.unknown) >= len(rooms)
	})
	hs.reset()
	return a, hs, host, logs
}

func TestPortalBotJoinsAtStart(t *testing.T) {
	a, hs, host, logs := portalAdapter(t, func(hs *fakeHS) {
		hs.members["!open:localhost"] = []string{testUser}
		hs.aliases["#closed:localhost"] = "!closed:localhost"
		hs.members["!closed:localhost"] = []string{testUser}
		hs.closed["!closed:localhost"] = true
	}, teamAlias, "!open:localhost", "#closed:localhost", "#missing:localhost")

	for _, room := range []string{teamRoom, "!open:localhost"} {
		if !hs.isMember(room, testBot) {
			t.Errorf("the bot is not in %s", room)
		}
	}
	if hs.isMember("!closed:localhost", testBot) {
		t.Error("the bot is in the invite-only room")
	}
	if v, _ := host.links.Value("portal:" + teamAlias); v != teamRoom {
		t.Errorf("link portal:%s = %q", teamAlias, v)
	}
	if w := logs.lines("level=WARN", "room=#closed:localhost", "invite the bot"); len(w) != 1 {
		t.Errorf("warnings about the invite-only room: %q", w)
	}
	if w := logs.lines("level=WARN", "room=#missing:localhost", "alias unknown"); len(w) != 1 {
		t.Errorf("warnings about the missing alias: %q", w)
	}
	if name, ok := a.portalOf(teamRoom); !ok || name != teamAlias {
		t.Errorf("portalOf(%s) = %q, %v", teamRoom, name, ok)
	}
	if _, ok := a.portalOf("!closed:localhost"); !ok {
		t.Error("the invite-only room's id is not known")
	}

	// A post for the invite-only room fails, to be tried again, and does
	// not warn again.
	_, err := a.Send(context.Background(), roomMessage("x-1", testGhost, "Bob", "#closed:localhost", "hi"))
	if err == nil || bridges.IsPermanent(err) || !errors.Is(err, errPortalClosed) {
		t.Errorf("Send to the invite-only room: %v, want a retryable errPortalClosed", err)
	}
	if w := logs.lines("level=WARN", "room=#closed:localhost", "invite the bot"); len(w) != 1 {
		t.Errorf("warnings about the invite-only room: %q", w)
	}

	// The user invites the bot: it joins, and posts waiting for the room
	// are tried again at once.
	hs.mu.Lock()
	hs.invited["!closed:localhost"] = []string{testBot}
	hs.mu.Unlock()
	if status, code := putTxn(t, a, "inv1", txnBody(memberEvent("$inv", testUser, "!closed:localhost", testBot, "invite", false))); status != http.StatusOK {
		t.Fatalf("invite: %d %s", status, code)
	}
	if !hs.isMember("!closed:localhost", testBot) {
		t.Error("the bot did not join the room it was invited to")
	}
	if !host.wasReachable(event.Address{Network: event.Matrix, ID: "#closed:localhost"}) {
		t.Error("the room was not said reachable")
	}
	if _, err := a.Send(context.Background(), roomMessage("x-1", testGhost, "Bob", "#closed:localhost", "hi")); err != nil {
		t.Errorf("Send once the bot is in: %v", err)
	}
	if !hs.isMember("!closed:localhost", testGhost) {
		t.Error("the ghost is not in the invite-only room")
	}

	// The alias is created later, and the bot invited there: the alias is
	// resolved again and the bot joins.
	hs.mu.Lock()
	hs.aliases["#missing:localhost"] = "!late:localhost"
	hs.members["!late:localhost"] = []string{testUser}
	hs.mu.Unlock()
	if status, code := putTxn(t, a, "inv2", txnBody(memberEvent("$inv2", testUser, "!late:localhost", testBot, "invite", false))); status != http.StatusOK {
		t.Fatalf("invite: %d %s", status, code)
	}
	if !hs.isMember("!late:localhost", testBot) {
		t.Error("the bot did not join the room of the alias created later")
	}
}

// roomMessage is a post for a portal room from a ghost.
func roomMessage(srcID, ghost, name, room, body string) *event.Message {
	return &event.Message{Header: event.Header{
		ID:       srcID,
		From:     event.Address{Network: event.Matrix, ID: ghost},
		To:       event.Address{Network: event.Matrix, ID: room},
		FromName: name,
		Room:     true,
	}, Body: body}
}

func TestPortalBotRetriesLater(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	hs.aliases["#closed:localhost"] = "!closed:localhost"
	hs.members["!closed:localhost"] = []string{testUser}
	hs.closed["!closed:localhost"] = true
	host := newFakeRoomHost("#closed:localhost")
	a, err := New(testConfig(hs.URL), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	a.cfg.Listen = "127.0.0.1:0"
	a.portalWait = 20 * time.Millisecond
	if err := a.Start(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	waitFor(t, "a refused join", func() bool {
		a.portals.mu.Lock()
		defer a.portals.mu.Unlock()
		return len(a.portals.refused) == 1
	})
	// The admin makes the room public: the bot joins on its next try.
	hs.mu.Lock()
	hs.closed["!closed:localhost"] = false
	hs.mu.Unlock()
	waitFor(t, "the bot joins", func() bool { return hs.isMember("!closed:localhost", testBot) })
}

func TestPortalInbound(t *testing.T) {
	const (
		bob   = "@bob:localhost"
		other = "!other:localhost"
	)
	a, hs, host, _ := portalAdapter(t, func(hs *fakeHS) {
		hs.profiles[teamRoom] = map[string]string{bob: "Bobby"}
	}, teamAlias)
	host.links.Set("room:"+testRoom, testGhost+"|"+testUser)

	emote := `{"type":"m.room.message","event_id":"$e3","sender":"@alice:localhost","room_id":"!team:localhost","origin_server_ts":1700000000000,` +
		`"content":{"msgtype":"m.emote","body":"waves","format":"org.matrix.custom.html","formatted_body":"<b>waves</b>"}}`
	status, code := putTxn(t, a, "t1", txnBody(
		memberEvent("$m1", testUser, teamRoom, testUser, "join", false),
		textEvent("$e1", testUser, teamRoom, "hello room"),
		textEvent("$e2", bob, teamRoom, "hi"),
		emote,
		textEvent("$g1", testGhost, teamRoom, "echo of a ghost"),
		textEvent("$b1", testBot, teamRoom, "the bot"),
		textEvent("$o1", testUser, other, "not a portal"),
		textEvent("$d1", testUser, testRoom, "in the dm"),
	))
	if status != http.StatusOK {
		t.Fatalf("transaction: %d %s", status, code)
	}
	// Alice's member event has no displayname: FromName is "" (the core
	// names her by her address). Bob's comes from the room's state.
	room := event.Address{Network: event.Matrix, ID: teamAlias}
	want := []event.Message{
		{Header: event.Header{ID: "$e1", From: event.Address{Network: event.Matrix, ID: testUser}, To: room, Room: true}, Body: "hello room"},
		{Header: event.Header{ID: "$e2", From: event.Address{Network: event.Matrix, ID: bob}, To: room, Room: true, FromName: "Bobby"}, Body: "hi"},
		{Header: event.Header{ID: "$e3", From: event.Address{Network: event.Matrix, ID: testUser}, To: room, Room: true}, Body: "/me waves", HTML: "/me <b>waves</b>"},
		{Header: event.Header{ID: "$d1", From: event.Address{Network: event.Matrix, ID: testUser}, To: event.Address{Network: event.Matrix, ID: testGhost}}, Body: "in the dm"},
	}
	got := host.events()
	var msgs []*event.Message
	for _, e := range got {
		if m, ok := e.(*event.Message); ok {
			msgs = append(msgs, m)
		}
	}
	if len(msgs) != len(want) {
		t.Fatalf("dispatched %d messages, want %d: %+v", len(msgs), len(want), msgs)
	}
	for i, w := range want {
		m := *msgs[i]
		m.Time = w.Time
		if m.Header != w.Header || m.Body != w.Body || m.HTML != w.HTML {
			t.Errorf("message %d:\n got  %+v\n want %+v", i, m, w)
		}
	}

	// A display name set later is used.
	hs.reset()
	named := `{"type":"m.room.member","event_id":"$m2","sender":"@alice:localhost","room_id":"!team:localhost","state_key":"@alice:localhost",` +
		`"origin_server_ts":1700000000000,"content":{"membership":"join","displayname":"Alice A."}}`
	if status, code := putTxn(t, a, "t2", txnBody(named, textEvent("$e4", testUser, teamRoom, "named"))); status != http.StatusOK {
		t.Fatalf("transaction: %d %s", status, code)
	}
	if m := waitDispatched(t, host.fakeHost, "$e4"); m.FromName != "Alice A." {
		t.Errorf("FromName = %q", m.FromName)
	}
	if reqs := hs.requests(); len(reqs) != 0 {
		t.Errorf("requests for a known display name: %v", reqs)
	}
}

func TestPortalInboundNotDelivered(t *testing.T) {
	a, hs, host, _ := portalAdapter(t, nil, teamAlias)
	host.setDispatchErr(func(evt event.Event) error {
		if evt.Head().ID == "$refused" {
			return bridges.ErrRefused
		}
		if evt.Head().ID == "$noroute" {
			return bridges.ErrNoRoute
		}
		if evt.Head().ID == "$storage" {
			return errStorage
		}
		return nil
	})
	image := `{"type":"m.room.message","event_id":"$img","sender":"@alice:localhost","room_id":"!team:localhost","origin_server_ts":1700000000000,` +
		`"content":{"msgtype":"m.image","body":"cat.png","url":"mxc://localhost/cat"}}`
	status, _ := putTxn(t, a, "t1", txnBody(textEvent("$refused", testUser, teamRoom, "x"), image, textEvent("$noroute", testUser, teamRoom, "y")))
	if status != http.StatusOK {
		t.Fatalf("transaction: %d", status)
	}
	notices := hs.roomEvents(teamRoom)
	if len(notices) != 2 {
		t.Fatalf("notices in the room: %+v", notices)
	}
	for _, n := range notices {
		body, _ := n.Content["body"].(string)
		if n.Sender != testBot || n.Content["msgtype"] != "m.notice" || !strings.HasPrefix(body, testUser+": Your message could not be delivered") {
			t.Errorf("notice %+v", n)
		}
	}
	// A storage error: the homeserver must send the transaction again.
	if status, _ := putTxn(t, a, "t2", txnBody(textEvent("$storage", testUser, teamRoom, "z"))); status != http.StatusInternalServerError {
		t.Errorf("transaction with a storage error: %d, want 500", status)
	}
}

func TestPortalSend(t *testing.T) {
	a, hs, host, _ := portalAdapter(t, nil, teamAlias)
	ctx := context.Background()
	msg := roomMessage("xmpp-r1", testGhost, "Bob", teamAlias, "hello *room*")
	msg.HTML = "hello <em>room</em>"

	got, err := a.Send(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	send := "/_matrix/client/v3/rooms/" + teamRoom + "/send/m.room.message/" + txnID("xmpp-r1")
	var paths []string
	for _, r := range hs.requests() {
		paths = append(paths, r.Method+" "+r.Path+" as "+r.Query["user_id"])
	}
	wantPaths := []string{
		"POST /_matrix/client/v3/register as ",
		"PUT /_matrix/client/v3/profile/" + testGhost + "/displayname as " + testGhost,
		"GET /_matrix/client/v3/rooms/" + teamRoom + "/state/m.room.member/" + testGhost + " as " + testBot,
		"POST /_matrix/client/v3/join/" + teamRoom + " as " + testGhost,
		"PUT " + send + " as " + testGhost,
	}
	if strings.Join(paths, "\n") != strings.Join(wantPaths, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(paths, "\n"), strings.Join(wantPaths, "\n"))
	}
	evts := hs.roomEvents(teamRoom)
	if len(evts) != 1 || evts[0].ID != got || evts[0].Sender != testGhost || evts[0].Content["body"] != "hello *room*" ||
		evts[0].Content["formatted_body"] != "hello <em>room</em>" || evts[0].Content[sourceKey] != txnID("xmpp-r1") {
		t.Errorf("room events %+v, Send() = %q", evts, got)
	}
	if v, _ := host.links.Value("name:" + testGhost); v != "Bob" {
		t.Errorf("display name link %q", v)
	}

	// The next post of the same ghost goes straight to the room; a resend
	// reuses the transaction ID; another ghost joins first.
	hs.reset()
	if _, err := a.Send(ctx, roomMessage("xmpp-r2", testGhost, "Bob", teamAlias, "second")); err != nil {
		t.Fatal(err)
	}
	if again, err := a.Send(ctx, msg); err != nil || again != got {
		t.Errorf("resend = %q, %v; want %q", again, err, got)
	}
	if _, err := a.Send(ctx, roomMessage("xmpp-r3", testGhost2, "Carol", teamAlias, "third")); err != nil {
		t.Fatal(err)
	}
	paths = nil
	for _, r := range hs.requests() {
		paths = append(paths, r.Method+" "+r.Path+" as "+r.Query["user_id"])
	}
	wantPaths = []string{
		"PUT /_matrix/client/v3/rooms/" + teamRoom + "/send/m.room.message/" + txnID("xmpp-r2") + " as " + testGhost,
		"PUT " + send + " as " + testGhost,
		"POST /_matrix/client/v3/register as ",
		"PUT /_matrix/client/v3/profile/" + testGhost2 + "/displayname as " + testGhost2,
		"GET /_matrix/client/v3/rooms/" + teamRoom + "/state/m.room.member/" + testGhost2 + " as " + testBot,
		"POST /_matrix/client/v3/join/" + teamRoom + " as " + testGhost2,
		"PUT /_matrix/client/v3/rooms/" + teamRoom + "/send/m.room.message/" + txnID("xmpp-r3") + " as " + testGhost2,
	}
	if strings.Join(paths, "\n") != strings.Join(wantPaths, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(paths, "\n"), strings.Join(wantPaths, "\n"))
	}
	if n := len(hs.roomEvents(teamRoom)); n != 3 {
		t.Errorf("%d events in the room, want 3", n)
	}

	// A retry after a homeserver that forgot the transaction ID finds the
	// earlier event by its mark instead of posting it twice.
	hs.forgetTransactions()
	again, err := a.Send(bridges.WithAttempt(ctx, bridges.Attempt{Retry: 1}), msg)
	if err != nil || again != got {
		t.Errorf("retry = %q, %v; want %q", again, err, got)
	}
	if n := len(hs.roomEvents(teamRoom)); n != 3 {
		t.Errorf("%d events in the room after the retry, want 3", n)
	}
}

func TestPortalSendInviteOnly(t *testing.T) {
	// The room refuses ghosts, but the bot is in it: it invites the ghost.
	a, hs, _, _ := portalAdapter(t, func(hs *fakeHS) { hs.closed[teamRoom] = true; hs.invited[teamRoom] = []string{testBot} }, teamAlias)
	if _, err := a.Send(context.Background(), roomMessage("xmpp-r1", testGhost, "Bob", teamAlias, "hi")); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, r := range hs.requests() {
		paths = append(paths, r.Method+" "+r.Path+" as "+r.Query["user_id"])
	}
	want := []string{
		"POST /_matrix/client/v3/register as ",
		"PUT /_matrix/client/v3/profile/" + testGhost + "/displayname as " + testGhost,
		"GET /_matrix/client/v3/rooms/" + teamRoom + "/state/m.room.member/" + testGhost + " as " + testBot,
		"POST /_matrix/client/v3/join/" + teamRoom + " as " + testGhost,
		"POST /_matrix/client/v3/rooms/" + teamRoom + "/invite as " + testBot,
		"POST /_matrix/client/v3/join/" + teamRoom + " as " + testGhost,
		"PUT /_matrix/client/v3/rooms/" + teamRoom + "/send/m.room.message/" + txnID("xmpp-r1") + " as " + testGhost,
	}
	if strings.Join(paths, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(paths, "\n"), strings.Join(want, "\n"))
	}
}

func TestPortalSendGhostRemoved(t *testing.T) {
	a, hs, _, _ := portalAdapter(t, nil, teamAlias)
	ctx := context.Background()
	if _, err := a.Send(ctx, roomMessage("r1", testGhost, "Bob", teamAlias, "one")); err != nil {
		t.Fatal(err)
	}
	// Kicked, as seen in a transaction: the next post joins again.
	hs.kick(teamRoom, testGhost)
	if status, _ := putTxn(t, a, "k1", txnBody(memberEvent("$k", testUser, teamRoom, testGhost, "leave", false))); status != http.StatusOK {
		t.Fatal("transaction refused")
	}
	hs.reset()
	if _, err := a.Send(ctx, roomMessage("r2", testGhost, "Bob", teamAlias, "two")); err != nil {
		t.Fatal(err)
	}
	if reqs := hs.requests(); len(reqs) != 3 || !strings.HasSuffix(reqs[1].Path, "/join/"+teamRoom) {
		t.Errorf("requests %v", reqs)
	}

	// Joined, but the room's power levels let it not post: final.
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if r.Method == http.MethodPut && strings.Contains(r.Path, "/send/") {
			return http.StatusForbidden, `{"errcode":"M_FORBIDDEN","error":"user_level (0) < send_level (50)"}`, true
		}
		return 0, "", false
	})
	if _, err := a.Send(ctx, roomMessage("r3", testGhost, "Bob", teamAlias, "three")); !bridges.IsPermanent(err) {
		t.Errorf("send refused to a member: %v, want a permanent error", err)
	}
	// Kicked unseen: the send is refused, the error is retried, and the
	// next try joins again.
	hs.kick(teamRoom, testGhost)
	if _, err := a.Send(ctx, roomMessage("r3", testGhost, "Bob", teamAlias, "three")); err == nil || bridges.IsPermanent(err) {
		t.Errorf("refused send: %v, want a retryable error", err)
	}
	hs.setOverride(nil)
	hs.reset()
	if _, err := a.Send(ctx, roomMessage("r3", testGhost, "Bob", teamAlias, "three")); err != nil {
		t.Fatal(err)
	}
	if reqs := hs.requests(); len(reqs) != 3 || !strings.HasSuffix(reqs[1].Path, "/join/"+teamRoom) {
		t.Errorf("requests %v", reqs)
	}
}

func TestPortalSendRefused(t *testing.T) {
	a, _, _, _ := portalAdapter(t, nil, teamAlias)
	ctx := context.Background()
	for name, msg := range map[string]*event.Message{
		"not a portal":     roomMessage("r", testGhost, "Bob", "#other:localhost", "x"),
		"from the bot":     roomMessage("r", testBot, "Bot", teamAlias, "x"),
		"from a real user": roomMessage("r", testUser, "Alice", teamAlias, "x"),
		"other network":    {Header: event.Header{ID: "r", From: event.Address{Network: event.XMPP, ID: "a@b"}, To: event.Address{Network: event.Matrix, ID: teamAlias}, Room: true}},
	} {
		if _, err := a.Send(ctx, msg); !bridges.IsPermanent(err) {
			t.Errorf("%s: %v, want a permanent error", name, err)
		}
	}
}

func TestPortalFailureNotice(t *testing.T) {
	a, hs, _, _ := portalAdapter(t, nil, teamAlias)
	f := &event.Failure{Header: event.Header{
		ID:   "failure/$e1",
		From: event.Address{Network: event.Matrix, ID: teamAlias},
		To:   event.Address{Network: event.Matrix, ID: testUser},
	}, EventID: "$e1", Reason: "the room refused it"}
	if _, err := a.Send(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	evts := hs.roomEvents(teamRoom)
	if len(evts) != 1 || evts[0].Sender != testBot || evts[0].Content["msgtype"] != "m.notice" ||
		evts[0].Content["body"] != testUser+": Your message could not be delivered: the room refused it" {
		t.Errorf("room events %+v", evts)
	}
}

func TestNoPortalsWithoutRoomHost(t *testing.T) {
	a, _, host := connectedAdapter(t)
	if names := a.portalNames(); names != nil {
		t.Errorf("portalNames() = %v", names)
	}
	if status, _ := putTxn(t, a, "t1", txnBody(textEvent("$e1", testUser, teamRoom, "x"))); status != http.StatusOK {
		t.Fatal("transaction refused")
	}
	if evts := host.events(); len(evts) != 0 {
		t.Errorf("dispatched %v", evts)
	}
}

func TestPortalKnownAfterRestart(t *testing.T) {
	// An earlier run resolved the alias; now the homeserver cannot answer
	// the directory, yet pushes an event of the room: it is recognised.
	hs := newFakeHS(t, "as-secret")
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if strings.Contains(r.Path, "/directory/room/") || strings.Contains(r.Path, "/join/") {
			return http.StatusBadGateway, `{"errcode":"M_UNKNOWN","error":"try later"}`, true
		}
		return 0, "", false
	})
	host := newFakeRoomHost(teamAlias)
	host.links.Set("portal:"+teamAlias, teamRoom)
	a := newTestAdapter(t, hs, host)
	if status, _ := putTxn(t, a, "t1", txnBody(textEvent("$e1", testUser, teamRoom, "early"))); status != http.StatusOK {
		t.Fatal("transaction refused")
	}
	m := waitDispatched(t, host.fakeHost, "$e1")
	if m.To != (event.Address{Network: event.Matrix, ID: teamAlias}) || !m.Room {
		t.Errorf("dispatched %+v", m)
	}
}

func TestPortalBotKickedJoinsAgain(t *testing.T) {
	a, hs, _, _ := portalAdapter(t, nil, teamAlias)
	hs.mu.Lock()
	hs.members[teamRoom] = []string{testUser}
	hs.mu.Unlock()
	if status, _ := putTxn(t, a, "k1", txnBody(memberEvent("$k", testUser, teamRoom, testBot, "leave", false))); status != http.StatusOK {
		t.Fatal("transaction refused")
	}
	waitFor(t, "the bot joins again", func() bool { return hs.isMember(teamRoom, testBot) })
}
