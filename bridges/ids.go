package bridges

import (
	"context"
	"fmt"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/store"
)

// MessageIDHost is what an adapter may ask of the core about the IDs one
// message has on the networks it crossed, beside Host (the Router is one).
// The core links a message's source ID with the ID its destination gave
// each copy (what Send returned) when the copy is delivered; an adapter
// adds the IDs only it learns later, such as the stanza-id a MUC gives a
// post, known from the room's reflection of it. Replies, edits, reactions
// and retractions use the map to find their target on another network.
type MessageIDHost interface {
	Host
	// SameMessage records that id and other, two IDs on network n, name
	// one message.
	SameMessage(ctx context.Context, n event.Network, id, other string) error
	// MessageID returns the ID on network on of the message known as id on
	// network n, and false when none is known.
	MessageID(ctx context.Context, n event.Network, id string, on event.Network) (string, bool, error)
}

// SameMessage implements MessageIDHost.
func (r *Router) SameMessage(ctx context.Context, n event.Network, id, other string) error {
	if err := r.store.LinkIDs(ctx, store.Same{A: store.MessageRef{Network: n, ID: id}, B: store.MessageRef{Network: n, ID: other}}); err != nil {
		return fmt.Errorf("link %s message IDs: %w", n, err)
	}
	return nil
}

// MessageID implements MessageIDHost.
func (r *Router) MessageID(ctx context.Context, n event.Network, id string, on event.Network) (string, bool, error) {
	return r.store.MessageID(ctx, store.MessageRef{Network: n, ID: id}, on)
}

var _ MessageIDHost = (*Router)(nil)
