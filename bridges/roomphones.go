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

// roomPeopleNS is the store namespace of who else is in a portal with a
// SIP room: one link per SIP room and participant of another network, with
// the name they show.
const roomPeopleNS = "room-people"

// roomPeople keeps, for each portal's SIP room, the participants of the
// portal's other rooms that Parley saw join or post, and their names, so
// that a phone can ask who is in the room (RoomMembers). Like roomPhones,
// it is written through to the store and cached.
type roomPeople struct {
	mu    sync.Mutex
	st    store.Links
	cache map[event.Address]map[event.Address]string // SIP room → participant → name
}

func newRoomPeople(st store.Links) *roomPeople {
	return &roomPeople{st: st, cache: map[event.Address]map[event.Address]string{}}
}

// load returns what the store records for room. p.mu is held.
func (p *roomPeople) load(ctx context.Context, room event.Address) (map[event.Address]string, error) {
	if c, ok := p.cache[room]; ok {
		return c, nil
	}
	links, err := p.st.ListLinks(ctx, roomPeopleNS, room.ID+"\n")
	if err != nil {
		return nil, fmt.Errorf("read who is in %s: %w", room.ID, err)
	}
	c := make(map[event.Address]string, len(links))
	for k, name := range links {
		if a, ok := event.ParseAddress(strings.TrimPrefix(k, room.ID+"\n")); ok {
			c[a] = name
		}
	}
	p.cache[room] = c
	return c, nil
}

// seen records that who is in room as name; it writes the store only when
// that changes what is recorded.
func (p *roomPeople) seen(ctx context.Context, room, who event.Address, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.load(ctx, room)
	if err != nil {
		return err
	}
	if have, ok := c[who]; ok && have == name {
		return nil
	}
	if err := p.st.PutLink(ctx, roomPeopleNS, room.ID+"\n"+who.String(), name); err != nil {
		return fmt.Errorf("record that %s is in %s: %w", who, room.ID, err)
	}
	c[who] = name
	return nil
}

// gone records that who left room.
func (p *roomPeople) gone(ctx context.Context, room, who event.Address) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.load(ctx, room)
	if err != nil {
		return err
	}
	if _, ok := c[who]; !ok {
		return nil
	}
	if err := p.st.DeleteLink(ctx, roomPeopleNS, room.ID+"\n"+who.String()); err != nil {
		return fmt.Errorf("record that %s left %s: %w", who, room.ID, err)
	}
	delete(c, who)
	return nil
}

// list returns who is recorded in room, with their names.
func (p *roomPeople) list(ctx context.Context, room event.Address) (map[event.Address]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.load(ctx, room)
	if err != nil {
		return nil, err
	}
	out := make(map[event.Address]string, len(c))
	for a, n := range c {
		out[a] = n
	}
	return out, nil
}

// RoomMember is one participant of a portal, as RoomMembers lists them.
type RoomMember struct {
	// Address is the participant's real address on their network.
	Address event.Address
	// Name is the name they show in the room; "" for a phone that has
	// not written (the adapter names it).
	Name string
}

var _ RosterHost = (*Router)(nil)

// RoomMembers implements RosterHost.
func (r *Router) RoomMembers(ctx context.Context, room event.Address) ([]RoomMember, error) {
	m := r.mapping.Load()
	if _, ok := m.Portal(room); !ok || room.Network != event.SIP {
		return nil, fmt.Errorf("%w: %s is not a portal's SIP address", ErrNoRoute, room)
	}
	people, err := r.people.list(ctx, room)
	if err != nil {
		return nil, err
	}
	phones, err := r.phones.members(ctx, m, room)
	if err != nil {
		return nil, err
	}
	var out []RoomMember
	for a, name := range people {
		if a.Network != event.SIP {
			out = append(out, RoomMember{Address: a, Name: name})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Address.String() < out[j].Address.String()
	})
	for _, phone := range phones {
		name := people[phone]
		if name == "" {
			name = m.DisplayName(phone)
		}
		out = append(out, RoomMember{Address: phone, Name: name})
	}
	return out, nil
}

// notePresent records, for the SIP room of a portal (none when zero), who
// is in the portal after evt, a post or a membership change of who that
// the core accepted. Only the names /who shows depend on it: a failure is
// logged, not returned.
func (r *Router) notePresent(ctx context.Context, sipRoom, who event.Address, evt event.Event) {
	if sipRoom.IsZero() {
		return
	}
	var err error
	switch e := evt.(type) {
	case *event.Member:
		if e.Change == event.MemberLeft {
			err = r.people.gone(ctx, sipRoom, who)
		} else {
			err = r.people.seen(ctx, sipRoom, who, e.Name)
		}
	case *event.Message:
		err = r.people.seen(ctx, sipRoom, who, e.FromName)
	}
	if err != nil {
		r.log.Warn("record who is in a room", "room", sipRoom.ID, "who", who, "err", err)
	}
}
