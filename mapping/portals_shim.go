package mapping

import (
	"maps"

	"github.com/parleygw/parley/event"
)

// WithPortal returns a copy of m whose portals also join rooms. It is a
// stand-in for the core's run-time portal registry, for the MUC service's
// tests; the registry replaces it.
func (m *Map) WithPortal(rooms ...event.Address) *Map {
	c := *m
	c.portals = maps.Clone(m.portals)
	for _, room := range rooms {
		for _, other := range rooms {
			if other != room {
				c.portals[room] = append(c.portals[room], other)
			}
		}
	}
	return &c
}
