package matrix

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/peertest"
)

func presenceOfGhost(ghost string, state event.PresenceState, status string) *event.Presence {
	return &event.Presence{Header: event.Header{
		From: event.Address{Network: event.Matrix, ID: ghost},
		To:   event.Address{Network: event.Matrix, ID: testUser},
	}, State: state, Status: status}
}

// presenceRequests returns the presence PUTs the fake homeserver received.
func presenceRequests(hs *fakeHS) []hsRequest {
	var out []hsRequest
	for _, r := range hs.requests() {
		if strings.HasPrefix(r.Path, "/_matrix/client/v3/presence/") {
			out = append(out, r)
		}
	}
	return out
}

func TestSendPresence(t *testing.T) {
	tests := []struct {
		name       string
		state      event.PresenceState
		status     string
		wantState  string
		wantStatus any // always in the body: Dendrite keeps the old one when absent
	}{
		{"available", event.Available, "", "online", ""},
		{"available with status", event.Available, "at my desk", "online", "at my desk"},
		{"away", event.Away, "", "unavailable", "Away"},
		{"away with status", event.Away, "lunch", "unavailable", "lunch"},
		{"xa", event.ExtendedAway, "", "unavailable", "Extended away"},
		{"dnd", event.DoNotDisturb, "", "unavailable", "Do not disturb"},
		{"on the phone", event.OnThePhone, "", "unavailable", "On the phone"},
		{"on the phone with status", event.OnThePhone, "with the bank", "unavailable", "with the bank"},
		{"offline", event.Offline, "", "offline", ""},
	}
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	a := newTestAdapter(t, hs, host)
	host.waitState(t, bridges.Connected)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs.reset()
			// A fresh ghost each time, so that no earlier case de-duplicates.
			ghost := "@_xmpp_" + strings.ReplaceAll(tt.name, " ", "_") + ":localhost"
			id, err := a.Send(context.Background(), presenceOfGhost(ghost, tt.state, tt.status))
			if err != nil || id != "" {
				t.Fatalf("Send = %q, %v", id, err)
			}
			reqs, want := hs.requests(), 2 // register, then presence
			if tt.state == event.Offline {
				// A ghost never registered is offline already.
				if len(reqs) != 0 {
					t.Fatalf("requests %v for the offline presence of a new ghost, want none", reqs)
				}
				if _, err := a.Send(context.Background(), presenceOfGhost(ghost, event.Available, "")); err != nil {
					t.Fatal(err)
				}
				hs.reset()
				if _, err := a.Send(context.Background(), presenceOfGhost(ghost, tt.state, tt.status)); err != nil {
					t.Fatal(err)
				}
				reqs, want = hs.requests(), 1 // registered by then
			}
			if len(reqs) != want || (want == 2 && reqs[0].Path != "/_matrix/client/v3/register") {
				t.Fatalf("requests %v, want register (for a new ghost) then presence", reqs)
			}
			r := reqs[len(reqs)-1]
			wantPath := "/_matrix/client/v3/presence/" + ghost + "/status"
			if r.Method != "PUT" || r.Path != wantPath || r.Query["user_id"] != ghost || r.Auth != "Bearer as-secret" {
				t.Errorf("request %s (auth %q), want PUT %s as %s", r, r.Auth, wantPath, ghost)
			}
			if r.Body["presence"] != tt.wantState || r.Body["status_msg"] != tt.wantStatus {
				t.Errorf("body %v, want presence %q status_msg %v", r.Body, tt.wantState, tt.wantStatus)
			}
		})
	}
}

func TestSendPresenceDedup(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	a := newTestAdapter(t, hs, host)
	host.waitState(t, bridges.Connected)
	hs.reset()
	ctx := context.Background()
	send := func(to string, state event.PresenceState, status string) {
		t.Helper()
		p := presenceOfGhost(testGhost, state, status)
		p.To.ID = to
		if _, err := a.Send(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	send(testUser, event.Away, "")
	send("@carol:localhost", event.Away, "")    // another watcher: same presence
	send(testUser, event.Away, "Away")          // the same on Matrix
	send(testUser, event.Away, "lunch")         // new status
	send(testUser, event.DoNotDisturb, "")      // new state
	send(testUser, event.DoNotDisturb, "")      // same
	send("@carol:localhost", event.Offline, "") // new state
	var got []string
	for _, r := range presenceRequests(hs) {
		got = append(got, fmt.Sprintf("%v/%v", r.Body["presence"], r.Body["status_msg"]))
	}
	want := "unavailable/Away,unavailable/lunch,unavailable/Do not disturb,offline/"
	if strings.Join(got, ",") != want {
		t.Errorf("presence requests %v, want %s", got, want)
	}
	registers := 0
	for _, r := range hs.requests() {
		if r.Path == "/_matrix/client/v3/register" {
			registers++
		}
	}
	if registers != 1 {
		t.Errorf("registered the ghost %d times, want 1", registers)
	}
}

func TestSendPresenceErrors(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	a := newTestAdapter(t, hs, host)
	host.waitState(t, bridges.Connected)
	ctx := context.Background()

	// A failed request is not remembered: the retry sends it again.
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if strings.HasPrefix(r.Path, "/_matrix/client/v3/presence/") {
			return 502, `{"errcode":"M_UNKNOWN","error":"bad gateway"}`, true
		}
		return 0, "", false
	})
	_, err := a.Send(ctx, presenceOfGhost(testGhost, event.Away, ""))
	if err == nil || bridges.IsPermanent(err) {
		t.Errorf("502: %v, want a retryable error", err)
	}
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if strings.HasPrefix(r.Path, "/_matrix/client/v3/presence/") {
			return 403, `{"errcode":"M_FORBIDDEN","error":"no"}`, true
		}
		return 0, "", false
	})
	if _, err := a.Send(ctx, presenceOfGhost(testGhost, event.Away, "")); !bridges.IsPermanent(err) {
		t.Errorf("403: %v, want a permanent error", err)
	}
	hs.setOverride(nil)
	hs.reset()
	if _, err := a.Send(ctx, presenceOfGhost(testGhost, event.Away, "")); err != nil {
		t.Fatal(err)
	}
	if n := len(presenceRequests(hs)); n != 1 {
		t.Errorf("sent %d presence requests after failures, want 1", n)
	}

	// Senders that are no ghosts are refused for good, without a request.
	hs.reset()
	for _, from := range []event.Address{
		{Network: event.Matrix, ID: "@alice:localhost"},
		{Network: event.Matrix, ID: "@parley:localhost"},
		{Network: event.XMPP, ID: "bob@example.org"},
	} {
		p := presenceOfGhost(testGhost, event.Available, "")
		p.From = from
		if _, err := a.Send(ctx, p); !bridges.IsPermanent(err) {
			t.Errorf("from %s: %v, want a permanent error", from, err)
		}
	}
	if reqs := hs.requests(); len(reqs) != 0 {
		t.Errorf("refused senders caused %v", reqs)
	}
}

func TestSendSubscription(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	a := newTestAdapter(t, hs, host)
	host.waitState(t, bridges.Connected)
	hs.reset()
	sub := &event.Subscription{Header: event.Header{
		From: event.Address{Network: event.Matrix, ID: testGhost},
		To:   event.Address{Network: event.Matrix, ID: testUser},
	}, Active: true}
	if id, err := a.Send(context.Background(), sub); id != "" || err != nil {
		t.Errorf("Send = %q, %v; want a no-op", id, err)
	}
	if reqs := hs.requests(); len(reqs) != 0 {
		t.Errorf("subscription caused %v", reqs)
	}
}

// presenceEDU is an m.presence ephemeral event as Synapse pushes it.
func presenceEDU(sender, presence, statusMsg string) string {
	status := ""
	if statusMsg != "" {
		status = fmt.Sprintf(`,"status_msg":%q`, statusMsg)
	}
	return fmt.Sprintf(`{"type":"m.presence","sender":%q,"content":{"presence":%q,"last_active_ago":1234%s}}`,
		sender, presence, status)
}

func TestTransactionPresence(t *testing.T) {
	from := event.Address{Network: event.Matrix, ID: testUser}
	tests := []struct {
		name string
		body string
		want []event.Presence // From, State and Status; To is always zero
	}{
		{
			name: "stable ephemeral",
			body: `{"events":[],"ephemeral":[` + presenceEDU(testUser, "online", "") + `]}`,
			want: []event.Presence{{Header: event.Header{From: from}, State: event.Available}},
		},
		{
			name: "unstable ephemeral",
			body: `{"de.sorunome.msc2409.ephemeral":[` + presenceEDU(testUser, "unavailable", "lunch") + `]}`,
			want: []event.Presence{{Header: event.Header{From: from}, State: event.Away, Status: "lunch"}},
		},
		{
			name: "both lists, as Synapse sends them: read once",
			body: `{"ephemeral":[` + presenceEDU(testUser, "offline", "") + `],"de.sorunome.msc2409.ephemeral":[` +
				presenceEDU(testUser, "offline", "") + `]}`,
			want: []event.Presence{{Header: event.Header{From: from}, State: event.Offline}},
		},
		{
			name: "ghosts, bot and others ignored",
			body: `{"ephemeral":[` + strings.Join([]string{
				presenceEDU(testGhost, "online", ""),
				presenceEDU("@parley:localhost", "online", ""),
				`{"type":"m.typing","room_id":"!dm:localhost","content":{"user_ids":["@alice:localhost"]}}`,
				`{"type":"m.receipt","room_id":"!dm:localhost","content":{}}`,
				presenceEDU("not a user", "online", ""),
				presenceEDU("@dave:localhost", "busy", ""),
				`{"type":"m.presence","sender":7,"content":{"presence":"online"}}`,
				`{"type":"m.presence","sender":"@dave:localhost","content":{"presence":["online"]}}`,
				`{"type":"m.presence","sender":"@dave:localhost","content":null}`,
				`"m.presence"`,
				presenceEDU(testUser, "unavailable", ""),
			}, ",") + `]}`,
			want: []event.Presence{{Header: event.Header{From: from}, State: event.Away}},
		},
		{
			name: "ephemeral not an array",
			body: `{"ephemeral":{"type":"m.presence"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newFakeHS(t, "as-secret")
			host := newFakeHost()
			a := newTestAdapter(t, hs, host)
			if status, code := putTxn(t, a, "p", tt.body); status != 200 {
				t.Fatalf("got %d %s", status, code)
			}
			evts := host.events()
			if len(evts) != len(tt.want) {
				t.Fatalf("dispatched %v, want %v", evts, tt.want)
			}
			for i, e := range evts {
				p, ok := e.(*event.Presence)
				if !ok {
					t.Fatalf("dispatched %T", e)
				}
				w := tt.want[i]
				if p.From != w.From || p.To != (event.Address{}) || p.State != w.State || p.Status != w.Status {
					t.Errorf("dispatched %+v, want %+v (broadcast)", p, w)
				}
			}
		})
	}
}

func TestTransactionPresenceDispatchError(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	linkDM(host)
	a := newTestAdapter(t, hs, host)
	host.setDispatchErr(func(evt event.Event) error {
		if evt.Kind() == event.KindPresence {
			if evt.(*event.Presence).From.ID == testUser {
				return fmt.Errorf("route: %w", bridges.ErrNoRoute)
			}
			return errors.New("queue full")
		}
		return nil
	})
	body := `{"events":[` + textEvent("$1", testUser, testRoom, "hi") + `],"ephemeral":[` +
		presenceEDU(testUser, "online", "") + "," + presenceEDU("@dave:localhost", "online", "") + `]}`
	if status, code := putTxn(t, a, "pe", body); status != 200 {
		t.Fatalf("presence dispatch errors failed the transaction: %d %s", status, code)
	}
	if _, ok := txnRecorded(host.links, "pe"); !ok {
		t.Error("transaction not recorded")
	}
	if evts := host.events(); len(evts) != 1 || evts[0].Kind() != event.KindMessage {
		t.Errorf("dispatched %v, want the message only", evts)
	}
}

func TestParseEphemeral(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		wantP    int
		wantSkip int
	}{
		{"empty", ``, 0, 0},
		{"null", `null`, 0, 0},
		{"one", `[` + presenceEDU(testUser, "online", "x") + `]`, 1, 0},
		{"string", `"x"`, 0, 1},
		{"number entry", `[1,` + presenceEDU(testUser, "online", "") + `]`, 1, 1},
		{"bad type field", `[{"type":5}]`, 0, 1},
		{"bad status_msg", `[{"type":"m.presence","sender":"@a:b","content":{"presence":"online","status_msg":3}}]`, 0, 1},
		{"other types", `[{"type":"m.typing"},{"type":"m.receipt","content":[]}]`, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, skipped := parseEphemeral([]byte(tt.raw))
			if len(p) != tt.wantP || len(skipped) != tt.wantSkip {
				t.Errorf("presence %v skipped %v, want %d and %d", p, skipped, tt.wantP, tt.wantSkip)
			}
		})
	}
}

func TestPresenceRefresh(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	a, err := New(testConfig(hs.URL), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	a.cfg.Listen = "127.0.0.1:0"
	a.refreshing = 20 * time.Millisecond
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
	host.waitState(t, bridges.Connected)
	ctx := context.Background()
	const carol = "@_xmpp_carol=40example.org:localhost"
	if _, err := a.Send(ctx, presenceOfGhost(testGhost, event.Away, "lunch")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Send(ctx, presenceOfGhost(carol, event.Offline, "")); err != nil {
		t.Fatal(err)
	}
	count := func(ghost string) (n int) {
		for _, r := range presenceRequests(hs) {
			if r.Query["user_id"] == ghost {
				if r.Body["presence"] != "unavailable" && ghost == testGhost {
					t.Errorf("refreshed %s with %v", ghost, r.Body)
				}
				n++
			}
		}
		return n
	}
	waitFor(t, "the presence of a ghost away refreshed", func() bool { return count(testGhost) >= 3 })
	if n := count(carol); n != 0 {
		t.Errorf("offline ghost never registered: %d presence requests, want none", n)
	}

	// Once offline, it is no longer refreshed.
	if _, err := a.Send(ctx, presenceOfGhost(testGhost, event.Offline, "")); err != nil {
		t.Fatal(err)
	}
	hs.reset()
	time.Sleep(100 * time.Millisecond)
	if reqs := presenceRequests(hs); len(reqs) != 0 {
		t.Errorf("offline ghosts refreshed: %v", reqs)
	}
}

// TestIntegrationSynapsePresence checks presence both ways against a real
// Synapse: a ghost's presence as a real client sees it, and a real user's
// presence as Synapse pushes it to the appservice (MSC2409). Set
// PARLEY_MEASURE_PRESENCE=1 to also check for 75 s that the refresh keeps a
// ghost online (without it, Synapse set the ghost offline after 34 s).
func TestIntegrationSynapsePresence(t *testing.T) {
	testIntegrationPresence(t, func(t *testing.T, reg string) *peertest.Homeserver {
		return peertest.StartSynapse(t, peertest.HomeserverOptions{Registration: reg})
	}, true)
}

// TestIntegrationDendritePresence records what Dendrite does with its
// default config (presence disabled): Send succeeds, but Dendrite drops the
// PUT, and it pushes no presence to appservices.
func TestIntegrationDendritePresence(t *testing.T) {
	testIntegrationPresence(t, func(t *testing.T, reg string) *peertest.Homeserver {
		return peertest.StartDendrite(t, peertest.HomeserverOptions{Registration: reg})
	}, false)
}

// TestIntegrationDendritePresenceEnabled checks a ghost's presence on
// Dendrite with global.presence.enable_outbound, where a real client reads
// what the ghost set, status_msg cleared included, and that the user of a
// new DM has their presence polled at once (Dendrite pushes none).
func TestIntegrationDendritePresenceEnabled(t *testing.T) {
	a, host, hs, _ := startIntegration(t, func(t *testing.T, reg string) *peertest.Homeserver {
		return peertest.StartDendrite(t, peertest.HomeserverOptions{Registration: reg, Presence: true})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	alice := peertest.ConnectMatrix(t, hs, "alice", "alice-password")
	self := func(want mevent.Presence, status string) func() bool {
		return func() bool {
			got, err := alice.GetPresence(ctx, alice.UserID)
			return err == nil && got.Presence == want && got.StatusMsg == status
		}
	}
	// The first /sync of alice's client (set_presence=offline) sets her
	// offline, and would undo a PUT made before it.
	waitFor(t, "alice's first sync", self(mevent.PresenceOffline, ""))
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: mevent.PresenceUnavailable, StatusMsg: "brb"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's presence stored", self(mevent.PresenceUnavailable, "brb"))
	aliceAddr := event.Address{Network: event.Matrix, ID: alice.UserID.String()}
	bobAddr := event.Address{Network: event.Matrix, ID: testGhost}
	if _, err := a.Send(ctx, &event.Message{Header: event.Header{ID: "p-1", From: bobAddr, To: aliceAddr}, Body: "hi"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's presence polled when her DM appeared", func() bool {
		for _, e := range host.events() {
			if p, ok := e.(*event.Presence); ok && p.From == aliceAddr && p.State == event.Away && p.Status == "brb" {
				return true
			}
		}
		return false
	})
	for _, tt := range []struct {
		state      event.PresenceState
		status     string
		wantState  mevent.Presence
		wantStatus string
	}{
		{event.Away, "lunch", mevent.PresenceUnavailable, "lunch"},
		{event.Available, "", mevent.PresenceOnline, ""},
		{event.OnThePhone, "", mevent.PresenceUnavailable, "On the phone"},
		{event.Offline, "", mevent.PresenceOffline, ""},
	} {
		p := &event.Presence{Header: event.Header{From: bobAddr, To: aliceAddr}, State: tt.state, Status: tt.status}
		if _, err := a.Send(ctx, p); err != nil {
			t.Fatalf("send %s: %v", tt.state, err)
		}
		waitFor(t, fmt.Sprintf("alice sees bob %s %q", tt.wantState, tt.wantStatus), func() bool {
			got, err := alice.GetPresence(ctx, id.UserID(testGhost))
			return err == nil && got.Presence == tt.wantState && got.StatusMsg == tt.wantStatus
		})
	}
}

func testIntegrationPresence(t *testing.T, start func(t *testing.T, registration string) *peertest.Homeserver, synapse bool) {
	a, host, hs, _ := startIntegration(t, start)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	alice := peertest.ConnectMatrix(t, hs, "alice", "alice-password")
	aliceAddr := event.Address{Network: event.Matrix, ID: alice.UserID.String()}
	bobAddr := event.Address{Network: event.Matrix, ID: testGhost}

	// Synapse pushes the presence of users who share a room with a ghost:
	// a DM first.
	if _, err := a.Send(ctx, &event.Message{Header: event.Header{ID: "p-1", From: bobAddr, To: aliceAddr}, Body: "hi"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := alice.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Sender == testGhost }); !ok {
		t.Fatal("alice did not get the message")
	}

	t.Run("ghost presence", func(t *testing.T) {
		for _, tt := range []struct {
			state      event.PresenceState
			status     string
			wantState  mevent.Presence
			wantStatus string
		}{
			{event.OnThePhone, "", mevent.PresenceUnavailable, "On the phone"},
			{event.Away, "lunch", mevent.PresenceUnavailable, "lunch"},
			{event.Available, "", mevent.PresenceOnline, ""},
			{event.Offline, "", mevent.PresenceOffline, ""},
		} {
			p := &event.Presence{Header: event.Header{From: bobAddr, To: aliceAddr}, State: tt.state, Status: tt.status}
			if _, err := a.Send(ctx, p); err != nil {
				t.Fatalf("send %s: %v", tt.state, err)
			}
			if !synapse {
				got, err := alice.GetPresence(ctx, id.UserID(testGhost))
				t.Logf("dendrite: after setting %s %q, alice sees the ghost as %+v (err %v)", tt.wantState, tt.wantStatus, got, err)
				continue
			}
			waitFor(t, fmt.Sprintf("alice sees bob %s %q", tt.wantState, tt.wantStatus), func() bool {
				got, err := alice.GetPresence(ctx, id.UserID(testGhost))
				return err == nil && got.Presence == tt.wantState && got.StatusMsg == tt.wantStatus
			})
		}
	})

	t.Run("user presence", func(t *testing.T) {
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: mevent.PresenceUnavailable, StatusMsg: "brb"}); err != nil {
			t.Fatal(err)
		}
		dispatched := func() bool {
			for _, e := range host.events() {
				if p, ok := e.(*event.Presence); ok && p.From == aliceAddr && p.State == event.Away && p.Status == "brb" {
					if p.To != (event.Address{}) {
						t.Errorf("presence dispatched to %s, want broadcast", p.To)
					}
					return true
				}
			}
			return false
		}
		if !synapse {
			time.Sleep(5 * time.Second)
			if dispatched() {
				t.Log("dendrite: pushed presence to the appservice; update the docs of presence.go")
			} else {
				t.Log("dendrite: no presence pushed to the appservice within 5 s")
			}
			return
		}
		waitFor(t, "alice's presence dispatched", dispatched)
		for _, e := range host.events() {
			if e.Head().From.ID != alice.UserID.String() {
				t.Errorf("dispatched %T from %s", e, e.Head().From)
			}
		}
	})

	if !synapse || os.Getenv("PARLEY_MEASURE_PRESENCE") == "" {
		return
	}
	if _, err := a.Send(ctx, &event.Presence{Header: event.Header{From: bobAddr, To: aliceAddr}, State: event.Available}); err != nil {
		t.Fatal(err)
	}
	for begin := time.Now(); time.Since(begin) < 75*time.Second; time.Sleep(time.Second) {
		got, err := alice.GetPresence(ctx, id.UserID(testGhost))
		if err == nil && got.Presence != mevent.PresenceOnline {
			t.Fatalf("%.0fs after being set online, the ghost is %s", time.Since(begin).Seconds(), got.Presence)
		}
	}
}
