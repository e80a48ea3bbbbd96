package matrix

import (
	"context"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// connectedAdapter starts an adapter against a fake homeserver, waits until
// it is connected and clears the requests the start made.
func connectedAdapter(t *testing.T) (*Adapter, *fakeHS, *fakeHost) {
	t.Helper()
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	a := newTestAdapter(t, hs, host)
	host.waitState(t, bridges.Connected)
	hs.reset()
	return a, hs, host
}

func outMessage(id, body string) *event.Message {
	return &event.Message{Header: event.Header{
		ID:       id,
		From:     event.Address{Network: event.Matrix, ID: testGhost},
		To:       event.Address{Network: event.Matrix, ID: testUser},
		FromName: "Bob",
	}, Body: body}
}

func TestSendCreatesDM(t *testing.T) {
	a, hs, host := connectedAdapter(t)
	ctx := context.Background()
	msg := outMessage("xmpp-msg-1", "hello *alice*")
	msg.HTML = "hello <em>alice</em>"

	got, err := a.Send(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	reqs := hs.requests()
	send := "/_matrix/client/v3/rooms/!room1:localhost/send/m.room.message/" + txnID("xmpp-msg-1")
	want := []hsRequest{
		{Method: "POST", Path: "/_matrix/client/v3/register", Query: map[string]string{},
			Body: map[string]any{"type": "m.login.application_service", "username": "_xmpp_bob=40example.org", "inhibit_login": true}},
		{Method: "PUT", Path: "/_matrix/client/v3/profile/" + testGhost + "/displayname", Query: map[string]string{"user_id": testGhost},
			Body: map[string]any{"displayname": "Bob"}},
		{Method: "POST", Path: "/_matrix/client/v3/createRoom", Query: map[string]string{"user_id": testGhost},
			Body: map[string]any{"invite": []any{testUser}, "is_direct": true, "preset": "trusted_private_chat"}},
		{Method: "PUT", Path: send, Query: map[string]string{"user_id": testGhost},
			Body: map[string]any{"msgtype": "m.text", "body": "hello *alice*", "format": "org.matrix.custom.html", "formatted_body": "hello <em>alice</em>",
				sourceKey: txnID("xmpp-msg-1")}},
	}
	if len(reqs) != len(want) {
		t.Fatalf("requests:\n%v\nwant:\n%v", reqs, want)
	}
	for i := range want {
		want[i].Auth = "Bearer as-secret"
		if !reflect.DeepEqual(reqs[i], want[i]) {
			t.Errorf("request %d:\n got  %#v\n want %#v", i, reqs[i], want[i])
		}
	}
	if got != "$event2" {
		t.Errorf("Send() = %q, want the event ID $event2", got)
	}
	for key, want := range map[string]string{
		"dm:" + testGhost + "|" + testUser: "!room1:localhost",
		"room:!room1:localhost":            testGhost + "|" + testUser,
		"name:" + testGhost:                "Bob",
	} {
		if v, _ := host.links.Value(key); v != want {
			t.Errorf("link %s = %q, want %q", key, v, want)
		}
	}
	if _, ok := host.links.Value("ghost:" + testGhost); !ok {
		t.Error("ghost registration not remembered")
	}

	// The next message goes straight to the room; a resend of the same
	// message reuses its transaction ID, so the homeserver de-duplicates it.
	hs.reset()
	got2, err := a.Send(ctx, outMessage("xmpp-msg-2", "second"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := a.Send(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	reqs = hs.requests()
	if len(reqs) != 2 || reqs[0].Path != "/_matrix/client/v3/rooms/!room1:localhost/send/m.room.message/"+txnID("xmpp-msg-2") || reqs[1].Path != send {
		t.Errorf("requests %v", reqs)
	}
	if got2 == got || again != got {
		t.Errorf("event IDs %q, %q, %q: want a new one, then the first again", got, got2, again)
	}

	// A new display name is set once.
	hs.reset()
	m3 := outMessage("xmpp-msg-3", "x")
	m3.FromName = "Bobby"
	m3.Notice = true
	if _, err := a.Send(ctx, m3); err != nil {
		t.Fatal(err)
	}
	reqs = hs.requests()
	if len(reqs) != 2 || !strings.HasSuffix(reqs[0].Path, "/displayname") || reqs[0].Body["displayname"] != "Bobby" || reqs[1].Body["msgtype"] != "m.notice" {
		t.Errorf("requests %v", reqs)
	}
}

func TestSendRegistrationRemembered(t *testing.T) {
	a, hs, host := connectedAdapter(t)
	host.links.Set("ghost:"+testGhost, "2024-01-01T00:00:00Z")
	host.links.Set("dm:"+testGhost+"|"+testUser, testRoom)
	msg := outMessage("m", "x")
	msg.FromName = ""
	if _, err := a.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	reqs := hs.requests()
	if len(reqs) != 1 || !strings.Contains(reqs[0].Path, "/rooms/"+testRoom+"/send/") {
		t.Errorf("requests %v, want only the send", reqs)
	}
}

func TestSendUserInUse(t *testing.T) {
	a, hs, _ := connectedAdapter(t)
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if r.Path == "/_matrix/client/v3/register" {
			return 400, `{"errcode":"M_USER_IN_USE","error":"taken"}`, true
		}
		return 0, "", false
	})
	if _, err := a.Send(context.Background(), outMessage("m", "x")); err != nil {
		t.Fatalf("Send() with M_USER_IN_USE on register: %v", err)
	}
}

func TestSendFailure(t *testing.T) {
	a, hs, host := connectedAdapter(t)
	linkDM(host)
	f := &event.Failure{
		Header: event.Header{
			ID:   "fail-1",
			From: event.Address{Network: event.Matrix, ID: testGhost},
			To:   event.Address{Network: event.Matrix, ID: testUser},
		},
		EventID: "$orig:localhost",
		Reason:  "bob@example.org is offline and has no archive",
	}
	id, err := a.Send(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	var sends []hsRequest
	for _, r := range hs.requests() {
		if strings.Contains(r.Path, "/send/") {
			sends = append(sends, r)
		}
	}
	if len(sends) != 1 || id == "" {
		t.Fatalf("sends %v, id %q", sends, id)
	}
	r := sends[0]
	wantPath := "/_matrix/client/v3/rooms/" + testRoom + "/send/m.room.message/" + txnID("failure|$orig:localhost|fail-1")
	if r.Path != wantPath || r.Query["user_id"] != testGhost || r.Body["msgtype"] != "m.notice" ||
		r.Body["body"] != "Your message could not be delivered: bob@example.org is offline and has no archive" {
		t.Errorf("notice %s %v", r, r.Body)
	}
}

func TestSendForbiddenDropsRoom(t *testing.T) {
	a, hs, host := connectedAdapter(t)
	linkDM(host)
	ctx := context.Background()
	forbidden := func(r hsRequest) (int, string, bool) {
		if strings.Contains(r.Path, "/rooms/"+testRoom+"/send/") {
			return 403, `{"errcode":"M_FORBIDDEN","error":"not in room"}`, true
		}
		return 0, "", false
	}
	hs.setOverride(forbidden)
	_, err := a.Send(ctx, outMessage("m1", "x"))
	if err == nil || bridges.IsPermanent(err) {
		t.Fatalf("Send() in a room the user left = %v, want a retryable error", err)
	}
	if _, ok := host.links.Value("dm:" + testGhost + "|" + testUser); ok {
		t.Error("dm link kept")
	}
	if _, ok := host.links.Value("room:" + testRoom); ok {
		t.Error("room link kept")
	}
	// The retry creates a new room.
	hs.reset()
	if _, err := a.Send(ctx, outMessage("m1", "x")); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, r := range hs.requests() {
		paths = append(paths, r.Method+" "+r.Path)
	}
	if len(paths) != 2 || paths[0] != "POST /_matrix/client/v3/createRoom" || !strings.Contains(paths[1], "/rooms/!room") {
		t.Errorf("retry requests %v", paths)
	}

	// Refused in the room it just created: permanent, no loop of new rooms.
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if strings.Contains(r.Path, "/send/") {
			return 403, `{"errcode":"M_FORBIDDEN","error":"no"}`, true
		}
		return 0, "", false
	})
	const other = "@carol:localhost"
	m := outMessage("m2", "x")
	m.To.ID = other
	if _, err := a.Send(ctx, m); !bridges.IsPermanent(err) {
		t.Errorf("Send() refused in a new room = %v, want permanent", err)
	}
}

func TestSendErrors(t *testing.T) {
	tests := []struct {
		name          string
		path          string // the request to fail (substring)
		status        int
		body          string
		wantPermanent bool
	}{
		{"send bad request", "/send/", 400, `{"errcode":"M_UNKNOWN","error":"bad"}`, true},
		{"send too large", "/send/", 413, `{"errcode":"M_TOO_LARGE","error":"big"}`, true},
		{"send rate limited", "/send/", 429, `{"errcode":"M_LIMIT_EXCEEDED","error":"slow down"}`, false},
		{"send server error", "/send/", 500, `{"errcode":"M_UNKNOWN","error":"oops"}`, false},
		{"send gateway", "/send/", 502, `<html>bad gateway</html>`, false},
		{"send token", "/send/", 401, `{"errcode":"M_UNKNOWN_TOKEN","error":"who"}`, false},
		{"create forbidden", "/createRoom", 403, `{"errcode":"M_FORBIDDEN","error":"no"}`, true},
		{"create unavailable", "/createRoom", 503, `{}`, false},
		{"register invalid", "/register", 400, `{"errcode":"M_INVALID_USERNAME","error":"no"}`, true},
		{"register unavailable", "/register", 503, `{}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, hs, host := connectedAdapter(t)
			if tt.path == "/send/" {
				host.links.Set("ghost:"+testGhost, "x")
				host.links.Set("dm:"+testGhost+"|"+testUser, "!fresh:localhost")
			}
			hs.setOverride(func(r hsRequest) (int, string, bool) {
				if strings.Contains(r.Path, tt.path) {
					return tt.status, tt.body, true
				}
				return 0, "", false
			})
			_, err := a.Send(context.Background(), outMessage("m", "x"))
			if err == nil {
				t.Fatal("Send() succeeded")
			}
			if bridges.IsPermanent(err) != tt.wantPermanent {
				t.Errorf("Send() = %v, permanent %v, want %v", err, bridges.IsPermanent(err), tt.wantPermanent)
			}
		})
	}
}

func TestSendNetworkError(t *testing.T) {
	a, hs, _ := connectedAdapter(t)
	hs.Close()
	_, err := a.Send(context.Background(), outMessage("m", "x"))
	if err == nil || bridges.IsPermanent(err) {
		t.Errorf("Send() with the homeserver down = %v, want a retryable error", err)
	}
}

// otherKind is an event kind the adapter does not know.
type otherKind struct{ event.Header }

func (*otherKind) Kind() event.Kind { return event.Kind(200) }

func TestSendRefusesBadEvents(t *testing.T) {
	a, hs, _ := connectedAdapter(t)
	tests := []struct {
		name string
		evt  event.Event
	}{
		{"from not a ghost", &event.Message{Header: event.Header{ID: "1",
			From: event.Address{Network: event.Matrix, ID: "@mallory:localhost"}, To: event.Address{Network: event.Matrix, ID: testUser}}}},
		{"to a ghost", &event.Message{Header: event.Header{ID: "2",
			From: event.Address{Network: event.Matrix, ID: testGhost}, To: event.Address{Network: event.Matrix, ID: "@_xmpp_x:localhost"}}}},
		{"to not a user ID", &event.Message{Header: event.Header{ID: "3",
			From: event.Address{Network: event.Matrix, ID: testGhost}, To: event.Address{Network: event.Matrix, ID: "alice"}}}},
		{"other network", &event.Message{Header: event.Header{ID: "4",
			From: event.Address{Network: event.XMPP, ID: "bob@example.org"}, To: event.Address{Network: event.Matrix, ID: testUser}}}},
		{"failure from not a ghost", &event.Failure{Header: event.Header{ID: "5",
			From: event.Address{Network: event.Matrix, ID: testUser}, To: event.Address{Network: event.Matrix, ID: testUser}}}},
		{"unknown kind", &otherKind{event.Header{ID: "6",
			From: event.Address{Network: event.Matrix, ID: testGhost}, To: event.Address{Network: event.Matrix, ID: testUser}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := a.Send(context.Background(), tt.evt); !bridges.IsPermanent(err) {
				t.Errorf("Send() = %v, want a permanent error", err)
			}
		})
	}
	if reqs := hs.requests(); len(reqs) != 0 {
		t.Errorf("refused events caused requests %v", reqs)
	}
}

func TestSendBeforeStart(t *testing.T) {
	a, err := New(testConfig("http://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Send(context.Background(), outMessage("m", "x")); err == nil || bridges.IsPermanent(err) {
		t.Errorf("Send() before Start = %v, want a retryable error", err)
	}
}

func TestStartStates(t *testing.T) {
	t.Run("connected", func(t *testing.T) {
		hs := newFakeHS(t, "as-secret")
		host := newFakeHost()
		newTestAdapter(t, hs, host)
		host.waitState(t, bridges.Connected)
		var whoami bool
		for _, r := range hs.requests() {
			if r.Path == "/_matrix/client/v3/account/whoami" && r.Query["user_id"] == "@parley:localhost" {
				whoami = true
			}
		}
		if !whoami {
			t.Errorf("no whoami as the bot: %v", hs.requests())
		}
		if host.states[0].State != bridges.Starting {
			t.Errorf("first state %v, want starting", host.states[0])
		}
	})
	t.Run("bad credentials, then fixed", func(t *testing.T) {
		hs := newFakeHS(t, "another-token")
		host := newFakeHost()
		newTestAdapter(t, hs, host)
		c := host.waitState(t, bridges.BadCredentials)
		if c.Err == nil {
			t.Error("bad credentials without a reason")
		}
		host.waitState(t, bridges.BadCredentials) // it keeps trying
		hs.setASToken("as-secret")
		host.waitState(t, bridges.Connected)
	})
	t.Run("unreachable", func(t *testing.T) {
		host := newFakeHost()
		newTestAdapter(t, nil, host)
		host.waitState(t, bridges.Reconnecting)
		host.waitState(t, bridges.Reconnecting)
	})
	t.Run("send finds it down", func(t *testing.T) {
		hs := newFakeHS(t, "as-secret")
		host := newFakeHost()
		a := newTestAdapter(t, hs, host)
		host.waitState(t, bridges.Connected)
		hs.setASToken("rotated")
		if _, err := a.Send(context.Background(), outMessage("m", "x")); err == nil || bridges.IsPermanent(err) {
			t.Errorf("Send() with a refused token = %v, want retryable", err)
		}
		host.waitState(t, bridges.BadCredentials)
	})
}

func TestStartErrors(t *testing.T) {
	host := newFakeHost()
	a := newTestAdapter(t, newFakeHS(t, "as-secret"), host)
	if err := a.Start(context.Background(), host); err == nil {
		t.Error("second Start succeeded")
	}

	b, err := New(testConfig("http://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	b.cfg.Listen = a.listenAddr().String() // taken
	if err := b.Start(context.Background(), newFakeHost()); err == nil {
		_ = b.Stop(context.Background())
		t.Error("Start on a taken port succeeded")
	}
}

func TestStopGraceful(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	linkDM(host)
	a, err := New(testConfig(hs.URL), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	a.cfg.Listen = "127.0.0.1:0"
	if err := a.Start(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	addr := a.listenAddr().String()

	entered, release := make(chan struct{}), make(chan struct{})
	host.setDispatchErr(func(event.Event) error {
		close(entered)
		<-release
		return nil
	})
	status := make(chan int, 1)
	go func() {
		s, _ := putTxn(t, a, "slow", txnBody(textEvent("$1", testUser, testRoom, "x")))
		status <- s
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- a.Stop(ctx)
	}()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a transaction was in progress", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Errorf("Stop() = %v", err)
	}
	if s := <-status; s != http.StatusOK {
		t.Errorf("transaction in progress at Stop answered %d", s)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("listener still open after Stop")
	}
	host.waitState(t, bridges.Stopped)
	if err := a.Stop(context.Background()); err != nil {
		t.Errorf("second Stop() = %v", err)
	}
}

func TestNetwork(t *testing.T) {
	a, err := New(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	if a.Network() != event.Matrix {
		t.Errorf("Network() = %v", a.Network())
	}
}
