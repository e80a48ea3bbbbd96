// Package bridges is Parley's routing core. It defines what the core needs of
// a network adapter (Network) and what an adapter may ask of the core (Host),
// and implements Host with Router: per-conversation ordered queues, a durable
// outbox, retries with backoff, and failure reports back to senders.
//
// The package never imports a protocol library; adapters depend on it, not
// the other way round.
package bridges

import (
	"context"

	"github.com/parleygw/parley/event"
)

// Network is one adapter, as the routing core sees it.
//
// Lifecycle: New (no I/O, in the adapter's package) → Start → Stop. Start
// returns once the adapter's goroutines run; losing or failing a connection
// is reported through Host.SetState, never returned from Start.
type Network interface {
	// Network names the network the adapter serves.
	Network() event.Network
	// Start begins serving. host stays valid until Stop returns.
	Start(ctx context.Context, host Host) error
	// Stop stops serving and releases connections, waiting at most until ctx
	// is done.
	Stop(ctx context.Context) error
	// Send delivers evt, whose addresses are already on this network. It
	// returns the ID the network gave the delivered event (may be empty).
	//
	// The router calls Send from one goroutine per conversation, so events of
	// one conversation are never sent concurrently, while different
	// conversations are. An error wrapped with Permanent is not retried and
	// is reported to the sender; any other error is retried with backoff. A
	// Send with the same evt.Head().ID may happen again after a crash, so an
	// adapter should make repeated sends idempotent where its protocol can;
	// AttemptOf(ctx) tells when an earlier Send of it may have reached the
	// network.
	Send(ctx context.Context, evt event.Event) (string, error)
}

// Host is what an adapter may ask of the routing core. Its methods are safe
// for concurrent use.
type Host interface {
	// Dispatch hands an inbound event to the core. Its addresses are on the
	// adapter's own network: From is the real sender, To the address they
	// wrote to (a ghost or an alias that Parley serves).
	//
	// Dispatch returns nil once the event is durably accepted (or was already
	// accepted earlier: duplicates are recognised by From.Network and ID), so
	// the adapter may acknowledge it on its network only then. It returns an
	// error wrapping ErrNoRoute when To maps to nobody, ErrRefused when the
	// sender may not use the gateway, or another error when the event could
	// not be stored; the adapter answers with its protocol's error.
	Dispatch(ctx context.Context, evt event.Event) error
	// SetState records the adapter's connection state, shown on /readyz.
	// err, when not nil, says why (a bad secret, a refused connection).
	SetState(n event.Network, s State, err error)
	// Links returns a durable key-value map private to network n, where an
	// adapter keeps what it learns (which room is the DM with whom, which
	// transactions it has seen).
	Links(n event.Network) Links
	// Profile returns the display name the YAML identity map gives addr, or
	// "" when it gives none.
	Profile(addr event.Address) string
	// Reachable tells the core that addr, on the adapter's network, can take
	// events again (a SIP user registered, say): events waiting for it after
	// a failed Send are tried again at once instead of after their backoff.
	Reachable(addr event.Address)
}

// RoomHost is what an adapter that carries group chats may ask of the
// core, beside Host (the Host given to Start is always one).
//
// A message in a room arrives at the core with Header.Room set, From the
// participant (a real address of the adapter's network) and To the room as
// the YAML's portal names it. The core sends it on to the portal's room on
// each other network, with Room set, To that room and From the
// participant's appearance there (their ghost, or their identity's alias):
// the adapter posts it as that participant, joining the room first when
// needed.
//
// A portal's SIP room is no group chat but an address that phones write
// to: the core sends a post to each phone in it instead, with Room set,
// From the room, To the phone and FromName the speaker, and a phone's own
// membership change (it joined by writing or asking, or left) as an
// event.Member from the room to the phone.
type RoomHost interface {
	Host
	// Rooms returns the rooms of network n that are in a portal, for the
	// adapter to join and to listen in.
	Rooms(n event.Network) []event.Address
}

// RosterHost is what an adapter may ask of the core to tell a user who is
// in a room: the Host given to Start is one. Only a portal's SIP room has
// a roster in the core (SIP has no group chat that would keep one).
type RosterHost interface {
	// RoomMembers returns who is in the portal of room, a portal's SIP
	// address: the participants of its other rooms that Parley saw join or
	// post (sorted by name), then the phones in the SIP room. It returns
	// an error wrapping ErrNoRoute for any other room.
	RoomMembers(ctx context.Context, room event.Address) ([]RoomMember, error)
}

// Links is a durable key-value map owned by one adapter.
type Links interface {
	// Get returns the value of key; ok is false when there is none.
	Get(ctx context.Context, key string) (value string, ok bool, err error)
	// Put sets key to value, replacing any earlier value.
	Put(ctx context.Context, key, value string) error
	// Delete removes key; removing an absent key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the keys that start with prefix, with their values.
	List(ctx context.Context, prefix string) (map[string]string, error)
}
