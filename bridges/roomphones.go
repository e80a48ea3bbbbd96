package bridges

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/store"
)

// roomPhonesNS is the store namespace of the membership of phones in the
// portals' SIP rooms: one link per room and phone that joined or left.
const roomPhonesNS = "room-phones"

// The values of a roomPhones link.
const (
	phoneJoined = "joined"
	phoneLeft   = "left"
)

// roomPhones keeps who the phones in the portals' SIP rooms are. SIP has
// no group chats: a portal's SIP room is an address phones write to, and
// its members are phones, to each of which the core sends the room's
// posts. The members of a room are the phones the YAML lists and those
// that joined (by writing to the room, or /join), less those that left
// (/leave), a YAML phone included. Each change is written to the store,
// so that membership survives restarts; it is cached in memory, with its
// own lock, like addressed.
type roomPhones struct {
	mu    sync.Mutex
	st    store.Links
	cache map[event.Address]map[event.Address]bool // room → phone → joined (false: left)
}

func newRoomPhones(st store.Links) *roomPhones {
	return &roomPhones{st: st, cache: map[event.Address]map[event.Address]bool{}}
}

// load returns what the store records for room, reading it the first time.
// p.mu is held.
func (p *roomPhones) load(ctx context.Context, room event.Address) (map[event.Address]bool, error) {
	if c, ok := p.cache[room]; ok {
		return c, nil
	}
	links, err := p.st.ListLinks(ctx, roomPhonesNS, room.ID+"\n")
	if err != nil {
		return nil, fmt.Errorf("read the phones of %s: %w", room.ID, err)
	}
	c := make(map[event.Address]bool, len(links))
	for k, v := range links {
		phone := event.Address{Network: event.SIP, ID: strings.TrimPrefix(k, room.ID+"\n")}
		c[phone] = v == phoneJoined
	}
	p.cache[room] = c
	return c, nil
}

// members returns the phones in room under m: the YAML's in its order,
// then those that joined, sorted.
func (p *roomPhones) members(ctx context.Context, m *mapping.Map, room event.Address) ([]event.Address, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.load(ctx, room)
	if err != nil {
		return nil, err
	}
	var out []event.Address
	listed := map[event.Address]bool{}
	for _, phone := range m.Phones(room) {
		listed[phone] = true
		if joined, ok := c[phone]; !ok || joined {
			out = append(out, phone)
		}
	}
	var joined []event.Address
	for phone, in := range c {
		if in && !listed[phone] {
			joined = append(joined, phone)
		}
	}
	sort.Slice(joined, func(i, j int) bool { return joined[i].ID < joined[j].ID })
	return append(out, joined...), nil
}

// isMember reports whether phone is in room under m.
func (p *roomPhones) isMember(ctx context.Context, m *mapping.Map, room, phone event.Address) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.load(ctx, room)
	if err != nil {
		return false, err
	}
	if joined, ok := c[phone]; ok {
		return joined, nil
	}
	for _, listed := range m.Phones(room) {
		if listed == phone {
			return true, nil
		}
	}
	return false, nil
}

// set records that phone joined room, or left it.
func (p *roomPhones) set(ctx context.Context, room, phone event.Address, joined bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.load(ctx, room)
	if err != nil {
		return err
	}
	v := phoneLeft
	if joined {
		v = phoneJoined
	}
	if err := p.st.PutLink(ctx, roomPhonesNS, room.ID+"\n"+phone.ID, v); err != nil {
		return fmt.Errorf("record that %s %s %s: %w", phone.ID, v, room.ID, err)
	}
	c[phone] = joined
	return nil
}
