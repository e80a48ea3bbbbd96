package bridges_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/store"
)

// The addresses of carol, a Matrix user and the YAML identity "carol": XMPP
// users reach her by her ghost JID or by her alias.
const (
	carolMXID  = "carol@hs.example"
	carolGhost = "carol%hs.example@matrix.example.org"
	carolAlias = "carol@matrix.example.org"
)

// identityMap is testMap with carol as a YAML identity that has an alias on
// XMPP.
func identityMap(t testing.TB) *mapping.Map {
	t.Helper()
	m, err := mapping.New(mapping.Config{
		Ghosts: map[event.Network]map[event.Network]string{
			event.Matrix: {event.XMPP: "_xmpp_{user}_{domain}@hs.example"},
			event.XMPP:   {event.Matrix: "{user}%{domain}@matrix.example.org"},
		},
		Aliases:    map[event.Network]string{event.XMPP: "{name}@matrix.example.org"},
		Identities: []mapping.Identity{{Name: "carol", DisplayName: "Carol", Accounts: []string{"matrix:" + carolMXID}}},
	}, map[event.Network]mapping.Codec{event.XMPP: bridgestest.Codec{}, event.Matrix: bridgestest.Codec{}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func matrixMessage(id, from, to, body string) *event.Message {
	return &event.Message{
		Header: event.Header{ID: id, From: event.Address{Network: event.Matrix, ID: from}, To: event.Address{Network: event.Matrix, ID: to}},
		Body:   body,
	}
}

// An XMPP user who writes to an identity's ghost JID gets the answers from
// that JID, not from the identity's alias (their client would open a second
// chat); one who writes to the alias gets them from the alias. The address is
// the one the conversation last used, and it survives a restart.
func TestAnswersComeFromTheAddressWrittenTo(t *testing.T) {
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ctx := context.Background()
	h := start(t, st)
	h.router.SetMapping(identityMap(t))
	const aliceGhost = "_xmpp_alice_example.org@hs.example"
	seq := 0
	// exchange: alice writes to `to` (if not ""), carol answers; it returns
	// the address alice sees the answer come from.
	exchange := func(h *harness, to string) string {
		t.Helper()
		seq++
		if to != "" {
			n := len(h.matrix.Sent())
			if err := h.router.Dispatch(ctx, xmppMessage(fmt.Sprint("a", seq), "alice@example.org", to, "hi")); err != nil {
				t.Fatal(err)
			}
			if got := h.matrix.WaitSent(waitCtx(t), n+1); len(got) != n+1 || got[n].Head().To.ID != carolMXID {
				t.Fatalf("carol did not get alice's message to %s: %+v", to, got)
			}
		}
		n := len(h.xmpp.Sent())
		if err := h.router.Dispatch(ctx, matrixMessage(fmt.Sprint("c", seq), carolMXID, aliceGhost, "hello")); err != nil {
			t.Fatal(err)
		}
		got := h.xmpp.WaitSent(waitCtx(t), n+1)
		if len(got) != n+1 {
			t.Fatalf("alice got nothing from carol")
		}
		if got[n].Head().To.ID != "alice@example.org" {
			t.Fatalf("carol's answer went to %v", got[n].Head().To)
		}
		return got[n].Head().From.ID
	}

	if from := exchange(h, carolGhost); from != carolGhost {
		t.Errorf("alice wrote to %s and got the answer from %s", carolGhost, from)
	}
	if from := exchange(h, carolAlias); from != carolAlias {
		t.Errorf("alice wrote to %s and got the answer from %s", carolAlias, from)
	}
	if from := exchange(h, carolGhost); from != carolGhost {
		t.Errorf("alice wrote to %s again and got the answer from %s", carolGhost, from)
	}

	// After a restart, carol's next answer still comes from the ghost JID.
	stopCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_ = h.router.Stop(stopCtx)
	h2 := start(t, st)
	h2.router.SetMapping(identityMap(t))
	if from := exchange(h2, ""); from != carolGhost {
		t.Errorf("after a restart carol's answer came from %s, want %s", from, carolGhost)
	}

	// Someone carol writes to first sees her alias.
	if err := h2.router.Dispatch(ctx, matrixMessage("c-dave", carolMXID, "_xmpp_dave_example.org@hs.example", "hello dave")); err != nil {
		t.Fatal(err)
	}
	got := h2.xmpp.WaitSent(waitCtx(t), 2)
	if len(got) != 2 || got[1].Head().To.ID != "dave@example.org" || got[1].Head().From.ID != carolAlias {
		t.Errorf("dave got %+v, want it from %s", got, carolAlias)
	}
}

// An XMPP user whose roster holds an identity's ghost JID sees its presence
// come from that JID.
func TestPresenceComesFromTheAddressSubscribedTo(t *testing.T) {
	h := start(t, store.NewMemory())
	h.router.SetMapping(identityMap(t))
	ctx := context.Background()
	if err := h.router.Dispatch(ctx, subscription("bob@example.org", carolGhost, true)); err != nil {
		t.Fatal(err)
	}
	if err := h.router.Dispatch(ctx, subscription("dave@example.org", carolAlias, true)); err != nil {
		t.Fatal(err)
	}
	if err := h.router.Dispatch(ctx, broadcast(carolMXID, event.Away)); err != nil {
		t.Fatal(err)
	}
	ps := waitPresences(t, h.xmpp, 2)
	if len(ps) != 2 {
		t.Fatalf("watchers got %+v", ps)
	}
	want := map[string]string{"bob@example.org": carolGhost, "dave@example.org": carolAlias}
	for _, p := range ps {
		if p.From.ID != want[p.To.ID] {
			t.Errorf("%s got carol's presence from %s, want %s", p.To.ID, p.From.ID, want[p.To.ID])
		}
	}
}

// When carol's side asks an XMPP user for their presence (a Matrix user
// with a DM watches the ghost), the request comes from the address the user
// chats with, so that their roster gets the same contact as their chat. A
// user who chats with one address and has another in the roster gets
// messages from the first and presence from the second.
func TestSubscriptionRequestAndPresenceFollowTheUser(t *testing.T) {
	h := start(t, store.NewMemory())
	h.router.SetMapping(identityMap(t))
	ctx := context.Background()
	const aliceGhost = "_xmpp_alice_example.org@hs.example"
	if err := h.router.Dispatch(ctx, xmppMessage("a1", "alice@example.org", carolGhost, "hi")); err != nil {
		t.Fatal(err)
	}
	h.matrix.WaitSent(waitCtx(t), 1)
	carolWatches := &event.Subscription{Header: event.Header{From: event.Address{Network: event.Matrix, ID: carolMXID},
		To: event.Address{Network: event.Matrix, ID: aliceGhost}}, Active: true}
	if err := h.router.Dispatch(ctx, carolWatches); err != nil {
		t.Fatal(err)
	}
	sent := h.xmpp.WaitSent(waitCtx(t), 1)
	if s, ok := sent[0].(*event.Subscription); !ok || s.From.ID != carolGhost || s.To.ID != "alice@example.org" {
		t.Fatalf("alice was asked for her presence by %+v, want %s", sent[0], carolGhost)
	}

	// alice has carol's alias in her roster, and chats with the ghost.
	if err := h.router.Dispatch(ctx, subscription("alice@example.org", carolAlias, true)); err != nil {
		t.Fatal(err)
	}
	if err := h.router.Dispatch(ctx, broadcast(carolMXID, event.Away)); err != nil {
		t.Fatal(err)
	}
	if ps := waitPresences(t, h.xmpp, 1); len(ps) != 1 || ps[0].From.ID != carolAlias {
		t.Errorf("alice got carol's presence as %+v, want it from %s (her roster)", ps, carolAlias)
	}
	n := len(h.xmpp.Sent())
	if err := h.router.Dispatch(ctx, matrixMessage("c1", carolMXID, aliceGhost, "hello")); err != nil {
		t.Fatal(err)
	}
	if got := h.xmpp.WaitSent(waitCtx(t), n+1); len(got) != n+1 || got[n].Head().From.ID != carolGhost {
		t.Errorf("alice got carol's answer as %+v, want it from %s (her chat)", got[n:], carolGhost)
	}
}
