package bridges_test

import (
	"context"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/store"
)

// A delivered message links its source ID with the ID its destination gave
// the copy; an adapter links another ID of its own (a MUC's stanza-id); each
// finds the others, across networks.
func TestMessageIDsOfADeliveredPost(t *testing.T) {
	m, err := mapping.New(mapping.Config{
		Ghosts: map[event.Network]map[event.Network]string{
			event.Matrix: {event.XMPP: "_xmpp_{user}_{domain}@hs.example"},
			event.XMPP:   {event.Matrix: "{user}%{domain}@matrix.example.org"},
		},
		Portals: []mapping.Portal{{Matrix: "!team:hs.example", XMPP: "team@muc.example.org"}},
	}, map[event.Network]mapping.Codec{event.XMPP: bridgestest.Codec{}, event.Matrix: bridgestest.Codec{}})
	if err != nil {
		t.Fatal(err)
	}
	h := startWith(t, store.NewMemory(), m)
	h.xmpp.SendFunc = func(_ context.Context, evt event.Event) (string, error) { return "parley-" + evt.Head().ID, nil }
	post := &event.Message{Header: event.Header{ID: "$e1", From: event.Address{Network: event.Matrix, ID: "alice@hs.example"},
		To: event.Address{Network: event.Matrix, ID: "!team:hs.example"}, Room: true}, Body: "hi"}
	if err := h.router.Dispatch(context.Background(), post); err != nil {
		t.Fatal(err)
	}
	h.xmpp.WaitSent(waitCtx(t), 1)
	lookup := func(n event.Network, id string, on event.Network) string {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			got, ok, err := h.router.MessageID(context.Background(), n, id, on)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				return got
			}
		}
		return ""
	}
	if got := lookup(event.Matrix, "$e1", event.XMPP); got != "parley-$e1" {
		t.Errorf("the XMPP ID of $e1 is %q", got)
	}
	if err := h.router.SameMessage(context.Background(), event.XMPP, "team@muc.example.org/sid-1", "parley-$e1"); err != nil {
		t.Fatal(err)
	}
	if got := lookup(event.XMPP, "team@muc.example.org/sid-1", event.Matrix); got != "$e1" {
		t.Errorf("the Matrix ID of the MUC's stanza-id is %q", got)
	}
	if got := lookup(event.XMPP, "parley-$e1", event.XMPP); got != "team@muc.example.org/sid-1" {
		t.Errorf("the MUC's stanza-id of Parley's post is %q", got)
	}
}
