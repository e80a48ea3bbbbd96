package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/internal/peertest"
)

// TestProsodyRestart stops Prosody while a Matrix user keeps writing: parley
// must notice, reconnect by itself when Prosody is back, and deliver what
// was queued meanwhile.
func TestProsodyRestart(t *testing.T) {
	st, _, bob, room := chat(t, "synapse")
	ctx := timeout(t, 2*time.Minute)

	st.prosody.Stop(t)
	waitReadyz(t, st, func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"xmpp":{"state":"reconnecting"`)
	})
	const queued = 5
	for i := range queued {
		if _, err := bob.SendText(ctx, room, fmt.Sprintf("down-%d", i), fmt.Sprintf("while prosody was down %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // parley accepts them and keeps retrying
	st.prosody.Start(t)
	alice := peertest.ConnectXMPP(t, st.prosody, "alice", "alicepass")
	waitReadyz(t, st, func(code int, _ string) bool { return code == http.StatusOK })
	for i := range queued {
		want := fmt.Sprintf("while prosody was down %d", i)
		e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "message" })
		if !ok || e.Body != want {
			t.Fatalf("alice got %+v, want %q in order", e, want)
		}
	}
}

func waitReadyz(t *testing.T, st *stack, ok func(code int, body string) bool) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := st.get("/readyz")
		if ok(code, body) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz still %d %s\n%s", code, body, tail(st.log(), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBadInput checks that bad requests are refused precisely and change
// nothing, and that the conversation goes on afterwards.
func TestBadInput(t *testing.T) {
	st, alice, _, room := chat(t, "synapse")
	ctx := timeout(t, time.Minute)

	txn := func(body string) string {
		return fmt.Sprintf(`{"events":[{"type":"m.room.message","room_id":%q,"sender":"@bob:localhost",
			"event_id":"$%s","origin_server_ts":1700000000000,"content":{"msgtype":"m.text","body":%q}}]}`, room, randomToken(), body)
	}
	put := func(txnID, auth, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPut, st.asURL+"/_matrix/app/v1/transactions/"+txnID, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	tests := []struct {
		name, txnID, auth, body string
		code                    int
		errcode                 string
	}{
		{"wrong hs_token", "forged-1", "not-the-token", txn("forged with a wrong token"), http.StatusForbidden, "M_FORBIDDEN"},
		{"no token", "forged-2", "", txn("forged without a token"), http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"malformed body", "broken-1", st.hsToken, `{"events": [{"type": `, http.StatusBadRequest, "M_NOT_JSON"},
		{"not a transaction", "broken-2", st.hsToken, `["events"]`, http.StatusBadRequest, "M_BAD_JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := put(tc.txnID, tc.auth, tc.body)
			if code != tc.code || !strings.Contains(body, tc.errcode) {
				t.Errorf("got %d %s, want %d %s", code, body, tc.code, tc.errcode)
			}
		})
	}

	// The same request with the right token is bridged: so the refusals
	// above were not for want of a route.
	if code, body := put("genuine-1", st.hsToken, txn("genuine")); code != http.StatusOK {
		t.Fatalf("genuine transaction: %d %s", code, body)
	}
	e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "message" })
	if !ok || e.Body != "genuine" {
		t.Fatalf("alice got %+v: a refused transaction was bridged, or the genuine one was not", e)
	}

	// An address that maps to nobody: the XMPP sender gets an error.
	for _, to := range []string{"nobody@matrix.localhost", "not=zz%localhost@matrix.localhost"} {
		alice.Send(t, to, "lost-"+to, "to nobody", true)
		e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "error" || e.Ev == "receipt" })
		if !ok || e.Ev != "error" || e.Condition != "item-not-found" || bare(e.From) != to {
			t.Errorf("message to %s: got %+v, want an item-not-found error", to, e)
		}
	}
}

// TestWrongComponentSecret: /readyz shows bad credentials, the log says
// why, and parley keeps retrying with backoff.
func TestWrongComponentSecret(t *testing.T) {
	st := newStack(t, stackSettings{homeserver: "synapse", componentSecret: "wrong-secret"})
	st.start(false)
	body := waitReadyz(t, st, func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"xmpp":{"state":"bad_credentials"`)
	})
	if !strings.Contains(body, `"matrix":{"state":"connected"`) {
		t.Errorf("the Matrix side should be unaffected: %s", body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(st.log(), "xmpp component secret refused") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("parley does not retry after a refused secret:\n%s", tail(st.log(), 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
