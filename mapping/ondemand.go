package mapping

import (
	"errors"
	"fmt"
	"github.com/parleygw/parley/internal/escape"
	"path"
	"strings"

	"github.com/parleygw/parley/event"
)

// ErrNotAllowed is returned by MayOpenPortal when the on-demand policy does
// not let a portal be opened.
var ErrNotAllowed = errors.New("not allowed by mapping.portals_on_demand")

// OnDemand is the policy of portals opened at run time, the YAML's
// mapping.portals_on_demand: who may open one, and which group-chat services
// it may reach. Without the section nobody may.
type OnDemand struct {
	// Users are patterns over the "network:id" address of the person who
	// opens a portal, as in watch rules ('*' is any text):
	// "matrix:@*:example.org" is everyone on that homeserver. "*" is
	// anyone.
	Users []string `yaml:"users"`
	// MUCServices are the XMPP multi-user chat services (domains, such as
	// conference.example.org) whose rooms a portal may join.
	MUCServices []string `yaml:"muc_services"`
}

// validate checks the policy's patterns and domains.
func (o *OnDemand) validate() []error {
	const where = "mapping.portals_on_demand"
	var errs []error
	if len(o.Users) == 0 {
		errs = append(errs, fmt.Errorf("%s.users: list who may open portals (\"*\" for anyone)", where))
	}
	for i, p := range o.Users {
		if p == "" {
			errs = append(errs, fmt.Errorf("%s.users[%d]: pattern is empty; use \"*\" for anyone", where, i))
			continue
		}
		if _, err := path.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("%s.users[%d]: pattern %q: %w", where, i, p, err))
		}
	}
	if len(o.MUCServices) == 0 {
		errs = append(errs, fmt.Errorf("%s.muc_services: list the MUC services portals may reach", where))
	}
	for i, d := range o.MUCServices {
		if !validDomain(d) {
			errs = append(errs, fmt.Errorf("%s.muc_services[%d]: %q is not a domain such as conference.example.org", where, i, d))
		}
	}
	return errs
}

// validDomain accepts lowercase DNS names (and IP literals written as
// such): what an XMPP service's address looks like once prepared.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 || d[0] == '.' || d[len(d)-1] == '.' || strings.Contains(d, "..") {
		return false
	}
	for i := 0; i < len(d); i++ {
		if !escape.Plain(d[i]) {
			return false
		}
	}
	return true
}

// CheckRoom checks the form of a room's address on its network, as the
// YAML's portals must be written.
func CheckRoom(room event.Address) error {
	if room.ID == "" {
		return fmt.Errorf("%s room without an address", room.Network)
	}
	return validRoom(room)
}

// OnDemand returns the on-demand policy, or nil when portals may not be
// opened at run time.
func (m *Map) OnDemand() *OnDemand { return m.onDemand }

// MayOpenPortal checks the on-demand policy: may by open a portal that
// joins rooms? by is the zero Address when the person is not known yet
// (a Matrix homeserver asks about an alias without saying who wants it):
// then only the rooms are checked. Errors wrap ErrNotAllowed and say which
// rule refused.
func (m *Map) MayOpenPortal(by event.Address, rooms []event.Address) error {
	o := m.onDemand
	if o == nil {
		return fmt.Errorf("%w: portals on demand are off", ErrNotAllowed)
	}
	for _, room := range rooms {
		if room.Network != event.XMPP {
			continue
		}
		_, service, _ := strings.Cut(room.ID, "@")
		allowed := false
		for _, s := range o.MUCServices {
			if s == service {
				allowed = true
				break
			}
		}
		if !allowed {
			return fmt.Errorf("%w: %s is not a MUC service portals may reach", ErrNotAllowed, service)
		}
	}
	if by == (event.Address{}) {
		return nil
	}
	who := by.String()
	for _, p := range o.Users {
		if match(p, who) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s may not open portals", ErrNotAllowed, by.ID)
}
