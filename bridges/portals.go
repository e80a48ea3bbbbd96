package bridges

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
)

// Portals opened at run time. Beside the YAML's portals (mapping.portals),
// an adapter may open a portal while Parley runs, when someone asks for
// one (a Matrix user joins an alias that names a MUC) and the YAML's
// policy (mapping.portals_on_demand) lets them. Such a portal is kept in
// the store, in the links of the core's namespace portalsNS, and is loaded
// again at each Start: one link per portal, whose key is the portal's
// rooms ("network:id", sorted, joined by a space: room addresses hold no
// space) so that a portal is written in one step. The router looks a room
// up in the YAML's portals first, then in these.

// portalsNS is the namespace of the store's links that holds the portals
// opened at run time.
const portalsNS = "portals"

// ErrInPortal is returned by OpenPortal when a room is in another portal
// already.
var ErrInPortal = errors.New("room is in another portal")

// PortalHost is what an adapter that opens portals at run time may ask of
// the core, beside RoomHost. The Host given to Start is one when the core
// is the Router; adapters find it by type assertion.
type PortalHost interface {
	RoomHost
	// MayOpenPortal checks the YAML's policy without opening anything: may
	// by open a portal joining rooms? by is the zero Address when the
	// person is not known yet; then only the rooms are checked. A refusal
	// wraps ErrRefused and says why.
	MayOpenPortal(by event.Address, rooms ...event.Address) error
	// OpenPortal opens a portal that joins rooms, one per network, at the
	// request of by, and keeps it across restarts. It returns nil at once
	// when that portal exists already (from the YAML or opened before),
	// an error wrapping ErrRefused when the policy refuses, and one
	// wrapping ErrInPortal when a room is in another portal. Once it
	// returns nil, Rooms names the new rooms and posts in them are routed;
	// each other adapter that implements PortalNetwork is told of its room.
	OpenPortal(ctx context.Context, by event.Address, rooms ...event.Address) error
}

// PortalNetwork is the capability of an adapter that keeps a listener in
// each of its portal rooms (Rooms, read at connect): it learns of a portal
// opened at run time, and joins its room without waiting for a reconnect.
type PortalNetwork interface {
	Network
	// PortalOpened tells the adapter that room, on its network, is now in
	// a portal. The router calls it from a goroutine of its own, after
	// OpenPortal stored the portal; ctx ends when the router stops.
	PortalOpened(ctx context.Context, room event.Address)
}

var (
	_ PortalHost = (*Router)(nil)
)

// openedPortals is the registry of the portals opened at run time: each
// room → the portal's rooms on the other networks.
type openedPortals struct {
	mu    sync.RWMutex
	rooms map[event.Address][]event.Address
}

// portalKey is the link key of the portal that joins rooms.
func portalKey(rooms []event.Address) string {
	names := make([]string, len(rooms))
	for i, r := range rooms {
		names[i] = r.String()
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// parsePortalKey reverses portalKey; false for a key it cannot have
// written.
func parsePortalKey(key string) ([]event.Address, bool) {
	fields := strings.Split(key, " ")
	if len(fields) < 2 {
		return nil, false
	}
	rooms := make([]event.Address, 0, len(fields))
	for _, f := range fields {
		a, ok := event.ParseAddress(f)
		if !ok || mapping.CheckRoom(a) != nil {
			return nil, false
		}
		rooms = append(rooms, a)
	}
	return rooms, true
}

// addLocked records the portal that joins rooms. p.mu is held.
func (p *openedPortals) addLocked(rooms []event.Address) {
	if p.rooms == nil {
		p.rooms = map[event.Address][]event.Address{}
	}
	for _, room := range rooms {
		var others []event.Address
		for _, o := range rooms {
			if o != room {
				others = append(others, o)
			}
		}
		p.rooms[room] = others
	}
}

// loadPortals reads the portals opened by earlier runs. Start calls it
// before the adapters start, so that their first Rooms names them.
func (r *Router) loadPortals(ctx context.Context) error {
	links, err := r.store.ListLinks(ctx, portalsNS, "")
	if err != nil {
		return fmt.Errorf("load portals: %w", err)
	}
	r.opened.mu.Lock()
	defer r.opened.mu.Unlock()
	for key := range links {
		rooms, ok := parsePortalKey(key)
		if !ok {
			r.log.Warn("skipped a stored portal that cannot be read", "portal", key)
			continue
		}
		r.opened.addLocked(rooms)
	}
	if len(links) > 0 {
		r.log.Info("portals opened on demand loaded", "portals", len(links))
	}
	return nil
}

// portal returns the rooms that the portal of room joins it with: the
// YAML's portal first, else one opened at run time.
func (r *Router) portal(m *mapping.Map, room event.Address) ([]event.Address, bool) {
	if others, ok := m.Portal(room); ok {
		return others, true
	}
	r.opened.mu.RLock()
	defer r.opened.mu.RUnlock()
	others, ok := r.opened.rooms[room]
	return others, ok
}

// rooms returns the rooms of network n in a portal of the YAML or opened at
// run time, sorted and each once.
func (r *Router) rooms(m *mapping.Map, n event.Network) []event.Address {
	out := m.Rooms(n)
	r.opened.mu.RLock()
	for room := range r.opened.rooms {
		if room.Network == n {
			out = append(out, room)
		}
	}
	r.opened.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return slices.Compact(out)
}

// MayOpenPortal implements PortalHost.
func (r *Router) MayOpenPortal(by event.Address, rooms ...event.Address) error {
	return r.checkPortal(r.mapping.Load(), by, rooms)
}

// checkPortal checks rooms (two, on two networks that Parley serves, each
// well formed) and the policy.
func (r *Router) checkPortal(m *mapping.Map, by event.Address, rooms []event.Address) error {
	if len(rooms) != 2 || rooms[0].Network == rooms[1].Network {
		return fmt.Errorf("open portal: a portal joins two rooms of two networks, not %v", rooms)
	}
	for _, room := range rooms {
		if err := mapping.CheckRoom(room); err != nil {
			return fmt.Errorf("open portal: %w", err)
		}
		if _, ok := r.networks[room.Network]; !ok {
			return fmt.Errorf("open portal: network %s is not enabled", room.Network)
		}
	}
	if err := m.MayOpenPortal(by, rooms); err != nil {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return nil
}

// OpenPortal implements PortalHost.
func (r *Router) OpenPortal(ctx context.Context, by event.Address, rooms ...event.Address) error {
	if r.isStopping() {
		return ErrStopping
	}
	m := r.mapping.Load()
	if err := r.checkPortal(m, by, rooms); err != nil {
		return err
	}
	r.opened.mu.Lock()
	defer r.opened.mu.Unlock()
	existing := 0
	for _, room := range rooms {
		others, ok := m.Portal(room)
		if !ok {
			others, ok = r.opened.rooms[room]
		}
		if !ok {
			continue
		}
		want := slices.DeleteFunc(slices.Clone(rooms), func(a event.Address) bool { return a == room })
		if !sameRooms(others, want) {
			return fmt.Errorf("open portal: %s: %w", room, ErrInPortal)
		}
		existing++
	}
	if existing == len(rooms) {
		return nil
	}
	value := by.String() + " " + r.now().UTC().Format(time.RFC3339)
	if err := r.store.PutLink(ctx, portalsNS, portalKey(rooms), value); err != nil {
		return fmt.Errorf("open portal: %w", err)
	}
	r.opened.addLocked(rooms)
	r.log.Info("portal opened on demand", "rooms", portalKey(rooms), "by", by.String())
	for _, room := range rooms {
		pn, ok := r.networks[room.Network].(PortalNetwork)
		if !ok {
			continue
		}
		run := r.runCtx
		if run == nil || run.Err() != nil {
			continue // not started, or stopping: the next Start's Rooms has it
		}
		r.workers.Add(1)
		go func() {
			defer r.workers.Done()
			pn.PortalOpened(run, room)
		}()
	}
	return nil
}

// sameRooms reports whether a and b hold the same rooms.
func sameRooms(a, b []event.Address) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
