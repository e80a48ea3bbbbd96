package bridges_test

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/store"
)

// sipPortalMap has one portal of three rooms: a Matrix room, a MUC and
// the SIP room sip:team@pbx, whose YAML phones are 1001 and 1002.
func sipPortalMap(t testing.TB) *mapping.Map {
	t.Helper()
	m, err := mapping.New(mapping.Config{
		Ghosts: map[event.Network]map[event.Network]string{
			event.Matrix: {event.XMPP: "_xmpp_{user}_{domain}@hs.example", event.SIP: "_sip_{user}_{domain}@hs.example"},
			event.XMPP:   {event.Matrix: "{user}%{domain}@matrix.example.org", event.SIP: "{user}+{domain}@matrix.example.org"},
		},
		Portals: []mapping.Portal{{Matrix: "!team:hs.example", XMPP: "team@muc.example.org", SIP: "sip:team@pbx",
			Phones: []string{"sip:1001@pbx", "sip:1002@pbx"}}},
	}, map[event.Network]mapping.Codec{event.XMPP: bridgestest.Codec{}, event.Matrix: bridgestest.Codec{}, event.SIP: bridgestest.Codec{}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type sipHarness struct {
	router            *bridges.Router
	xmpp, matrix, sip *bridgestest.Network
}

func startSIPPortal(t testing.TB, st store.Store, sipSend func(context.Context, event.Event) (string, error)) *sipHarness {
	t.Helper()
	h := &sipHarness{xmpp: bridgestest.NewNetwork(event.XMPP), matrix: bridgestest.NewNetwork(event.Matrix), sip: bridgestest.NewNetwork(event.SIP)}
	h.sip.SendFunc = sipSend
	h.router = bridges.NewRouter(st, sipPortalMap(t), bridges.WithRetry(bridges.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}, time.Hour))
	for _, n := range []*bridgestest.Network{h.xmpp, h.matrix, h.sip} {
		h.router.Add(n)
	}
	if err := h.router.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = h.router.Stop(ctx)
	})
	return h
}

var (
	sipRoom = event.Address{Network: event.SIP, ID: "sip:team@pbx"}
	mucRoom = event.Address{Network: event.XMPP, ID: "team@muc.example.org"}
)

func roomPhone(n string) event.Address {
	return event.Address{Network: event.SIP, ID: "sip:" + n + "@pbx"}
}

// delivered describes what a fake network was sent, "to kind from name
// body", in order.
func delivered(evts []event.Event) []string {
	var out []string
	for _, e := range evts {
		h := e.Head()
		s := h.To.ID + " " + e.Kind().String() + " " + h.From.ID
		switch e := e.(type) {
		case *event.Message:
			s += " " + h.FromName + ": " + e.Body
		case *event.Member:
			s += " " + e.Change.String()
		}
		if !h.Room {
			s += " (not in a room)"
		}
		out = append(out, s)
	}
	return out
}

// perPhone sorts what the phones got by phone, keeping each phone's order.
func perPhone(evts []event.Event) string {
	d := delivered(evts)
	sort.SliceStable(d, func(i, j int) bool { return strings.Fields(d[i])[0] < strings.Fields(d[j])[0] })
	return strings.Join(d, "\n")
}

func post(id string, from, room event.Address, body string) *event.Message {
	return &event.Message{Header: event.Header{ID: id, From: from, To: room, Room: true, FromName: strings.ToUpper(id[:1])}, Body: body}
}

func memberChange(id string, from event.Address, c event.MemberChange) *event.Member {
	return &event.Member{Header: event.Header{ID: id, From: from, To: sipRoom, Room: true}, Change: c}
}

func wantLines(t *testing.T, what, got string, want ...string) {
	t.Helper()
	if w := strings.Join(want, "\n"); got != w {
		t.Errorf("%s:\n%s\nwant:\n%s", what, got, w)
	}
}

// A portal with a SIP room: a post from any side goes to the other rooms
// and to every phone in the SIP room but its poster, each phone its own
// delivery from the room with the speaker's name; a phone that writes
// joins first (its ghost joins the other rooms) and hears of it; /leave
// stops delivery, and membership survives a restart.
func TestRoomPostsReachThePhones(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory()
	h := startSIPPortal(t, st, nil)
	alice := event.Address{Network: event.XMPP, ID: "alice@example.org"}

	if err := h.router.Dispatch(ctx, post("a1", alice, mucRoom, "hello phones")); err != nil {
		t.Fatal(err)
	}
	wantLines(t, "the phones after alice's post", perPhone(h.sip.WaitSent(waitCtx(t), 2)),
		"sip:1001@pbx message sip:team@pbx A: hello phones",
		"sip:1002@pbx message sip:team@pbx A: hello phones")
	if got := delivered(h.matrix.WaitSent(waitCtx(t), 1)); len(got) != 1 || got[0] != "!team:hs.example message _xmpp_alice_example.org@hs.example A: hello phones" {
		t.Errorf("matrix got %q", got)
	}

	// 1003 writes first: it joins, everywhere, before its post.
	if err := h.router.Dispatch(ctx, post("p1", roomPhone("1003"), sipRoom, "hi, 1003 here")); err != nil {
		t.Fatal(err)
	}
	wantLines(t, "the MUC", strings.Join(delivered(h.xmpp.WaitSent(waitCtx(t), 2)), "\n"),
		"team@muc.example.org member sip=3a1003+pbx@matrix.example.org joined",
		"team@muc.example.org message sip=3a1003+pbx@matrix.example.org P: hi, 1003 here")
	wantLines(t, "the Matrix room", strings.Join(delivered(h.matrix.WaitSent(waitCtx(t), 3))[1:], "\n"),
		"!team:hs.example member _sip_sip=3a1003_pbx@hs.example joined",
		"!team:hs.example message _sip_sip=3a1003_pbx@hs.example P: hi, 1003 here")
	wantLines(t, "the phones after 1003's post", perPhone(h.sip.WaitSent(waitCtx(t), 5)[2:]),
		"sip:1001@pbx message sip:team@pbx P: hi, 1003 here",
		"sip:1002@pbx message sip:team@pbx P: hi, 1003 here",
		"sip:1003@pbx member sip:team@pbx joined")

	// 1001 leaves: its ghost leaves the other rooms, and it hears no more.
	if err := h.router.Dispatch(ctx, memberChange("l1", roomPhone("1001"), event.MemberLeft)); err != nil {
		t.Fatal(err)
	}
	if got := delivered(h.xmpp.WaitSent(waitCtx(t), 3)); got[2] != "team@muc.example.org member sip=3a1001+pbx@matrix.example.org left" {
		t.Errorf("the MUC got %q", got[2])
	}
	if err := h.router.Dispatch(ctx, post("a2", alice, mucRoom, "who is left?")); err != nil {
		t.Fatal(err)
	}
	wantLines(t, "the phones after 1001 left", perPhone(h.sip.WaitSent(waitCtx(t), 8)[5:]),
		"sip:1001@pbx member sip:team@pbx left",
		"sip:1002@pbx message sip:team@pbx A: who is left?",
		"sip:1003@pbx message sip:team@pbx A: who is left?")
	// Leaving twice, or joining as a member, is only confirmed.
	if err := h.router.Dispatch(ctx, memberChange("l2", roomPhone("1001"), event.MemberLeft)); err != nil {
		t.Fatal(err)
	}
	if got := delivered(h.sip.WaitSent(waitCtx(t), 9)); got[8] != "sip:1001@pbx member sip:team@pbx left" {
		t.Errorf("a second /leave: %q", got[8:])
	}
	// A retransmission is a duplicate.
	if err := h.router.Dispatch(ctx, post("a2", alice, mucRoom, "who is left?")); err != nil {
		t.Fatal(err)
	}
	if err := h.router.Dispatch(ctx, memberChange("r1", roomPhone("1002"), event.MemberRenamed)); !errors.Is(err, bridges.ErrRefused) {
		t.Errorf("a phone's rename: %v, want ErrRefused", err)
	}

	// After a restart, 1001 is still out and 1003 still in.
	stopCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := h.router.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	if n := len(h.xmpp.Sent()) + len(h.matrix.Sent()) + len(h.sip.Sent()); n != 3+5+9 {
		t.Errorf("%d deliveries in all, want 17 (a duplicate or a confirmation too many?)", n)
	}
	h = startSIPPortal(t, st, nil)
	if err := h.router.Dispatch(ctx, post("a3", alice, mucRoom, "after the restart")); err != nil {
		t.Fatal(err)
	}
	wantLines(t, "the phones after a restart", perPhone(h.sip.WaitSent(waitCtx(t), 2)),
		"sip:1002@pbx message sip:team@pbx A: after the restart",
		"sip:1003@pbx message sip:team@pbx A: after the restart")

	// Who is in the room: those seen on the other sides, then the phones.
	roster := func() string {
		t.Helper()
		members, err := h.router.RoomMembers(ctx, sipRoom)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range members {
			out = append(out, m.Address.String()+"="+m.Name)
		}
		return strings.Join(out, " ")
	}
	wantLines(t, "the roster", roster(), "xmpp:alice@example.org=A sip:sip:1002@pbx= sip:sip:1003@pbx=P")
	bob := event.Address{Network: event.XMPP, ID: "bob@example.org"}
	for _, c := range []event.MemberChange{event.MemberJoined, event.MemberLeft} {
		change := &event.Member{Header: event.Header{ID: "b-" + c.String(), From: bob, To: mucRoom, Room: true}, Change: c, Name: "Bob"}
		if err := h.router.Dispatch(ctx, change); err != nil {
			t.Fatal(err)
		}
		if c == event.MemberJoined {
			wantLines(t, "the roster with bob", roster(), "xmpp:alice@example.org=A xmpp:bob@example.org=Bob sip:sip:1002@pbx= sip:sip:1003@pbx=P")
		}
	}
	wantLines(t, "the roster after bob left", roster(), "xmpp:alice@example.org=A sip:sip:1002@pbx= sip:sip:1003@pbx=P")
	// A topic goes to the other rooms, not to the phones.
	n := len(h.sip.Sent())
	topic := &event.Topic{Header: event.Header{ID: "t1", From: alice, To: mucRoom, Room: true}, Text: "lunch plans"}
	if err := h.router.Dispatch(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if err := h.router.Dispatch(ctx, post("a4", alice, mucRoom, "after the topic")); err != nil {
		t.Fatal(err)
	}
	wantLines(t, "the phones after a topic", perPhone(h.sip.WaitSent(waitCtx(t), n+2)[n:]),
		"sip:1002@pbx message sip:team@pbx A: after the topic",
		"sip:1003@pbx message sip:team@pbx A: after the topic")
	if err := h.router.Dispatch(ctx, &event.Topic{Header: event.Header{ID: "t2", From: roomPhone("1002"), To: sipRoom, Room: true}, Text: "x"}); !errors.Is(err, bridges.ErrRefused) {
		t.Errorf("a phone's topic: %v, want ErrRefused", err)
	}
	if _, err := h.router.RoomMembers(ctx, mucRoom); !errors.Is(err, bridges.ErrNoRoute) {
		t.Errorf("RoomMembers of the MUC: %v, want ErrNoRoute", err)
	}
}

// One unreachable phone stalls no other, and its author is not told of
// it; a phone's post that a room refuses is reported to the phone.
func TestUnreachablePhoneStallsNoOne(t *testing.T) {
	ctx := context.Background()
	var tries atomic.Int32
	h := startSIPPortal(t, store.NewMemory(), func(_ context.Context, e event.Event) (string, error) {
		if e.Head().To == roomPhone("1001") {
			if tries.Add(1) < 3 {
				return "", errors.New("no contact registered")
			}
			return "", bridges.Permanent(errors.New("404 Not Found"))
		}
		return "", nil
	})
	alice := event.Address{Network: event.XMPP, ID: "alice@example.org"}
	for _, id := range []string{"a1", "a2", "a3"} {
		if err := h.router.Dispatch(ctx, post(id, alice, mucRoom, id)); err != nil {
			t.Fatal(err)
		}
	}
	wantLines(t, "1002's posts", perPhone(h.sip.WaitSent(waitCtx(t), 3)),
		"sip:1002@pbx message sip:team@pbx A: a1",
		"sip:1002@pbx message sip:team@pbx A: a2",
		"sip:1002@pbx message sip:team@pbx A: a3")
	h.matrix.WaitSent(waitCtx(t), 3)
	time.Sleep(50 * time.Millisecond)
	for _, e := range h.xmpp.Sent() {
		t.Errorf("alice was told %#v", e)
	}

	h.matrix.SendFunc = func(_ context.Context, e event.Event) (string, error) {
		return "", bridges.Permanent(errors.New("M_FORBIDDEN: not allowed to post"))
	}
	if err := h.router.Dispatch(ctx, post("p1", roomPhone("1002"), sipRoom, "may I?")); err != nil {
		t.Fatal(err)
	}
	for _, e := range h.sip.WaitSent(waitCtx(t), 4) {
		if f, ok := e.(*event.Failure); ok {
			if f.To != roomPhone("1002") || f.From != sipRoom || !strings.Contains(f.Reason, "M_FORBIDDEN") {
				t.Errorf("the failure went out as %+v", f)
			}
			return
		}
	}
	t.Errorf("1002 was not told its post failed: %q", delivered(h.sip.Sent()))
}
