package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
)

// errStorage stands for a failing store.
var errStorage = bridgestest.ErrStorage

// fakeHost is a bridges.Host that records what the adapter asks of it.
type fakeHost struct {
	mu         sync.Mutex
	links      *bridgestest.Links
	dispatched []event.Event
	// dispatchErr, when set, decides what Dispatch returns for evt (the
	// event is recorded only when it returns nil).
	dispatchErr func(evt event.Event) error
	states      []stateChange
	stateCh     chan stateChange
}

type stateChange struct {
	State bridges.State
	Err   error
}

func newFakeHost() *fakeHost {
	return &fakeHost{links: bridgestest.NewLinks(), stateCh: make(chan stateChange, 100)}
}

func (h *fakeHost) Dispatch(ctx context.Context, evt event.Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dispatchErr != nil {
		if err := h.dispatchErr(evt); err != nil {
			return err
		}
	}
	h.dispatched = append(h.dispatched, evt)
	return nil
}

func (h *fakeHost) SetState(n event.Network, s bridges.State, err error) {
	h.mu.Lock()
	h.states = append(h.states, stateChange{s, err})
	h.mu.Unlock()
	select {
	case h.stateCh <- stateChange{s, err}:
	default:
	}
}

func (h *fakeHost) Links(n event.Network) bridges.Links {
	if n != event.Matrix {
		panic("links of " + string(n))
	}
	return h.links
}

func (h *fakeHost) Profile(event.Address) string { return "" }
func (h *fakeHost) Reachable(event.Address)      {}

func (h *fakeHost) events() []event.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]event.Event(nil), h.dispatched...)
}

func (h *fakeHost) setDispatchErr(f func(event.Event) error) {
	h.mu.Lock()
	h.dispatchErr = f
	h.mu.Unlock()
}

// waitState waits for the adapter to report s.
func (h *fakeHost) waitState(t *testing.T, s bridges.State) stateChange {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case c := <-h.stateCh:
			if c.State == s {
				return c
			}
		case <-timeout:
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("state %s not reported; got %v", s, h.states)
		}
	}
}

// hsRequest is one request the fake homeserver received.
type hsRequest struct {
	Method string
	Path   string // unescaped
	Query  map[string]string
	Auth   string
	Body   map[string]any
}

func (r hsRequest) String() string {
	return fmt.Sprintf("%s %s user_id=%s", r.Method, r.Path, r.Query["user_id"])
}

// fakeHS is a fake homeserver client-server API: it records every request
// and answers from a small model (rooms get "!room<n>:localhost", events
// "$event<n>"), unless override answers first.
type fakeHS struct {
	*httptest.Server
	t        *testing.T
	asToken  string
	mu       sync.Mutex
	reqs     []hsRequest
	n        int
	override func(r hsRequest) (status int, body string, ok bool)
	members  map[string][]string          // room → joined members, for joined_members
	aliases  map[string]string            // room alias → room ID, for directory/room
	closed   map[string]bool              // invite-only rooms: join refused unless invited
	invited  map[string][]string          // room → invited users
	profiles map[string]map[string]string // room → member → display name, for state/m.room.member
	sent     map[string]string            // txn ID → event ID: de-duplication like a homeserver
	timeline map[string][]fakeEvent       // room → events sent, oldest first, for messages
	global   map[string]string            // user → global display name, given to their joins
	left     map[string]map[string]bool   // room → users who left it
}

// fakeEvent is an event the fake homeserver stored.
type fakeEvent struct {
	ID, Sender, Type string
	Content          map[string]any
}

func newFakeHS(t *testing.T, asToken string) *fakeHS {
	hs := &fakeHS{t: t, asToken: asToken, members: map[string][]string{}, sent: map[string]string{}, timeline: map[string][]fakeEvent{},
		aliases: map[string]string{}, closed: map[string]bool{}, invited: map[string][]string{}, profiles: map[string]map[string]string{},
		global: map[string]string{}, left: map[string]map[string]bool{}}
	hs.Server = httptest.NewServer(http.HandlerFunc(hs.serve))
	t.Cleanup(hs.Close)
	return hs
}

func (hs *fakeHS) setOverride(f func(r hsRequest) (int, string, bool)) {
	hs.mu.Lock()
	hs.override = f
	hs.mu.Unlock()
}

func (hs *fakeHS) requests() []hsRequest {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return append([]hsRequest(nil), hs.reqs...)
}

func (hs *fakeHS) reset() {
	hs.mu.Lock()
	hs.reqs = nil
	hs.mu.Unlock()
}

func (hs *fakeHS) serve(w http.ResponseWriter, r *http.Request) {
	req := hsRequest{Method: r.Method, Path: r.URL.Path, Query: map[string]string{}, Auth: r.Header.Get("Authorization")}
	for k, v := range r.URL.Query() {
		req.Query[k] = v[0]
	}
	if b, _ := io.ReadAll(r.Body); len(b) > 0 {
		if err := json.Unmarshal(b, &req.Body); err != nil {
			hs.t.Errorf("fake homeserver: %s %s: body %q: %v", r.Method, r.URL.Path, b, err)
		}
	}
	hs.mu.Lock()
	hs.reqs = append(hs.reqs, req)
	override := hs.override
	hs.mu.Unlock()

	reply := func(status int, body string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
	if override != nil {
		if status, body, ok := override(req); ok {
			reply(status, body)
			return
		}
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if req.Auth != "Bearer "+hs.asToken {
		reply(http.StatusUnauthorized, `{"errcode":"M_UNKNOWN_TOKEN","error":"unknown token"}`)
		return
	}
	const v3 = "/_matrix/client/v3/"
	p := strings.TrimPrefix(req.Path, v3)
	parts := strings.Split(p, "/")
	switch {
	case req.Method == http.MethodPost && p == "register":
		reply(http.StatusOK, fmt.Sprintf(`{"user_id":"@%s:localhost"}`, req.Body["username"]))
	case req.Method == http.MethodGet && p == "account/whoami":
		reply(http.StatusOK, fmt.Sprintf(`{"user_id":%q}`, req.Query["user_id"]))
	case req.Method == http.MethodPost && p == "createRoom":
		hs.n++
		room := fmt.Sprintf("!room%d:localhost", hs.n)
		hs.members[room] = []string{req.Query["user_id"]}
		reply(http.StatusOK, fmt.Sprintf(`{"room_id":%q}`, room))
	case req.Method == http.MethodPut && len(parts) == 5 && parts[0] == "rooms" && parts[2] == "send":
		key := parts[1] + "|" + req.Query["user_id"] + "|" + parts[4]
		evt, ok := hs.sent[key]
		if !ok {
			hs.n++
			evt = fmt.Sprintf("$event%d", hs.n)
			hs.sent[key] = evt
			hs.timeline[parts[1]] = append(hs.timeline[parts[1]], fakeEvent{ID: evt, Sender: req.Query["user_id"], Type: parts[3], Content: req.Body})
		}
		reply(http.StatusOK, fmt.Sprintf(`{"event_id":%q}`, evt))
	case req.Method == http.MethodGet && len(parts) == 3 && parts[0] == "rooms" && parts[2] == "messages":
		reply(hs.messages(parts[1], req.Query))
	case req.Method == http.MethodPut && len(parts) == 3 && parts[0] == "presence" && parts[2] == "status":
		if parts[1] != req.Query["user_id"] {
			reply(http.StatusForbidden, `{"errcode":"M_FORBIDDEN","error":"cannot set the presence of another user"}`)
			return
		}
		reply(http.StatusOK, `{}`)
	case req.Method == http.MethodPut && len(parts) == 3 && parts[0] == "profile":
		if name, ok := req.Body["displayname"].(string); ok {
			hs.global[parts[1]] = name
		}
		reply(http.StatusOK, `{}`)
	case req.Method == http.MethodPost && len(parts) == 3 && parts[0] == "rooms" && parts[2] == "join":
		hs.members[parts[1]] = append(hs.members[parts[1]], req.Query["user_id"])
		reply(http.StatusOK, fmt.Sprintf(`{"room_id":%q}`, parts[1]))
	case req.Method == http.MethodGet && len(parts) == 3 && parts[0] == "directory" && parts[1] == "room":
		room, ok := hs.aliases[parts[2]]
		if !ok {
			reply(http.StatusNotFound, `{"errcode":"M_NOT_FOUND","error":"room alias not found"}`)
			return
		}
		reply(http.StatusOK, fmt.Sprintf(`{"room_id":%q,"servers":["localhost"]}`, room))
	case req.Method == http.MethodPost && len(parts) == 2 && parts[0] == "join":
		room := parts[1]
		if r, ok := hs.aliases[room]; ok {
			room = r
		}
		user := req.Query["user_id"]
		if hs.closed[room] && !slices.Contains(hs.invited[room], user) && !slices.Contains(hs.members[room], user) {
			reply(http.StatusForbidden, `{"errcode":"M_FORBIDDEN","error":"you are not invited to this room"}`)
			return
		}
		if !slices.Contains(hs.members[room], user) {
			hs.members[room] = append(hs.members[room], user)
			delete(hs.left[room], user)
			if name, ok := hs.global[user]; ok {
				hs.setProfile(room, user, name)
			}
		}
		reply(http.StatusOK, fmt.Sprintf(`{"room_id":%q}`, room))
	case req.Method == http.MethodPost && len(parts) == 3 && parts[0] == "rooms" && parts[2] == "invite":
		room, user := parts[1], fmt.Sprint(req.Body["user_id"])
		if !slices.Contains(hs.members[room], req.Query["user_id"]) {
			reply(http.StatusForbidden, `{"errcode":"M_FORBIDDEN","error":"you are not in the room"}`)
			return
		}
		if slices.Contains(hs.members[room], user) {
			reply(http.StatusForbidden, `{"errcode":"M_FORBIDDEN","error":"already in the room"}`)
			return
		}
		hs.invited[room] = append(hs.invited[room], user)
		reply(http.StatusOK, `{}`)
	case req.Method == http.MethodGet && len(parts) == 5 && parts[0] == "rooms" && parts[2] == "state" && parts[3] == "m.room.member":
		room, user := parts[1], parts[4]
		content := map[string]any{"membership": "join"}
		if name, ok := hs.profiles[room][user]; ok {
			content["displayname"] = name
		} else if hs.left[room][user] {
			content["membership"] = "leave"
		} else if !slices.Contains(hs.members[room], user) {
			reply(http.StatusNotFound, `{"errcode":"M_NOT_FOUND","error":"no member event"}`)
			return
		}
		b, _ := json.Marshal(content)
		reply(http.StatusOK, string(b))
	case req.Method == http.MethodPut && len(parts) == 5 && parts[0] == "rooms" && parts[2] == "state" && parts[3] == "m.room.member":
		room, user := parts[1], parts[4]
		if user != req.Query["user_id"] || !slices.Contains(hs.members[room], user) || req.Body["membership"] != "join" {
			reply(http.StatusForbidden, `{"errcode":"M_FORBIDDEN","error":"not a member"}`)
			return
		}
		name, _ := req.Body["displayname"].(string)
		hs.setProfile(room, user, name)
		hs.n++
		evt := fmt.Sprintf("$event%d", hs.n)
		hs.timeline[room] = append(hs.timeline[room], fakeEvent{ID: evt, Sender: user, Type: "m.room.member", Content: req.Body})
		reply(http.StatusOK, fmt.Sprintf(`{"event_id":%q}`, evt))
	case req.Method == http.MethodGet && len(parts) == 3 && parts[2] == "joined_members":
		joined := map[string]any{}
		for _, m := range hs.members[parts[1]] {
			joined[m] = map[string]any{}
		}
		b, _ := json.Marshal(map[string]any{"joined": joined})
		reply(http.StatusOK, string(b))
	case req.Method == http.MethodPost && len(parts) == 3 && parts[2] == "leave":
		if room, user := parts[1], req.Query["user_id"]; slices.Contains(hs.members[room], user) {
			hs.removeMember(room, user)
		}
		reply(http.StatusOK, `{}`)
	default:
		reply(http.StatusNotFound, `{"errcode":"M_UNRECOGNIZED","error":"unrecognized"}`)
	}
}

// messages answers GET /rooms/{room}/messages with dir=b: from is an index
// into the room's timeline (counted from its end), the filter's senders and
// types are applied.
func (hs *fakeHS) messages(room string, q map[string]string) (int, string) {
	if q["dir"] != "b" {
		return http.StatusBadRequest, `{"errcode":"M_INVALID_PARAM","error":"only dir=b"}`
	}
	var filter struct {
		Senders []string `json:"senders"`
		Types   []string `json:"types"`
	}
	if f := q["filter"]; f != "" {
		if err := json.Unmarshal([]byte(f), &filter); err != nil {
			return http.StatusBadRequest, `{"errcode":"M_INVALID_PARAM","error":"filter"}`
		}
	}
	limit, skip := 10, 0
	_, _ = fmt.Sscan(q["limit"], &limit)
	_, _ = fmt.Sscan(q["from"], &skip)
	in := func(v string, set []string) bool {
		if len(set) == 0 {
			return true
		}
		for _, s := range set {
			if s == v {
				return true
			}
		}
		return false
	}
	tl := hs.timeline[room]
	var chunk []map[string]any
	i := len(tl) - 1 - skip
	for ; i >= 0 && len(chunk) < limit; i-- {
		e := tl[i]
		if in(e.Sender, filter.Senders) && in(e.Type, filter.Types) {
			chunk = append(chunk, map[string]any{"event_id": e.ID, "sender": e.Sender, "type": e.Type, "room_id": room, "content": e.Content})
		}
	}
	resp := map[string]any{"start": fmt.Sprint(skip), "chunk": chunk}
	if i >= 0 {
		resp["end"] = fmt.Sprint(len(tl) - 1 - i)
	}
	b, _ := json.Marshal(resp)
	return http.StatusOK, string(b)
}

// forgetTransactions makes the fake forget the transaction IDs it has seen,
// as Dendrite does for a request that did not complete.
func (hs *fakeHS) forgetTransactions() {
	hs.mu.Lock()
	hs.sent = map[string]string{}
	hs.mu.Unlock()
}

// roomEvents returns the events stored in room.
func (hs *fakeHS) roomEvents(room string) []fakeEvent {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return append([]fakeEvent(nil), hs.timeline[room]...)
}

// setASToken changes the as_token the fake accepts.
func (hs *fakeHS) setASToken(tok string) {
	hs.mu.Lock()
	hs.asToken = tok
	hs.mu.Unlock()
}

// setMembers sets the joined members of room.
func (hs *fakeHS) setMembers(room string, members ...string) {
	hs.mu.Lock()
	hs.members[room] = members
	hs.mu.Unlock()
}

// testConfig is a valid Config for the fake homeserver at hsURL.
func testConfig(hsURL string) Config {
	return Config{
		HomeserverURL: hsURL,
		ServerName:    "localhost",
		Listen:        "127.0.0.1:29328",
		ASToken:       "as-secret",
		HSToken:       "hs-secret",
		Namespaces:    []string{`@_xmpp_.*:localhost`},
		// Polls would add requests to those the tests expect; the tests
		// of polling turn it on (newPollAdapter).
		PresencePollInterval: "off",
	}
}

// testLogger logs to t, so that a failing test shows what happened.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newTestAdapter returns an adapter for hs (nil: none), started on a free
// loopback port with host, and stopped at the end of the test. It logs to
// t, and to log when that is given.
func newTestAdapter(t *testing.T, hs *fakeHS, host bridges.Host, log ...*slog.Logger) *Adapter {
	t.Helper()
	hsURL := "http://127.0.0.1:1"
	if hs != nil {
		hsURL = hs.URL
	}
	logger := testLogger(t)
	if len(log) > 0 {
		logger = log[0]
	}
	a, err := New(testConfig(hsURL), WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	a.cfg.Listen = "127.0.0.1:0"
	a.backoff = bridges.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	if err := a.Start(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return a
}

// isMember reports whether user is joined to room.
func (hs *fakeHS) isMember(room, user string) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return slices.Contains(hs.members[room], user)
}

// setProfile sets the display name of user in room; the caller holds hs.mu.
func (hs *fakeHS) setProfile(room, user, name string) {
	if hs.profiles[room] == nil {
		hs.profiles[room] = map[string]string{}
	}
	hs.profiles[room][user] = name
}

// kick removes user from room, as a kick the adapter has not seen does.
func (hs *fakeHS) kick(room, user string) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.removeMember(room, user)
}

// removeMember has user leave room; the caller holds hs.mu.
func (hs *fakeHS) removeMember(room, user string) {
	if i := slices.Index(hs.members[room], user); i >= 0 {
		hs.members[room] = slices.Delete(hs.members[room], i, i+1)
	}
	delete(hs.profiles[room], user)
	if hs.left[room] == nil {
		hs.left[room] = map[string]bool{}
	}
	hs.left[room][user] = true
}
