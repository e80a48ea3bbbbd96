package bridges_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/store"
)

func testMap(t testing.TB) *mapping.Map {
	t.Helper()
	m, err := mapping.New(mapping.Config{
		Ghosts: map[event.Network]map[event.Network]string{
			event.Matrix: {event.XMPP: "_xmpp_{user}_{domain}@hs.example"},
			event.XMPP:   {event.Matrix: "{user}%{domain}@matrix.example.org"},
		},
	}, map[event.Network]mapping.Codec{event.XMPP: bridgestest.Codec{}, event.Matrix: bridgestest.Codec{}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type harness struct {
	router       *bridges.Router
	xmpp, matrix *bridgestest.Network
	store        store.Store
}

func start(t testing.TB, st store.Store, opts ...bridges.Option) *harness {
	t.Helper()
	return startWith(t, st, testMap(t), opts...)
}

// startWith is start with the mapping m.
func startWith(t testing.TB, st store.Store, m *mapping.Map, opts ...bridges.Option) *harness {
	t.Helper()
	h := &harness{xmpp: bridgestest.NewNetwork(event.XMPP), matrix: bridgestest.NewNetwork(event.Matrix), store: st}
	opts = append([]bridges.Option{bridges.WithRetry(bridges.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}, time.Hour)}, opts...)
	h.router = bridges.NewRouter(st, m, opts...)
	h.router.Add(h.xmpp)
	h.router.Add(h.matrix)
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

func xmppMessage(id, from, to, body string) *event.Message {
	return &event.Message{
		Header: event.Header{ID: id, From: event.Address{Network: event.XMPP, ID: from}, To: event.Address{Network: event.XMPP, ID: to}},
		Body:   body,
	}
}

func waitCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDispatchTranslatesAndKeepsOrder(t *testing.T) {
	h := start(t, store.NewMemory())
	const n = 200
	for i := range n {
		from := fmt.Sprintf("user%d@example.org", i%3)
		if err := h.router.Dispatch(context.Background(), xmppMessage(fmt.Sprint(i), from, "carol%hs.example@matrix.example.org", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	sent := h.matrix.WaitSent(waitCtx(t), n)
	if len(sent) != n {
		t.Fatalf("delivered %d of %d", len(sent), n)
	}
	last := map[string]int{}
	for _, e := range sent {
		m := e.(*event.Message)
		if m.To != (event.Address{Network: event.Matrix, ID: "carol@hs.example"}) {
			t.Fatalf("To = %v", m.To)
		}
		var i int
		_, _ = fmt.Sscan(m.Body, &i)
		if prev, ok := last[m.From.ID]; ok && i < prev {
			t.Fatalf("conversation of %s reordered: %d after %d", m.From.ID, i, prev)
		}
		last[m.From.ID] = i
		if m.FromName == "" {
			t.Errorf("FromName not set")
		}
	}
	if len(last) != 3 {
		t.Errorf("senders = %v, want 3 ghosts", last)
	}
}

func TestDispatchErrors(t *testing.T) {
	h := start(t, store.NewMemory())
	err := h.router.Dispatch(context.Background(), xmppMessage("1", "bob@example.org", "carol@example.org", "hi"))
	if !errors.Is(err, bridges.ErrNoRoute) {
		t.Errorf("to a non-ghost: err = %v, want ErrNoRoute", err)
	}
	err = h.router.Dispatch(context.Background(), xmppMessage("2", "x%y@matrix.example.org", "carol%hs.example@matrix.example.org", "hi"))
	if !errors.Is(err, bridges.ErrRefused) {
		t.Errorf("from a ghost: err = %v, want ErrRefused", err)
	}
}

func TestDuplicatesDeliveredOnce(t *testing.T) {
	h := start(t, store.NewMemory())
	for range 3 {
		if err := h.router.Dispatch(context.Background(), xmppMessage("same", "bob@example.org", "carol%hs.example@matrix.example.org", "hi")); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.router.Dispatch(context.Background(), xmppMessage("other", "bob@example.org", "carol%hs.example@matrix.example.org", "end")); err != nil {
		t.Fatal(err)
	}
	if sent := h.matrix.WaitSent(waitCtx(t), 2); len(sent) != 2 {
		t.Fatalf("delivered %d events, want 2", len(sent))
	}
}

func TestTransientFailureIsRetriedInOrder(t *testing.T) {
	var calls atomic.Int32
	h := start(t, store.NewMemory())
	h.matrix.SendFunc = func(_ context.Context, e event.Event) (string, error) {
		if calls.Add(1) <= 3 {
			return "", errors.New("homeserver unreachable")
		}
		return e.Head().ID, nil
	}
	for i := range 5 {
		if err := h.router.Dispatch(context.Background(), xmppMessage(fmt.Sprint(i), "bob@example.org", "carol%hs.example@matrix.example.org", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	sent := h.matrix.WaitSent(waitCtx(t), 5)
	for i, e := range sent {
		if e.(*event.Message).Body != fmt.Sprint(i) {
			t.Fatalf("delivery %d is %q", i, e.(*event.Message).Body)
		}
	}
}

func TestPermanentFailureReachesSender(t *testing.T) {
	h := start(t, store.NewMemory())
	h.matrix.SendFunc = func(context.Context, event.Event) (string, error) {
		return "", bridges.Permanent(errors.New("M_FORBIDDEN: not in room"))
	}
	if err := h.router.Dispatch(context.Background(), xmppMessage("m1", "bob@example.org", "carol%hs.example@matrix.example.org", "hi")); err != nil {
		t.Fatal(err)
	}
	sent := h.xmpp.WaitSent(waitCtx(t), 1)
	if len(sent) != 1 {
		t.Fatal("no failure report reached the sender")
	}
	f, ok := sent[0].(*event.Failure)
	if !ok {
		t.Fatalf("sender got %T", sent[0])
	}
	want := event.Header{ID: "failure/m1", From: event.Address{Network: event.XMPP, ID: "carol%hs.example@matrix.example.org"},
		To: event.Address{Network: event.XMPP, ID: "bob@example.org"}}
	if f.ID != want.ID || f.From != want.From || f.To != want.To || f.EventID != "m1" || f.Reason == "" {
		t.Errorf("failure = %+v", f)
	}
}

func TestSlowConversationDoesNotBlockOthers(t *testing.T) {
	h := start(t, store.NewMemory())
	release := make(chan struct{})
	h.matrix.SendFunc = func(ctx context.Context, e event.Event) (string, error) {
		if e.Head().To.ID == "slow@hs.example" {
			select {
			case <-release:
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		return e.Head().ID, nil
	}
	defer close(release)
	_ = h.router.Dispatch(context.Background(), xmppMessage("1", "bob@example.org", "slow%hs.example@matrix.example.org", "stuck"))
	_ = h.router.Dispatch(context.Background(), xmppMessage("2", "bob@example.org", "fast%hs.example@matrix.example.org", "flows"))
	sent := h.matrix.WaitSent(waitCtx(t), 1)
	if len(sent) != 1 || sent[0].Head().To.ID != "fast@hs.example" {
		t.Fatalf("sent = %v", sent)
	}
}

// TestOutboxSurvivesRestart stops the router while the destination is down
// and checks that a new router on the same SQLite file delivers everything.
func TestOutboxSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "parley.db")
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	down := bridgestest.NewNetwork(event.Matrix)
	down.SendFunc = func(context.Context, event.Event) (string, error) { return "", errors.New("down") }
	r := bridges.NewRouter(st, testMap(t), bridges.WithRetry(bridges.Backoff{Min: time.Millisecond, Max: time.Millisecond}, time.Hour))
	r.Add(bridgestest.NewNetwork(event.XMPP))
	r.Add(down)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := r.Dispatch(context.Background(), xmppMessage(fmt.Sprint(i), "bob@example.org", "carol%hs.example@matrix.example.org", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_ = r.Stop(ctx)
	cancel()
	_ = st.Close()

	st, err = store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	h := start(t, st)
	sent := h.matrix.WaitSent(waitCtx(t), 10)
	if len(sent) != 10 {
		t.Fatalf("after restart delivered %d of 10", len(sent))
	}
	for i, e := range sent {
		if e.(*event.Message).Body != fmt.Sprint(i) {
			t.Fatalf("delivery %d is %q", i, e.(*event.Message).Body)
		}
	}
	// A retransmission of an event accepted before the restart is a duplicate.
	if err := h.router.Dispatch(context.Background(), xmppMessage("3", "bob@example.org", "carol%hs.example@matrix.example.org", "3")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if n := len(h.matrix.Sent()); n != 10 {
		t.Errorf("duplicate was delivered again: %d events", n)
	}
}

func TestStopIsBounded(t *testing.T) {
	h := start(t, store.NewMemory())
	h.matrix.SendFunc = func(ctx context.Context, _ event.Event) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	}
	_ = h.router.Dispatch(context.Background(), xmppMessage("1", "bob@example.org", "carol%hs.example@matrix.example.org", "hi"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { _ = h.router.Stop(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return after its context ended")
	}
	if err := h.router.Dispatch(context.Background(), xmppMessage("2", "bob@example.org", "carol%hs.example@matrix.example.org", "late")); !errors.Is(err, bridges.ErrStopping) {
		t.Errorf("Dispatch after Stop: %v", err)
	}
	pending, _ := h.store.Pending(context.Background())
	if len(pending) != 1 {
		t.Errorf("outbox holds %d entries after an interrupted delivery, want 1", len(pending))
	}
}

// TestReachableCutsTheRetryWaitShort: an offline recipient's messages wait
// in backoff; Reachable delivers them at once.
func TestReachableCutsTheRetryWaitShort(t *testing.T) {
	h := start(t, store.NewMemory(), bridges.WithRetry(bridges.Backoff{Min: time.Hour, Max: time.Hour}, 48*time.Hour))
	var online atomic.Bool
	h.matrix.SendFunc = func(_ context.Context, e event.Event) (string, error) {
		if !online.Load() {
			return "", errors.New("offline")
		}
		return e.Head().ID, nil
	}
	if err := h.router.Dispatch(context.Background(), xmppMessage("1", "bob@example.org", "carol%hs.example@matrix.example.org", "hi")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // the first Send fails; the next waits an hour
	online.Store(true)
	h.router.Reachable(event.Address{Network: event.Matrix, ID: "someone-else@hs.example"})
	time.Sleep(20 * time.Millisecond)
	if n := len(h.matrix.Sent()); n != 0 {
		t.Fatalf("waking another recipient delivered %d events", n)
	}
	h.router.Reachable(event.Address{Network: event.Matrix, ID: "carol@hs.example"})
	if sent := h.matrix.WaitSent(waitCtx(t), 1); len(sent) != 1 {
		t.Fatal("Reachable did not end the retry wait")
	}
}

// A post in a portal room goes to the portal's room on the other network,
// from the poster's ghost there, in the order of the room across senders;
// a ghost's own post coming back and a room in no portal are refused.
func TestRoomMessagesCrossThePortal(t *testing.T) {
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
	if rooms := h.router.Rooms(event.XMPP); len(rooms) != 1 || rooms[0].ID != "team@muc.example.org" {
		t.Fatalf("Rooms(xmpp) = %v", rooms)
	}
	muc := event.Address{Network: event.XMPP, ID: "team@muc.example.org"}
	post := func(id, from string, to event.Address) error {
		return h.router.Dispatch(context.Background(), &event.Message{
			Header: event.Header{ID: id, From: event.Address{Network: event.XMPP, ID: from}, To: to, Room: true},
			Body:   id,
		})
	}
	const n = 60
	for i := range n {
		if err := post(fmt.Sprint(i), fmt.Sprintf("user%d@example.org", i%3), muc); err != nil {
			t.Fatal(err)
		}
	}
	sent := h.matrix.WaitSent(waitCtx(t), n)
	if len(sent) != n {
		t.Fatalf("delivered %d of %d", len(sent), n)
	}
	for i, e := range sent {
		msg := e.(*event.Message)
		if !msg.Room || msg.To != (event.Address{Network: event.Matrix, ID: "!team:hs.example"}) || msg.Body != fmt.Sprint(i) {
			t.Fatalf("post %d went out as %+v", i, msg.Header)
		}
		if want := fmt.Sprintf("_xmpp_user%d_example.org@hs.example", i%3); msg.From.ID != want || msg.FromName == "" {
			t.Fatalf("post %d from %s (%q), want %s", i, msg.From.ID, msg.FromName, want)
		}
	}
	// A room that hides real JIDs names a participant by room and nickname;
	// the ghost stands for that nickname in that room.
	if err := post("anon", "team@muc.example.org/Carol", muc); err != nil {
		t.Fatalf("a participant known by nickname: %v", err)
	}
	if got := h.matrix.WaitSent(waitCtx(t), n+1); len(got) != n+1 || got[n].Head().From.ID != "_xmpp_team=2f=43arol_muc.example.org@hs.example" {
		t.Errorf("the nickname's post went out as %+v", got[len(got)-1].Head())
	}
	if err := post("echo", "bob%hs.example@matrix.example.org", muc); !errors.Is(err, bridges.ErrRefused) {
		t.Errorf("a ghost's post: %v, want ErrRefused", err)
	}
	if err := post("lost", "alice@example.org", event.Address{Network: event.XMPP, ID: "other@muc.example.org"}); !errors.Is(err, bridges.ErrNoRoute) {
		t.Errorf("a post in a room in no portal: %v, want ErrNoRoute", err)
	}
}

// Joins, leaves and renames in a portal room cross it like posts, in the
// room's order, from the participant's ghost; a YAML identity keeps its own
// name; a membership change outside a room is refused.
func TestRoomMembershipCrossesThePortal(t *testing.T) {
	m, err := mapping.New(mapping.Config{
		Ghosts: map[event.Network]map[event.Network]string{
			event.Matrix: {event.XMPP: "_xmpp_{user}_{domain}@hs.example"},
			event.XMPP:   {event.Matrix: "{user}%{domain}@matrix.example.org"},
		},
		Identities: []mapping.Identity{{Name: "dana", DisplayName: "Dana D.", Accounts: []string{"xmpp:dana@example.org"}}},
		Aliases:    map[event.Network]string{event.Matrix: "dana_{name}@hs.example"},
		Portals:    []mapping.Portal{{Matrix: "!team:hs.example", XMPP: "team@muc.example.org"}},
	}, map[event.Network]mapping.Codec{event.XMPP: bridgestest.Codec{}, event.Matrix: bridgestest.Codec{}})
	if err != nil {
		t.Fatal(err)
	}
	h := startWith(t, store.NewMemory(), m)
	muc := event.Address{Network: event.XMPP, ID: "team@muc.example.org"}
	change := func(id, from string, c event.MemberChange, name string) error {
		return h.router.Dispatch(context.Background(), &event.Member{
			Header: event.Header{ID: id, From: event.Address{Network: event.XMPP, ID: from}, To: muc, Room: true},
			Change: c, Name: name,
		})
	}
	for _, err := range []error{
		change("1", "alice@example.org", event.MemberJoined, "Alice"),
		change("2", "alice@example.org", event.MemberRenamed, "Alice W."),
		change("3", "dana@example.org", event.MemberJoined, "dd"),
		change("4", "alice@example.org", event.MemberLeft, ""),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	sent := h.matrix.WaitSent(waitCtx(t), 4)
	want := []struct {
		from   string
		change event.MemberChange
		name   string
	}{
		{"_xmpp_alice_example.org@hs.example", event.MemberJoined, "Alice"},
		{"_xmpp_alice_example.org@hs.example", event.MemberRenamed, "Alice W."},
		{"dana_dana@hs.example", event.MemberJoined, "Dana D."},
		{"_xmpp_alice_example.org@hs.example", event.MemberLeft, ""},
	}
	for i, e := range sent {
		mb, ok := e.(*event.Member)
		if !ok || !mb.Room || mb.To.ID != "!team:hs.example" || mb.From.ID != want[i].from || mb.Change != want[i].change || mb.Name != want[i].name {
			t.Errorf("change %d went out as %#v, want %+v", i, e, want[i])
		}
	}
	err = h.router.Dispatch(context.Background(), &event.Member{
		Header: event.Header{ID: "5", From: event.Address{Network: event.XMPP, ID: "alice@example.org"}, To: muc},
		Change: event.MemberJoined,
	})
	if err == nil {
		t.Error("a membership change outside a room was accepted")
	}

	// A topic crosses the same way, after the changes before it.
	topic := &event.Topic{Header: event.Header{ID: "6", From: event.Address{Network: event.XMPP, ID: "alice@example.org"}, To: muc, Room: true}, Text: "Plans for May"}
	if err := h.router.Dispatch(context.Background(), topic); err != nil {
		t.Fatal(err)
	}
	sent = h.matrix.WaitSent(waitCtx(t), 5)
	if tp, ok := sent[len(sent)-1].(*event.Topic); !ok || !tp.Room || tp.To.ID != "!team:hs.example" || tp.From.ID != "_xmpp_alice_example.org@hs.example" || tp.Text != "Plans for May" {
		t.Errorf("the topic went out as %#v", sent[len(sent)-1])
	}
	topic = &event.Topic{Header: event.Header{ID: "7", From: event.Address{Network: event.XMPP, ID: "alice@example.org"}, To: muc}, Text: "x"}
	if err := h.router.Dispatch(context.Background(), topic); err == nil {
		t.Error("a topic outside a room was accepted")
	}
}
