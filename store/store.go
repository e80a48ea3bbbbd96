// Package store persists what Parley must not lose: the outbox of accepted
// events not yet delivered, the source IDs already accepted (for duplicate
// detection), the links each adapter learns, and the map between message IDs
// on different networks.
//
// Open returns SQLite (pure Go, one file) by default, or PostgreSQL when given
// a postgres:// DSN; Memory is a volatile implementation for tests and
// benchmarks. All implementations are safe for concurrent use.
package store

import (
	"context"
	"time"

	"github.com/parleygw/parley/event"
)

// Store is everything Parley persists.
type Store interface {
	Outbox
	Links
	MessageIDs
	// Close releases the store.
	Close() error
}

// Entry is one accepted event waiting in the outbox.
type Entry struct {
	// Seq orders entries; the outbox assigns it.
	Seq int64
	// Origin is the event's header as it was received, with addresses on the
	// source network. Origin.From.Network and Origin.ID identify the event.
	Origin event.Header
	// Event is the translated event, addressed on the destination network.
	Event event.Event
	// Accepted is when the event entered the outbox.
	Accepted time.Time
}

// Outbox holds accepted events until their destination takes them.
type Outbox interface {
	// Enqueue stores the entries of one accepted event, in order, under
	// one duplicate record, and sets their Seq; all of them or none are
	// stored. The first entry's origin network and ID identify the event
	// (an event going to several destinations, say the rooms of a portal
	// and each member phone, is one entry per destination). If an event
	// with that network and ID was accepted before (within the retention
	// of the duplicate record), Enqueue stores nothing and returns dup =
	// true. Enqueue without entries is an error.
	Enqueue(ctx context.Context, entries ...*Entry) (dup bool, err error)
	// Done removes the entry seq, and records the message IDs same links
	// (the delivered copy of a message, say) in the same write; removing
	// an absent entry is not an error.
	Done(ctx context.Context, seq int64, same ...Same) error
	// Pending returns every entry still in the outbox, in Seq order.
	Pending(ctx context.Context) ([]Entry, error)
	// ForgetBefore drops duplicate records older than t.
	ForgetBefore(ctx context.Context, t time.Time) error
}

// Links is a durable key-value map, scoped by namespace (each adapter has its
// own).
type Links interface {
	GetLink(ctx context.Context, ns, key string) (value string, ok bool, err error)
	PutLink(ctx context.Context, ns, key, value string) error
	DeleteLink(ctx context.Context, ns, key string) error
	// ListLinks returns the links of ns whose key starts with prefix.
	ListLinks(ctx context.Context, ns, prefix string) (map[string]string, error)
}
