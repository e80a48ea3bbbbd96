package mapping

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/parleygw/parley/event"
)

// Config is the "mapping" section of Parley's YAML file: who is who.
type Config struct {
	// Identities are people with accounts on several networks.
	Identities []Identity `yaml:"identities"`
	// Ghosts gives, for each network, how people of each other network
	// appear there: Ghosts[matrix][xmpp] = "@_xmpp_{user}_{domain}:localhost"
	// means an XMPP user alice@example.org appears on Matrix as
	// @_xmpp_alice_example.org:localhost. {user} and {domain} are the two
	// parts of the person's own address, escaped (see Escape).
	Ghosts map[event.Network]map[event.Network]string `yaml:"ghosts"`
	// Aliases gives, for each network, the address under which an identity
	// is reached there by name: Aliases[xmpp] = "{name}@matrix.localhost"
	// lets XMPP users write to alice@matrix.localhost to reach the identity
	// named alice on her preferred other network.
	Aliases map[event.Network]string `yaml:"aliases"`
	// Watch is the presence policy: rules, tried in order, that decide who
	// may watch whose presence (the first match decides; none matching
	// allows).
	Watch []WatchRule `yaml:"watch"`
	// Portals join group chats of different networks into one
	// conversation: each participant on one side appears on the other as a
	// participant of their own.
	Portals []Portal `yaml:"portals"`
	// OnDemand lets people open portals at run time (see OnDemand); nil,
	// nobody may.
	OnDemand *OnDemand `yaml:"portals_on_demand"`
}

// Portal is one group chat seen from several networks: a Matrix room (its
// ID, !id:server, or an alias, #name:server), an XMPP multi-user chat (the
// room's bare JID) and, optionally, a SIP address under Parley's own SIP
// domain that phones write to. SIP has no group chats: the members of the
// SIP side are phones, those Phones lists and those that wrote to the
// address (until they leave), and the routing core sends each of them the
// room's posts.
type Portal struct {
	Matrix string `yaml:"matrix"`
	XMPP   string `yaml:"xmpp"`
	// SIP is the portal's SIP URI, "sip:team@<Parley's SIP domain>".
	SIP string `yaml:"sip"`
	// Phones are SIP addresses of record that are members of the SIP side
	// from the start.
	Phones []string `yaml:"phones"`
}

// rooms returns the portal's rooms, one per network; the SIP room only
// when the portal has one.
func (p Portal) rooms() []event.Address {
	out := []event.Address{{Network: event.Matrix, ID: p.Matrix}, {Network: event.XMPP, ID: p.XMPP}}
	if p.SIP != "" {
		out = append(out, event.Address{Network: event.SIP, ID: p.SIP})
	}
	return out
}

// validSIP checks the form of a SIP address of record, "sip:user@host";
// the SIP codec checks the rest (mapping.New).
func validSIP(id string) error {
	user, host, ok := strings.Cut(strings.TrimPrefix(id, "sip:"), "@")
	if !strings.HasPrefix(id, "sip:") || !ok || user == "" || host == "" || strings.ContainsAny(host, "@;?") ||
		strings.ContainsAny(id, " \t\r\n<>\"") {
		return fmt.Errorf("%q is not a SIP address of record (sip:user@host)", id)
	}
	return nil
}

// validRoom checks the form of a room's address on its network.
func validRoom(a event.Address) error {
	switch a.Network {
	case event.Matrix:
		// Room IDs of room version 12 have no server part (!id); older
		// ones and aliases do (!id:server, #name:server).
		local, server, hasServer := strings.Cut(a.ID, ":")
		ok := len(local) >= 2 && !strings.ContainsAny(a.ID, " \t\r\n")
		switch {
		case !ok:
		case local[0] == '!':
			ok = !hasServer || server != ""
		case local[0] == '#':
			ok = hasServer && server != ""
		default:
			ok = false
		}
		if !ok {
			return fmt.Errorf("%q is not a Matrix room ID (!id or !id:server) or alias (#name:server)", a.ID)
		}
	case event.SIP:
		return validSIP(a.ID)
	case event.XMPP:
		local, domain, ok := strings.Cut(a.ID, "@")
		if !ok || local == "" || domain == "" || strings.ContainsAny(domain, "@") || strings.ContainsAny(a.ID, "/ \t\r\n") {
			return fmt.Errorf("%q is not the bare JID of a multi-user chat (room@service)", a.ID)
		}
	}
	return nil
}

// Identity is one person and their accounts.
type Identity struct {
	// Name is a short alias: lowercase letters, digits, '.' and '-'.
	Name string `yaml:"name"`
	// DisplayName is shown for the person's ghosts on other networks.
	DisplayName string `yaml:"display_name"`
	// Accounts are "network:id" addresses, most preferred first.
	Accounts []string `yaml:"accounts"`
}

var identityName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]*$`)

// Validate checks c on its own, without the adapters' codecs; New checks
// addresses with them.
func (c *Config) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for i, id := range c.Identities {
		where := fmt.Sprintf("mapping.identities[%d]", i)
		if !identityName.MatchString(id.Name) {
			errs = append(errs, fmt.Errorf("%s.name: %q must be lowercase letters, digits, '.' and '-'", where, id.Name))
		}
		if seen[id.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q is listed twice", where, id.Name))
		}
		seen[id.Name] = true
		if len(id.Accounts) == 0 {
			errs = append(errs, fmt.Errorf("%s.accounts: a person needs at least one account", where))
		}
		for j, a := range id.Accounts {
			if _, ok := event.ParseAddress(a); !ok {
				errs = append(errs, fmt.Errorf("%s.accounts[%d]: %q is not \"network:id\" with network one of xmpp, matrix, sip", where, j, a))
			}
		}
	}
	for on, byFrom := range c.Ghosts {
		if !on.Valid() {
			errs = append(errs, fmt.Errorf("mapping.ghosts: unknown network %q", on))
		}
		for from, raw := range byFrom {
			if !from.Valid() || from == on {
				errs = append(errs, fmt.Errorf("mapping.ghosts.%s: %q is not another network", on, from))
				continue
			}
			if _, err := parseTemplate(raw, "{user}", "{domain}"); err != nil {
				errs = append(errs, fmt.Errorf("mapping.ghosts.%s.%s: %w", on, from, err))
			}
		}
	}
	for on, raw := range c.Aliases {
		if !on.Valid() {
			errs = append(errs, fmt.Errorf("mapping.aliases: unknown network %q", on))
		}
		if _, err := parseTemplate(raw, "{name}"); err != nil {
			errs = append(errs, fmt.Errorf("mapping.aliases.%s: %w", on, err))
		}
	}
	for i, r := range c.Watch {
		if err := r.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("mapping.watch[%d]: %w", i, err))
		}
	}
	inPortal := map[event.Address]int{}
	for i, p := range c.Portals {
		for _, room := range p.rooms() {
			where := fmt.Sprintf("mapping.portals[%d].%s", i, room.Network)
			if room.ID == "" {
				errs = append(errs, fmt.Errorf("%s: a portal needs a room on each network", where))
				continue
			}
			if err := validRoom(room); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				continue
			}
			if j, dup := inPortal[room]; dup {
				errs = append(errs, fmt.Errorf("%s: %s is in portal %d already", where, room.ID, j))
				continue
			}
			inPortal[room] = i
		}
		if len(p.Phones) > 0 && p.SIP == "" {
			errs = append(errs, fmt.Errorf("mapping.portals[%d].phones: phones are members of the portal's SIP address: set sip too", i))
		}
		phones := map[string]bool{}
		for j, ph := range p.Phones {
			where := fmt.Sprintf("mapping.portals[%d].phones[%d]", i, j)
			if err := validSIP(ph); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				continue
			}
			if ph == p.SIP {
				errs = append(errs, fmt.Errorf("%s: %s is the portal's own address", where, ph))
			}
			if phones[ph] {
				errs = append(errs, fmt.Errorf("%s: %s is listed twice", where, ph))
			}
			phones[ph] = true
		}
	}
	if c.OnDemand != nil {
		errs = append(errs, c.OnDemand.validate()...)
	}
	return errors.Join(errs...)
}
