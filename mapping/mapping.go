// Package mapping decides who is who across networks: YAML identities (one
// person, several accounts), ghost templates (everyone else gets a reversible
// address on the other networks) and aliases (an identity reached by name).
//
// A Map is immutable once built; a configuration reload builds a new one.
package mapping

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/parleygw/parley/event"
)

// ErrNoRoute is returned by Resolve when the recipient maps to nobody.
var ErrNoRoute = errors.New("address maps to nobody")

// ErrLoop is returned by Resolve when the sender is itself an address that
// Parley serves (a ghost or an alias), so bridging would echo.
var ErrLoop = errors.New("sender is a gateway address")

// Map resolves addresses. It is safe for concurrent use.
type Map struct {
	codecs     map[event.Network]Codec
	identities []*identity
	byName     map[string]*identity
	byAccount  map[event.Address]*identity
	ghosts     map[event.Network][]ghost // by the network the ghosts live on
	aliases    map[event.Network]template
	watch      []WatchRule
	portals    map[event.Address][]event.Address // a room → the portal's rooms on the other networks
	phones     map[event.Address][]event.Address // a portal's SIP room → the phones the YAML makes members
	onDemand   *OnDemand
}

type identity struct {
	name        string
	displayName string
	accounts    []event.Address
}

// ghost is the template for people of network from on another network.
type ghost struct {
	from event.Network
	t    template
}

// New validates cfg and builds a Map. codecs holds one Codec per network
// Parley serves; addresses and templates for other networks are errors.
func New(cfg Config, codecs map[event.Network]Codec) (*Map, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Map{
		codecs:    codecs,
		byName:    map[string]*identity{},
		byAccount: map[event.Address]*identity{},
		ghosts:    map[event.Network][]ghost{},
		aliases:   map[event.Network]template{},
		watch:     cfg.Watch,
		onDemand:  cfg.OnDemand,
		portals:   map[event.Address][]event.Address{},
		phones:    map[event.Address][]event.Address{},
	}
	var errs []error
	for i, c := range cfg.Identities {
		id := &identity{name: c.Name, displayName: c.DisplayName}
		for j, raw := range c.Accounts {
			a, _ := event.ParseAddress(raw)
			codec, ok := codecs[a.Network]
			if !ok {
				errs = append(errs, fmt.Errorf("mapping.identities[%d].accounts[%d]: network %s is not enabled", i, j, a.Network))
				continue
			}
			if _, _, err := codec.Split(a.ID); err != nil {
				errs = append(errs, fmt.Errorf("mapping.identities[%d].accounts[%d]: %w", i, j, err))
				continue
			}
			if other, dup := m.byAccount[a]; dup {
				errs = append(errs, fmt.Errorf("mapping.identities[%d].accounts[%d]: %s already belongs to %s", i, j, a, other.name))
				continue
			}
			m.byAccount[a] = id
			id.accounts = append(id.accounts, a)
		}
		m.identities = append(m.identities, id)
		m.byName[id.name] = id
	}
	for _, on := range sortedNetworks(cfg.Ghosts) {
		for _, from := range sortedNetworks(cfg.Ghosts[on]) {
			t, _ := parseTemplate(cfg.Ghosts[on][from], "{user}", "{domain}")
			m.ghosts[on] = append(m.ghosts[on], ghost{from: from, t: t})
		}
	}
	for on, raw := range cfg.Aliases {
		m.aliases[on], _ = parseTemplate(raw, "{name}")
	}
	for i, p := range cfg.Portals {
		rooms := p.rooms()
		for _, room := range rooms {
			codec, ok := codecs[room.Network]
			if !ok {
				errs = append(errs, fmt.Errorf("mapping.portals[%d].%s: network %s is not enabled", i, room.Network, room.Network))
				continue
			}
			if room.Network != event.SIP {
				continue
			}
			// The portal's SIP address is an address of Parley's; its
			// phones are real users.
			if _, _, err := codec.Split(room.ID); err != nil {
				errs = append(errs, fmt.Errorf("mapping.portals[%d].sip: %w", i, err))
			} else if m.Serves(room) {
				errs = append(errs, fmt.Errorf("mapping.portals[%d].sip: %s is also the address of a ghost or an alias", i, room.ID))
			}
			for j, raw := range p.Phones {
				phone := event.Address{Network: event.SIP, ID: raw}
				if _, _, err := codec.Split(raw); err != nil {
					errs = append(errs, fmt.Errorf("mapping.portals[%d].phones[%d]: %w", i, j, err))
					continue
				}
				if m.Serves(phone) {
					errs = append(errs, fmt.Errorf("mapping.portals[%d].phones[%d]: %s is the address of a ghost or an alias, not a phone", i, j, raw))
					continue
				}
				m.phones[room] = append(m.phones[room], phone)
			}
		}
		for _, room := range rooms {
			for _, other := range rooms {
				if other != room {
					m.portals[room] = append(m.portals[room], other)
				}
			}
		}
	}
	errs = append(errs, m.checkAmbiguity()...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// checkAmbiguity refuses templates on one network that can read each other's
// addresses: a ghost must map back to one person. It tries sample values on
// every pair; that catches templates of the same shape, the usual mistake.
func (m *Map) checkAmbiguity() []error {
	var errs []error
	samples := [][2]string{{"a", "b"}, {"a.b", "c.d"}, {"a-1", "b=20c"}}
	for _, on := range sortedNetworks(m.ghosts) {
		gs := m.ghosts[on]
		alias, hasAlias := m.aliases[on]
		for i, g := range gs {
			for _, v := range samples {
				id := g.t.format(v[0], v[1])
				for j, other := range gs {
					if j != i {
						if _, ok := other.t.parse(id, 2); ok {
							errs = append(errs, fmt.Errorf("mapping.ghosts.%s: the templates for %s and %s users are ambiguous (%q fits both); give them different separators or prefixes",
								on, g.from, other.from, id))
							break
						}
					}
				}
				if hasAlias {
					if _, ok := alias.parse(id, 1); ok {
						errs = append(errs, fmt.Errorf("mapping.aliases.%s: %q, the ghost of a %s user, also reads as an alias", on, id, g.from))
					}
				}
			}
		}
	}
	for _, on := range sortedNetworks(m.aliases) {
		id := m.aliases[on].format("alice")
		for _, g := range m.ghosts[on] {
			if _, ok := g.t.parse(id, 2); ok {
				errs = append(errs, fmt.Errorf("mapping.aliases.%s: the alias %q reads as the ghost of a %s user", on, id, g.from))
			}
		}
	}
	return dedupe(errs)
}

func dedupe(errs []error) []error {
	seen := map[string]bool{}
	var out []error
	for _, e := range errs {
		if !seen[e.Error()] {
			seen[e.Error()] = true
			out = append(out, e)
		}
	}
	return out
}

func sortedNetworks[V any](m map[event.Network]V) []event.Network {
	out := make([]event.Network, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Resolve translates a conversation seen on one network into the same
// conversation on the network of the recipient. from is the real sender and
// to the address they wrote to, both on the source network; the results are
// on the destination network: the address the sender appears as there, and
// the real recipient.
func (m *Map) Resolve(from, to event.Address) (sender, recipient event.Address, err error) {
	if m.Serves(from) {
		return sender, recipient, fmt.Errorf("resolve %s: %w", from, ErrLoop)
	}
	recipient, ok := m.recipient(from, to)
	if !ok {
		return sender, recipient, fmt.Errorf("resolve %s: %w", to, ErrNoRoute)
	}
	sender, err = m.Appearance(from, recipient.Network)
	if err != nil {
		return event.Address{}, event.Address{}, err
	}
	return sender, recipient, nil
}

// recipient finds the real address behind to, an alias or a ghost.
func (m *Map) recipient(from, to event.Address) (event.Address, bool) {
	if id := m.alias(to); id != nil {
		for _, a := range id.accounts {
			if a.Network != to.Network && a.Network != from.Network {
				return a, true
			}
		}
		return event.Address{}, false
	}
	for _, g := range m.ghosts[to.Network] {
		v, ok := g.t.parse(to.ID, 2)
		if !ok {
			continue
		}
		codec := m.codecs[g.from]
		if codec == nil {
			return event.Address{}, false
		}
		id, err := codec.Join(v[0], v[1])
		if err != nil {
			return event.Address{}, false
		}
		return event.Address{Network: g.from, ID: id}, true
	}
	return event.Address{}, false
}

// Appearance returns the address under which a (a real address) appears on
// network on: the identity's alias when a belongs to an identity and on has
// an alias template, otherwise a's ghost.
func (m *Map) Appearance(a event.Address, on event.Network) (event.Address, error) {
	if id := m.byAccount[a]; id != nil {
		if t, ok := m.aliases[on]; ok {
			return event.Address{Network: on, ID: t.format(id.name)}, nil
		}
	}
	for _, g := range m.ghosts[on] {
		if g.from != a.Network {
			continue
		}
		codec := m.codecs[a.Network]
		if codec == nil {
			break
		}
		user, domain, err := splitParticipant(codec, a.ID)
		if err != nil {
			return event.Address{}, fmt.Errorf("ghost of %s on %s: %w", a, on, err)
		}
		id := g.t.format(user, domain)
		if oc := m.codecs[on]; oc != nil {
			if _, _, err := oc.Split(id); err != nil {
				return event.Address{}, fmt.Errorf("ghost of %s on %s: %w", a, on, err)
			}
		}
		return event.Address{Network: on, ID: id}, nil
	}
	return event.Address{}, fmt.Errorf("%s users cannot appear on %s (no ghost template): %w", a.Network, on, ErrNoRoute)
}

// splitParticipant splits id with codec, and also a participant of a room
// known only by room and nickname, "room/nick" (an XMPP room that does not
// show real JIDs): its user is the room's user, a slash and the nickname,
// which the ghost template escapes. Such a ghost stands for the nickname in
// that room; it cannot be written to directly.
func splitParticipant(codec Codec, id string) (user, domain string, err error) {
	user, domain, err = codec.Split(id)
	if err == nil {
		return user, domain, nil
	}
	room, nick, ok := strings.Cut(id, "/")
	if !ok || nick == "" {
		return "", "", err
	}
	ru, rd, rerr := codec.Split(room)
	if rerr != nil || ru == "" {
		return "", "", err
	}
	return ru + "/" + nick, rd, nil
}

// alias returns the identity whose alias a is, or nil. An address of the
// alias shape is no alias unless an identity has that name: on SIP, Parley's
// own registered users share the domain of the aliases.
func (m *Map) alias(a event.Address) *identity {
	if t, ok := m.aliases[a.Network]; ok {
		if v, ok := t.parse(a.ID, 1); ok {
			return m.byName[v[0]]
		}
	}
	return nil
}

// Serves reports whether a is an address Parley serves: a ghost or an alias.
func (m *Map) Serves(a event.Address) bool {
	if m.alias(a) != nil {
		return true
	}
	for _, g := range m.ghosts[a.Network] {
		if _, ok := g.t.parse(a.ID, 2); ok {
			return true
		}
	}
	return false
}

// Accounts returns every account of the identity that owns a, most
// preferred first, or nil when a belongs to no identity.
func (m *Map) Accounts(a event.Address) []event.Address {
	if id := m.byAccount[a]; id != nil {
		return id.accounts
	}
	return nil
}

// DisplayName returns the display name of the identity that owns a, or "".
func (m *Map) DisplayName(a event.Address) string {
	if id := m.byAccount[a]; id != nil {
		return id.displayName
	}
	return ""
}

// Patterns returns regular expressions (unanchored) matching every address
// Parley serves on network on: its ghosts and its aliases. The Matrix
// appservice registration declares them as its exclusive namespaces.
func (m *Map) Patterns(on event.Network) []string {
	var out []string
	for _, g := range m.ghosts[on] {
		out = append(out, g.t.pattern())
	}
	if t, ok := m.aliases[on]; ok {
		out = append(out, t.pattern())
	}
	return out
}

// Portal returns the rooms of other networks that the portal of room joins
// it with, and false when room is in no portal. A room is named as the YAML
// names it (a Matrix room ID or alias, a MUC's bare JID).
func (m *Map) Portal(room event.Address) ([]event.Address, bool) {
	others, ok := m.portals[room]
	return others, ok
}

// Phones returns the phones that the YAML makes members of room, a
// portal's SIP address, in the YAML's order; nil for any other room.
func (m *Map) Phones(room event.Address) []event.Address { return m.phones[room] }

// Rooms returns the rooms of network on that are in a portal, sorted.
func (m *Map) Rooms(on event.Network) []event.Address {
	var out []event.Address
	for room := range m.portals {
		if room.Network == on {
			out = append(out, room)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// CallTargets returns the real addresses that a call from from to to must
// ring, all at once (the first to answer wins): every account of the
// identity whose alias to is (but from itself), the real address behind a
// ghost, or to itself when it is an address on from's own network that
// Parley does not serve (a network that calls its own users, such as a SIP
// phone calling another phone registered with Parley).
func (m *Map) CallTargets(from, to event.Address) ([]event.Address, error) {
	if m.Serves(from) {
		return nil, fmt.Errorf("call from %s: %w", from, ErrLoop)
	}
	if id := m.alias(to); id != nil {
		out := make([]event.Address, 0, len(id.accounts))
		for _, a := range id.accounts {
			if a != from {
				out = append(out, a)
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("call %s: %w", to, ErrNoRoute)
		}
		return out, nil
	}
	if m.Serves(to) {
		real, ok := m.recipient(from, to)
		if !ok {
			return nil, fmt.Errorf("call %s: %w", to, ErrNoRoute)
		}
		return []event.Address{real}, nil
	}
	if to.Network == from.Network && to != from {
		return []event.Address{to}, nil
	}
	return nil, fmt.Errorf("call %s: %w", to, ErrNoRoute)
}

// CallerAppearance returns the address the caller from shows as to a callee
// on network on: from itself on its own network, otherwise its Appearance.
func (m *Map) CallerAppearance(from event.Address, on event.Network) (event.Address, error) {
	if from.Network == on {
		return from, nil
	}
	return m.Appearance(from, on)
}
