package bridges_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/store"
)

// onDemandMap is testMap with a YAML portal and the on-demand policy:
// users of hs.example may open portals to rooms of muc.example.org.
func onDemandMap(t testing.TB, policy *mapping.OnDemand) *mapping.Map {
	t.Helper()
	m, err := mapping.New(mapping.Config{
		Ghosts: map[event.Network]map[event.Network]string{
			event.Matrix: {event.XMPP: "_xmpp_{user}_{domain}@hs.example"},
			event.XMPP:   {event.Matrix: "{user}%{domain}@matrix.example.org"},
		},
		Portals:  []mapping.Portal{{Matrix: "!yaml:hs.example", XMPP: "yaml@muc.example.org"}},
		OnDemand: policy,
	}, map[event.Network]mapping.Codec{event.XMPP: bridgestest.Codec{}, event.Matrix: bridgestest.Codec{}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var testPolicy = &mapping.OnDemand{Users: []string{"matrix:*@hs.example"}, MUCServices: []string{"muc.example.org"}}

// portalNetwork is a fake network that records the portal rooms it is told
// of (bridges.PortalNetwork).
type portalNetwork struct {
	fake
	mu     sync.Mutex
	opened []event.Address
	told   chan struct{}
}

// fake is bridgestest.Network under another name: embedded as Network,
// its field would hide its Network method.
type fake = *bridgestest.Network

func (n *portalNetwork) PortalOpened(_ context.Context, room event.Address) {
	n.mu.Lock()
	n.opened = append(n.opened, room)
	n.mu.Unlock()
	n.told <- struct{}{}
}

func startOnDemand(t *testing.T, st store.Store, m *mapping.Map) (*bridges.Router, *portalNetwork, *bridgestest.Network) {
	t.Helper()
	x := &portalNetwork{fake: bridgestest.NewNetwork(event.XMPP), told: make(chan struct{}, 4)}
	mx := bridgestest.NewNetwork(event.Matrix)
	r := bridges.NewRouter(st, m, bridges.WithRetry(bridges.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}, time.Hour))
	r.Add(x)
	r.Add(mx)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r, x, mx
}

func stopRouter(t *testing.T, r *bridges.Router) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// A portal opened at run time routes posts both ways, is named by Rooms
// beside the YAML's, tells the XMPP adapter to join its MUC, and is loaded
// again by the next router over the same store.
func TestPortalOpenedOnDemand(t *testing.T) {
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	m := onDemandMap(t, testPolicy)
	r, x, mx := startOnDemand(t, st, m)

	alice := event.Address{Network: event.Matrix, ID: "alice@hs.example"}
	room := event.Address{Network: event.Matrix, ID: "!new:hs.example"}
	muc := event.Address{Network: event.XMPP, ID: "new@muc.example.org"}
	post := func(id string, from, to event.Address) error {
		return r.Dispatch(context.Background(), &event.Message{Header: event.Header{ID: id, From: from, To: to, Room: true}, Body: id})
	}
	if err := post("early", alice, room); !errors.Is(err, bridges.ErrNoRoute) {
		t.Fatalf("a post before the portal is open: %v, want ErrNoRoute", err)
	}
	if err := r.OpenPortal(context.Background(), alice, room, muc); err != nil {
		t.Fatal(err)
	}
	select {
	case <-x.told:
	case <-waitCtx(t).Done():
		t.Fatal("the XMPP adapter was not told of the new portal")
	}
	x.mu.Lock()
	if len(x.opened) != 1 || x.opened[0] != muc {
		t.Errorf("the XMPP adapter was told of %v, want %v", x.opened, muc)
	}
	x.mu.Unlock()
	if rooms := r.Rooms(event.XMPP); len(rooms) != 2 || rooms[0].ID != "new@muc.example.org" || rooms[1].ID != "yaml@muc.example.org" {
		t.Errorf("Rooms(xmpp) = %v", rooms)
	}
	if err := post("m1", alice, room); err != nil {
		t.Fatal(err)
	}
	if err := post("x1", event.Address{Network: event.XMPP, ID: "bob@example.org"}, muc); err != nil {
		t.Fatal(err)
	}
	if sent := x.WaitSent(waitCtx(t), 1); len(sent) != 1 || sent[0].Head().To != muc || sent[0].Head().From.ID != "alice%hs.example@matrix.example.org" {
		t.Errorf("the Matrix post went out as %+v", sent)
	}
	if sent := mx.WaitSent(waitCtx(t), 1); len(sent) != 1 || sent[0].Head().To != room {
		t.Errorf("the XMPP post went out as %+v", sent)
	}
	// Opening it again is a no-op, and so is a YAML portal.
	if err := r.OpenPortal(context.Background(), alice, muc, room); err != nil {
		t.Errorf("the same portal again: %v", err)
	}
	if err := r.OpenPortal(context.Background(), alice,
		event.Address{Network: event.Matrix, ID: "!yaml:hs.example"}, event.Address{Network: event.XMPP, ID: "yaml@muc.example.org"}); err != nil {
		t.Errorf("the YAML's portal: %v", err)
	}
	stopRouter(t, r)

	r2, _, mx2 := startOnDemand(t, st, m)
	defer stopRouter(t, r2)
	if rooms := r2.Rooms(event.Matrix); len(rooms) != 2 || rooms[0] != room {
		t.Errorf("after a restart, Rooms(matrix) = %v", rooms)
	}
	if err := post2(r2, "x2", event.Address{Network: event.XMPP, ID: "bob@example.org"}, muc); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	if sent := mx2.WaitSent(waitCtx(t), 1); len(sent) != 1 || sent[0].Head().To != room {
		t.Errorf("after a restart, the XMPP post went out as %+v", sent)
	}
}

func post2(r *bridges.Router, id string, from, to event.Address) error {
	return r.Dispatch(context.Background(), &event.Message{Header: event.Header{ID: id, From: from, To: to, Room: true}, Body: id})
}

// What OpenPortal refuses: the policy (off, another service, another
// user), a room already in another portal, rooms that are not two rooms of
// two networks. Nothing refused is stored.
func TestOpenPortalRefusals(t *testing.T) {
	alice := event.Address{Network: event.Matrix, ID: "alice@hs.example"}
	room := event.Address{Network: event.Matrix, ID: "!new:hs.example"}
	muc := event.Address{Network: event.XMPP, ID: "new@muc.example.org"}
	tests := []struct {
		name   string
		policy *mapping.OnDemand
		by     event.Address
		rooms  []event.Address
		want   error
	}{
		{"policy off", nil, alice, []event.Address{room, muc}, bridges.ErrRefused},
		{"service not allowed", testPolicy, alice, []event.Address{room, {Network: event.XMPP, ID: "new@conference.elsewhere.org"}}, bridges.ErrRefused},
		{"user not allowed", testPolicy, event.Address{Network: event.Matrix, ID: "eve@elsewhere.org"}, []event.Address{room, muc}, bridges.ErrRefused},
		{"MUC in the YAML's portal", testPolicy, alice, []event.Address{room, {Network: event.XMPP, ID: "yaml@muc.example.org"}}, bridges.ErrInPortal},
		{"room in the YAML's portal", testPolicy, alice, []event.Address{{Network: event.Matrix, ID: "!yaml:hs.example"}, muc}, bridges.ErrInPortal},
		{"one room", testPolicy, alice, []event.Address{muc}, nil},
		{"two on one network", testPolicy, alice, []event.Address{muc, {Network: event.XMPP, ID: "b@muc.example.org"}}, nil},
		{"malformed MUC", testPolicy, alice, []event.Address{room, {Network: event.XMPP, ID: "muc.example.org"}}, nil},
		{"network not enabled", testPolicy, alice, []event.Address{room, {Network: event.SIP, ID: "sip:room@x"}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := store.NewMemory()
			r, _, _ := startOnDemand(t, st, onDemandMap(t, tc.policy))
			defer stopRouter(t, r)
			err := r.OpenPortal(context.Background(), tc.by, tc.rooms...)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("OpenPortal: %v, want an error wrapping %v", err, tc.want)
			}
			if links, _ := st.ListLinks(context.Background(), "portals", ""); len(links) != 0 {
				t.Errorf("a refused portal was stored: %v", links)
			}
			if rooms := r.Rooms(event.XMPP); len(rooms) != 1 {
				t.Errorf("Rooms(xmpp) = %v", rooms)
			}
		})
	}
	// MayOpenPortal checks the rooms alone when the person is not known.
	r, _, _ := startOnDemand(t, store.NewMemory(), onDemandMap(t, testPolicy))
	defer stopRouter(t, r)
	if err := r.MayOpenPortal(event.Address{}, room, muc); err != nil {
		t.Errorf("MayOpenPortal without a person: %v", err)
	}
	if err := r.MayOpenPortal(event.Address{}, room, event.Address{Network: event.XMPP, ID: "x@evil.example"}); !errors.Is(err, bridges.ErrRefused) {
		t.Errorf("MayOpenPortal of another service: %v, want ErrRefused", err)
	}
}
