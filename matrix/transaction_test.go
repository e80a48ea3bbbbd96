package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
)

const (
	testUser = "@alice:localhost"
	testRoom = "!dm:localhost"
)

// call sends a request to the adapter's appservice listener. auth is
// "bearer:<token>", "query:<token>", a raw Authorization header, or "" for
// none. It returns the status and the errcode of the answer.
func call(t *testing.T, a *Adapter, method, path, auth, body string) (int, string) {
	t.Helper()
	u := "http://" + a.listenAddr().String() + path
	var hdr string
	switch {
	case strings.HasPrefix(auth, "bearer:"):
		hdr = "Bearer " + strings.TrimPrefix(auth, "bearer:")
	case strings.HasPrefix(auth, "query:"):
		u += "?access_token=" + url.QueryEscape(strings.TrimPrefix(auth, "query:"))
	default:
		hdr = auth
	}
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if hdr != "" {
		req.Header.Set("Authorization", hdr)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		ErrCode string `json:"errcode"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Errorf("%s %s: answer %q is not JSON: %v", method, path, b, err)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, e.ErrCode
}

const hsAuth = "bearer:hs-secret"

func putTxn(t *testing.T, a *Adapter, txn, body string) (int, string) {
	t.Helper()
	return call(t, a, http.MethodPut, "/_matrix/app/v1/transactions/"+txn, hsAuth, body)
}

// textEvent is an m.room.message m.text event.
func textEvent(eventID, sender, room, body string) string {
	return fmt.Sprintf(`{"type":"m.room.message","event_id":%q,"sender":%q,"room_id":%q,"origin_server_ts":1700000000000,"content":{"msgtype":"m.text","body":%q}}`,
		eventID, sender, room, body)
}

func memberEvent(eventID, sender, room, target, membership string, direct bool) string {
	return fmt.Sprintf(`{"type":"m.room.member","event_id":%q,"sender":%q,"room_id":%q,"state_key":%q,"origin_server_ts":1700000000000,"content":{"membership":%q,"is_direct":%t}}`,
		eventID, sender, room, target, membership, direct)
}

func txnBody(events ...string) string {
	return `{"events":[` + strings.Join(events, ",") + `]}`
}

// linkDM makes testRoom the DM of testGhost and testUser.
func linkDM(h *fakeHost) {
	h.links.Set("room:"+testRoom, testGhost+"|"+testUser)
	h.links.Set("dm:"+testGhost+"|"+testUser, testRoom)
}

func TestTransactionAuth(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	linkDM(host)
	a := newTestAdapter(t, hs, host)
	body := txnBody(textEvent("$1", testUser, testRoom, "hi"))

	tests := []struct {
		name, method, path, auth string
		wantStatus               int
		wantCode                 string
	}{
		{"txn missing token", "PUT", "/_matrix/app/v1/transactions/a1", "", 401, "M_UNAUTHORIZED"},
		{"txn not bearer", "PUT", "/_matrix/app/v1/transactions/a2", "Basic aHM6aHM=", 401, "M_UNAUTHORIZED"},
		{"txn empty bearer", "PUT", "/_matrix/app/v1/transactions/a3", "Bearer ", 401, "M_UNAUTHORIZED"},
		{"txn wrong bearer", "PUT", "/_matrix/app/v1/transactions/a4", "bearer:as-secret", 403, "M_FORBIDDEN"},
		{"txn wrong query", "PUT", "/_matrix/app/v1/transactions/a5", "query:nope", 403, "M_FORBIDDEN"},
		{"legacy txn wrong", "PUT", "/transactions/a6", "bearer:hs-secret2", 403, "M_FORBIDDEN"},
		{"user wrong", "GET", "/_matrix/app/v1/users/" + url.PathEscape(testGhost), "bearer:x", 403, "M_FORBIDDEN"},
		{"user missing", "GET", "/_matrix/app/v1/users/" + url.PathEscape(testGhost), "", 401, "M_UNAUTHORIZED"},
		{"room wrong", "GET", "/_matrix/app/v1/rooms/%23a:localhost", "bearer:x", 403, "M_FORBIDDEN"},
		{"ping missing", "POST", "/_matrix/app/v1/ping", "", 401, "M_UNAUTHORIZED"},
		{"unknown path missing", "GET", "/_matrix/app/v1/thirdparty/protocol/x", "", 401, "M_UNAUTHORIZED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code := call(t, a, tt.method, tt.path, tt.auth, body)
			if status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("got %d %s, want %d %s", status, code, tt.wantStatus, tt.wantCode)
			}
		})
	}
	if evts := host.events(); len(evts) != 0 {
		t.Errorf("unauthenticated requests dispatched %d events", len(evts))
	}
	if reqs := hs.requests(); len(reqs) > 0 {
		for _, r := range reqs {
			if r.Path != "/_matrix/client/v3/register" && r.Path != "/_matrix/client/v3/account/whoami" {
				t.Errorf("unauthenticated requests caused %s", r)
			}
		}
	}

	// The right token, as header and as legacy query parameter.
	if status, code := call(t, a, "PUT", "/_matrix/app/v1/transactions/ok1", hsAuth, body); status != 200 {
		t.Errorf("bearer: %d %s", status, code)
	}
	if status, code := call(t, a, "PUT", "/transactions/ok2", "query:hs-secret",
		txnBody(textEvent("$2", testUser, testRoom, "hi"))); status != 200 {
		t.Errorf("legacy path with query token: %d %s", status, code)
	}
	if n := len(host.events()); n != 2 {
		t.Errorf("dispatched %d events, want 2", n)
	}
}

func TestTransactionBadBody(t *testing.T) {
	host := newFakeHost()
	linkDM(host)
	a := newTestAdapter(t, newFakeHS(t, "as-secret"), host)
	tests := []struct {
		name, body string
		wantCode   string
	}{
		{"empty", "", "M_NOT_JSON"},
		{"not json", "{events:", "M_NOT_JSON"},
		{"trailing garbage", `{"events":[]} x`, "M_NOT_JSON"},
		{"array", `[]`, "M_BAD_JSON"},
		{"string", `"events"`, "M_BAD_JSON"},
		{"null", `null`, "M_BAD_JSON"},
		{"events not array", `{"events":{"a":1}}`, "M_BAD_JSON"},
		{"event not object", `{"events":[1]}`, "M_BAD_JSON"},
		{"second event not object", `{"events":[` + textEvent("$1", testUser, testRoom, "x") + `,"x"]}`, "M_BAD_JSON"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txn := fmt.Sprintf("bad%d", i)
			status, code := putTxn(t, a, txn, tt.body)
			if status != 400 || code != tt.wantCode {
				t.Errorf("got %d %s, want 400 %s", status, code, tt.wantCode)
			}
			if _, done := txnRecorded(host.links, txn); done {
				t.Error("refused transaction recorded as done")
			}
		})
	}
	if n := len(host.events()); n != 0 {
		t.Errorf("dispatched %d events from bad bodies", n)
	}
}

func TestTransactionDuplicate(t *testing.T) {
	host := newFakeHost()
	linkDM(host)
	a := newTestAdapter(t, newFakeHS(t, "as-secret"), host)
	body := txnBody(textEvent("$1", testUser, testRoom, "once"))
	for i := range 3 {
		if status, code := putTxn(t, a, "42", body); status != 200 {
			t.Fatalf("attempt %d: %d %s", i, status, code)
		}
	}
	// The legacy path shares the transaction IDs.
	if status, _ := call(t, a, "PUT", "/transactions/42", hsAuth, body); status != 200 {
		t.Fatalf("legacy retry: %d", status)
	}
	evts := host.events()
	if len(evts) != 1 {
		t.Fatalf("dispatched %d events, want 1", len(evts))
	}
	want := &event.Message{Header: event.Header{
		ID:   "$1",
		From: event.Address{Network: event.Matrix, ID: testUser},
		To:   event.Address{Network: event.Matrix, ID: testGhost},
		Time: evts[0].Head().Time,
	}, Body: "once"}
	if got, ok := evts[0].(*event.Message); !ok || *got != *want {
		t.Errorf("dispatched %+v, want %+v", evts[0], want)
	}
	if _, ok := txnRecorded(host.links, "42"); !ok {
		t.Error("transaction not recorded in links")
	}
}

func TestTransactionStorageError(t *testing.T) {
	host := newFakeHost()
	linkDM(host)
	a := newTestAdapter(t, newFakeHS(t, "as-secret"), host)
	body := txnBody(
		textEvent("$1", testUser, testRoom, "first"),
		textEvent("$2", testUser, testRoom, "second"),
	)
	// The second event cannot be stored: 500, so the homeserver retries.
	host.setDispatchErr(func(evt event.Event) error {
		if evt.Head().ID == "$2" {
			return fmt.Errorf("store event: %w", errStorage)
		}
		return nil
	})
	if status, code := putTxn(t, a, "7", body); status != 500 || code != "M_UNKNOWN" {
		t.Fatalf("got %d %s, want 500 M_UNKNOWN", status, code)
	}
	if _, ok := txnRecorded(host.links, "7"); ok {
		t.Fatal("failed transaction recorded as done")
	}
	// The retry processes it (the core recognises $1 as a duplicate).
	host.setDispatchErr(nil)
	if status, code := putTxn(t, a, "7", body); status != 200 {
		t.Fatalf("retry: %d %s", status, code)
	}
	var ids []string
	for _, e := range host.events() {
		ids = append(ids, e.Head().ID)
	}
	if strings.Join(ids, ",") != "$1,$1,$2" {
		t.Errorf("dispatched %v, want $1 (first try), $1 and $2 (retry)", ids)
	}

	// Links failing: 500 too, and nothing dispatched.
	host.links.SetFail(true)
	if status, _ := putTxn(t, a, "8", txnBody(textEvent("$3", testUser, testRoom, "x"))); status != 500 {
		t.Errorf("links failing: %d, want 500", status)
	}
	host.links.SetFail(false)
	if n := len(host.events()); n != 3 {
		t.Errorf("dispatched %d events, want 3", n)
	}
}

func TestTransactionIgnored(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	linkDM(host)
	a := newTestAdapter(t, hs, host)
	hs.reset()
	body := txnBody(
		textEvent("$own", testGhost, testRoom, "echo of our own ghost"),
		textEvent("$bot", "@parley:localhost", testRoom, "bot talking"),
		textEvent("$group", testUser, "!group:localhost", "in a room that is no dm"),
		`{"type":"m.reaction","event_id":"$r","sender":"@alice:localhost","room_id":"!dm:localhost","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$1","key":"👍"}}}`,
		`{"type":"m.room.message","event_id":"$badcontent","sender":"@alice:localhost","room_id":"!dm:localhost","content":{"msgtype":5}}`,
		`{"type":5,"event_id":"$badtype"}`,
		`{"type":"m.typing","content":{"user_ids":[]}}`,
	)
	if status, code := putTxn(t, a, "ign", body); status != 200 {
		t.Fatalf("got %d %s", status, code)
	}
	if evts := host.events(); len(evts) != 0 {
		t.Errorf("dispatched %v", evts)
	}
	for _, r := range hs.requests() {
		if r.Path != "/_matrix/client/v3/register" && r.Path != "/_matrix/client/v3/account/whoami" {
			t.Errorf("ignored events caused %s", r)
		}
	}
}

func TestTransactionUndeliverable(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	linkDM(host)
	a := newTestAdapter(t, hs, host)
	host.setDispatchErr(func(evt event.Event) error {
		switch evt.Head().ID {
		case "$noroute":
			return fmt.Errorf("route: %w", bridges.ErrNoRoute)
		case "$refused":
			return fmt.Errorf("route: %w", bridges.ErrRefused)
		}
		return nil
	})
	image := `{"type":"m.room.message","event_id":"$image","sender":"@alice:localhost","room_id":"!dm:localhost","content":{"msgtype":"m.image","body":"cat.png","url":"mxc://x/y"}}`
	encrypted := `{"type":"m.room.encrypted","event_id":"$enc","sender":"@alice:localhost","room_id":"!dm:localhost","content":{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"xx"}}`
	body := txnBody(textEvent("$noroute", testUser, testRoom, "a"), textEvent("$refused", testUser, testRoom, "b"), image, encrypted)

	for attempt := range 2 { // a retry sends the same notices with the same transaction IDs
		hs.reset()
		if status, code := putTxn(t, a, fmt.Sprintf("u%d", attempt), body); status != 200 {
			t.Fatalf("got %d %s", status, code)
		}
		var notices []hsRequest
		for _, r := range hs.requests() {
			if strings.Contains(r.Path, "/send/m.room.message/") {
				notices = append(notices, r)
			}
		}
		wants := []struct{ source, text string }{
			{"$noroute", "this address does not lead to anyone"},
			{"$refused", "you may not use the gateway"},
			{"$image", "m.image messages are not supported"},
			{"$enc", "encrypted messages are not supported"},
		}
		if len(notices) != len(wants) {
			t.Fatalf("sent %d notices, want %d: %v", len(notices), len(wants), notices)
		}
		for i, w := range wants {
			r := notices[i]
			wantPath := "/_matrix/client/v3/rooms/" + testRoom + "/send/m.room.message/" + txnID("notice|"+w.source)
			if r.Method != "PUT" || r.Path != wantPath || r.Query["user_id"] != testGhost {
				t.Errorf("notice %d: %s, want PUT %s as %s", i, r, wantPath, testGhost)
			}
			if r.Body["msgtype"] != "m.notice" || !strings.Contains(r.Body["body"].(string), w.text) {
				t.Errorf("notice %d body %v, want m.notice containing %q", i, r.Body, w.text)
			}
		}
	}
	if n := len(host.events()); n != 0 {
		t.Errorf("recorded %d dispatched events, want 0", n)
	}
}

func TestTransactionNoticeFailureRetries(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	linkDM(host)
	a := newTestAdapter(t, hs, host)
	host.setDispatchErr(func(event.Event) error { return bridges.ErrNoRoute })
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if strings.Contains(r.Path, "/send/") {
			return 502, `{"errcode":"M_UNKNOWN","error":"bad gateway"}`, true
		}
		return 0, "", false
	})
	body := txnBody(textEvent("$1", testUser, testRoom, "a"))
	if status, _ := putTxn(t, a, "n1", body); status != 500 {
		t.Errorf("notice not sent: %d, want 500 so that the homeserver retries", status)
	}
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if strings.Contains(r.Path, "/send/") {
			return 403, `{"errcode":"M_FORBIDDEN","error":"no"}`, true
		}
		return 0, "", false
	})
	if status, _ := putTxn(t, a, "n1", body); status != 200 {
		t.Errorf("notice refused for good: %d, want 200", status)
	}
}

func TestTransactionInvite(t *testing.T) {
	const ghost2 = "@_xmpp_carol=40example.org:localhost"
	tests := []struct {
		name     string
		event    string
		members  []string // joined members of the room the fake reports (before the ghost joins)
		wantJoin bool
		wantLink bool
	}{
		{name: "is_direct", event: memberEvent("$i1", testUser, "!r1:localhost", testGhost, "invite", true),
			members: []string{testUser, "@dave:localhost"}, wantJoin: true, wantLink: true},
		{name: "one to one", event: memberEvent("$i2", testUser, "!r1:localhost", testGhost, "invite", false),
			members: []string{testUser}, wantJoin: true, wantLink: true},
		{name: "group", event: memberEvent("$i3", testUser, "!r1:localhost", testGhost, "invite", false),
			members: []string{testUser, "@dave:localhost"}, wantJoin: true},
		{name: "not our user", event: memberEvent("$i4", testUser, "!r1:localhost", "@dave:localhost", "invite", true)},
		{name: "invited by a ghost", event: memberEvent("$i5", ghost2, "!r1:localhost", testGhost, "invite", true)},
		{name: "bot invited", event: memberEvent("$i6", testUser, "!r1:localhost", "@parley:localhost", "invite", true), wantJoin: true},
		{name: "ghost joins", event: memberEvent("$i7", testGhost, "!r1:localhost", testGhost, "join", false)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newFakeHS(t, "as-secret")
			host := newFakeHost()
			a := newTestAdapter(t, hs, host)
			hs.setMembers("!r1:localhost", tt.members...)
			hs.reset()
			if status, code := putTxn(t, a, "inv", txnBody(tt.event)); status != 200 {
				t.Fatalf("got %d %s", status, code)
			}
			joined := false
			for _, r := range hs.requests() {
				if r.Method == "POST" && r.Path == "/_matrix/client/v3/rooms/!r1:localhost/join" {
					joined = true
					var e struct {
						StateKey string `json:"state_key"`
					}
					_ = json.Unmarshal([]byte(tt.event), &e)
					if r.Query["user_id"] != e.StateKey {
						t.Errorf("joined as %q, want %q", r.Query["user_id"], e.StateKey)
					}
				}
			}
			if joined != tt.wantJoin {
				t.Errorf("joined = %v, want %v (requests %v)", joined, tt.wantJoin, hs.requests())
			}
			dm, okDM := host.links.Value("dm:" + testGhost + "|" + testUser)
			room, okRoom := host.links.Value("room:!r1:localhost")
			if tt.wantLink {
				if dm != "!r1:localhost" || room != testGhost+"|"+testUser {
					t.Errorf("links dm=%q room=%q", dm, room)
				}
			} else if okDM || okRoom {
				t.Errorf("unexpected links dm=%q room=%q", dm, room)
			}
		})
	}
}

func TestTransactionInviteJoinUnreachable(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	a := newTestAdapter(t, hs, host)
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if strings.HasSuffix(r.Path, "/join") {
			return 503, `{"errcode":"M_UNKNOWN","error":"try later"}`, true
		}
		return 0, "", false
	})
	body := txnBody(memberEvent("$i", testUser, "!r1:localhost", testGhost, "invite", true))
	if status, _ := putTxn(t, a, "j", body); status != 500 {
		t.Errorf("join failing with 503: %d, want 500", status)
	}
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if strings.HasSuffix(r.Path, "/join") {
			return 403, `{"errcode":"M_FORBIDDEN","error":"invite withdrawn"}`, true
		}
		return 0, "", false
	})
	if status, _ := putTxn(t, a, "j", body); status != 200 {
		t.Errorf("join refused: %d, want 200", status)
	}
	if _, ok := host.links.Value("room:!r1:localhost"); ok {
		t.Error("room linked although the ghost could not join")
	}
}

func TestTransactionLeave(t *testing.T) {
	for _, who := range []string{testUser, testGhost} {
		t.Run(who, func(t *testing.T) {
			hs := newFakeHS(t, "as-secret")
			host := newFakeHost()
			linkDM(host)
			a := newTestAdapter(t, hs, host)
			hs.reset()
			if status, _ := putTxn(t, a, "l", txnBody(memberEvent("$l", who, testRoom, who, "leave", false))); status != 200 {
				t.Fatalf("status %d", status)
			}
			if _, ok := host.links.Value("room:" + testRoom); ok {
				t.Error("room link kept")
			}
			if _, ok := host.links.Value("dm:" + testGhost + "|" + testUser); ok {
				t.Error("dm link kept")
			}
			left := false
			for _, r := range hs.requests() {
				if r.Path == "/_matrix/client/v3/rooms/"+testRoom+"/leave" && r.Query["user_id"] == testGhost {
					left = true
				}
			}
			if left != (who == testUser) {
				t.Errorf("ghost left = %v", left)
			}
		})
	}
}

func TestQueries(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	a := newTestAdapter(t, hs, host)
	host.waitState(t, bridges.Connected)
	hs.reset()

	tests := []struct {
		name, method, path string
		wantStatus         int
		wantCode           string
	}{
		{"ghost exists", "GET", "/_matrix/app/v1/users/" + url.PathEscape("@_xmpp_dan=40example.org:localhost"), 200, ""},
		{"legacy ghost", "GET", "/users/" + url.PathEscape("@_xmpp_erin:localhost"), 200, ""},
		{"bot exists", "GET", "/_matrix/app/v1/users/" + url.PathEscape("@parley:localhost"), 200, ""},
		{"other user", "GET", "/_matrix/app/v1/users/" + url.PathEscape("@alice:localhost"), 404, "M_NOT_FOUND"},
		{"other server", "GET", "/_matrix/app/v1/users/" + url.PathEscape("@_xmpp_x:elsewhere"), 404, "M_NOT_FOUND"},
		{"alias", "GET", "/_matrix/app/v1/rooms/" + url.PathEscape("#x:localhost"), 404, "M_NOT_FOUND"},
		{"ping", "POST", "/_matrix/app/v1/ping", 200, ""},
		{"unknown", "GET", "/_matrix/app/v1/thirdparty/protocol/xmpp", 404, "M_UNRECOGNIZED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code := call(t, a, tt.method, tt.path, hsAuth, `{"transaction_id":"p"}`)
			if status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("got %d %q, want %d %q", status, code, tt.wantStatus, tt.wantCode)
			}
		})
	}
	var registered []string
	for _, r := range hs.requests() {
		if r.Path == "/_matrix/client/v3/register" {
			if r.Body["type"] != "m.login.application_service" || r.Body["inhibit_login"] != true {
				t.Errorf("register body %v", r.Body)
			}
			registered = append(registered, r.Body["username"].(string))
		}
	}
	// The bot was registered at start; the ghosts when queried.
	if got := strings.Join(registered, ","); got != "_xmpp_dan=40example.org,_xmpp_erin" {
		t.Errorf("registered %q", got)
	}
	if _, ok := host.links.Value("ghost:@_xmpp_erin:localhost"); !ok {
		t.Error("registered ghost not remembered")
	}
}

func TestParseTransaction(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantErr    error
		wantEvents int
		wantSkip   int
	}{
		{name: "empty events", body: `{"events":[]}`},
		{name: "no events key", body: `{"ephemeral":[{"type":"m.typing"}]}`},
		{name: "null events", body: `{"events":null}`},
		{name: "two events", body: txnBody(textEvent("$1", testUser, testRoom, "a"), textEvent("$2", testUser, testRoom, "b")), wantEvents: 2},
		{name: "wrongly typed field skipped", body: `{"events":[{"type":["x"]},{"type":"m.room.message","event_id":"$1"}]}`, wantEvents: 1, wantSkip: 1},
		{name: "not json", body: `{`, wantErr: errNotJSON},
		{name: "number", body: `1`, wantErr: errBadJSON},
		{name: "events string", body: `{"events":"x"}`, wantErr: errBadJSON},
		{name: "event array", body: `{"events":[[]]}`, wantErr: errBadJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txn, err := parseTransaction([]byte(tt.body))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(txn.Events) != tt.wantEvents || len(txn.Skipped) != tt.wantSkip {
				t.Errorf("events %d skipped %v, want %d and %d", len(txn.Events), txn.Skipped, tt.wantEvents, tt.wantSkip)
			}
		})
	}
}

func FuzzTransaction(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "events", "*.json"))
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(`{"events":[` + string(b) + `]}`)
	}
	for _, s := range []string{
		`{"events":[]}`, `{}`, `[]`, `null`, `{"events":[1]}`, `{"events":{"x":1}}`,
		txnBody(memberEvent("$i", testUser, testRoom, testGhost, "invite", true)),
		`{"events":[{"type":"m.room.message","content":null}]}`,
		`{"events":[{"type":"m.room.member","state_key":"@x:y","content":{"membership":5}}]}`,
		`{"events":[{"type":"m.room.message","content":{"msgtype":"m.text","m.relates_to":{"rel_type":"m.replace"},"m.new_content":7}}]}`,
		`{"events":[],"ephemeral":[` + presenceEDU(testUser, "unavailable", "lunch") + `]}`,
		`{"de.sorunome.msc2409.ephemeral":[` + presenceEDU(testUser, "online", "") + `,{"type":"m.typing","content":{"user_ids":[]}}]}`,
		`{"ephemeral":[{"type":"m.presence","sender":1,"content":{"presence":{}}},2,null],"events":[]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		txn, err := parseTransaction([]byte(body))
		if err != nil {
			if !errors.Is(err, errNotJSON) && !errors.Is(err, errBadJSON) {
				t.Fatalf("error %v is neither errNotJSON nor errBadJSON", err)
			}
			return
		}
		if !json.Valid([]byte(body)) {
			t.Fatal("accepted invalid JSON")
		}
		for _, p := range txn.Presence {
			_, _ = parleyPresence(p.Content.Presence)
		}
		for _, evt := range txn.Events {
			if evt == nil {
				t.Fatal("nil event")
			}
			// What the handler does with each event must not panic either.
			if evt.Type.Type == "m.room.message" {
				_, _ = messageFromMatrix(evt, testGhost)
			}
		}
	})
}

// txnRecorded reports whether the transaction txnID is recorded as done in
// links (under its ID and a digest of its events).
func txnRecorded(links *bridgestest.Links, txnID string) (string, bool) {
	m, _ := links.List(context.Background(), "txn:"+txnID+":")
	for _, v := range m {
		return v, true
	}
	return "", false
}

// A homeserver that gives a transaction ID again to other events (Synapse
// on SQLite does after a restart) has them handled, not answered as a
// duplicate; a retry of the same events still is one.
func TestTransactionIDReused(t *testing.T) {
	host := newFakeHost()
	linkDM(host)
	a := newTestAdapter(t, newFakeHS(t, "as-secret"), host)
	first := txnBody(textEvent("$1", testUser, testRoom, "first"))
	for range 2 {
		if status, code := putTxn(t, a, "1", first); status != 200 {
			t.Fatalf("got %d %s", status, code)
		}
	}
	if n := len(host.events()); n != 1 {
		t.Fatalf("dispatched %d events, want 1 (the retry is a duplicate)", n)
	}
	if status, code := putTxn(t, a, "1", txnBody(textEvent("$2", testUser, testRoom, "after a restart"))); status != 200 {
		t.Fatalf("got %d %s", status, code)
	}
	if evts := host.events(); len(evts) != 2 || evts[1].Head().ID != "$2" {
		t.Fatalf("dispatched %v, want $2 too", evts)
	}
}
