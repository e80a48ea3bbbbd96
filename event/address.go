// Package event is Parley's shared model of traffic: addresses on each network
// and the typed events that adapters hand to the routing core.
//
// The package has no dependencies beyond the standard library. Only the
// adapter that owns a network parses or formats the IDs of its addresses;
// everywhere else an ID is an opaque string. IDs are stored, so their format is
// persistent: changing it needs a store migration.
package event

import "strings"

// Network names one of the networks Parley bridges.
type Network string

// The networks Parley knows.
const (
	XMPP   Network = "xmpp"
	Matrix Network = "matrix"
	SIP    Network = "sip"
)

// Networks lists every known network, in a stable order.
var Networks = []Network{XMPP, Matrix, SIP}

// Valid reports whether n is one of the known networks.
func (n Network) Valid() bool {
	switch n {
	case XMPP, Matrix, SIP:
		return true
	}
	return false
}

// Address is an identity on one network: a JID on XMPP, an MXID on Matrix, a
// SIP URI on SIP. The zero Address means "nobody".
type Address struct {
	Network Network
	ID      string
}

// IsZero reports whether a is the zero Address.
func (a Address) IsZero() bool { return a.Network == "" && a.ID == "" }

// String formats a as "network:id", the form used in logs and in the YAML
// identity map. ParseAddress reverses it.
func (a Address) String() string { return string(a.Network) + ":" + a.ID }

// ParseAddress parses the "network:id" form written by Address.String. It
// checks the network name only; the owning adapter validates the ID.
func ParseAddress(s string) (Address, bool) {
	n, id, ok := strings.Cut(s, ":")
	if !ok || id == "" || !Network(n).Valid() {
		return Address{}, false
	}
	return Address{Network: Network(n), ID: id}, true
}
