package store

import (
	"context"
	"fmt"

	"github.com/parleygw/parley/event"
)

// MessageRef names a message by the ID one network gave it: the source ID
// an adapter dispatched it with, or the ID a destination answered a Send
// with (a Matrix event ID, a stanza ID, a MUC's stanza-id).
type MessageRef struct {
	Network event.Network
	ID      string
}

// Same records that A and B name one message (its copy on another network,
// or another ID of it on the same network).
type Same struct{ A, B MessageRef }

// MessageIDs is the durable map between the IDs one message has on the
// networks it crossed, so that what refers to a message later (a reply,
// an edit, a reaction, a retraction) finds its copy on another network,
// across restarts. It is kept for good, like the messages themselves.
type MessageIDs interface {
	// LinkIDs records that same.A and same.B name one message. Recording
	// a link again is not an error.
	LinkIDs(ctx context.Context, same Same) error
	// MessageID returns the ID on network on of the message that ref
	// names: linked with ref, or linked with a message ID that ref is
	// linked with (a message carried from Matrix into a MUC is its Matrix
	// event ID, the ID Parley posted it with and the MUC's stanza-id).
	// ok is false when none is known.
	MessageID(ctx context.Context, ref MessageRef, on event.Network) (id string, ok bool, err error)
}

func (s Same) valid() error {
	if s.A.ID == "" || s.B.ID == "" || s.A.Network == "" || s.B.Network == "" || s.A == s.B {
		return fmt.Errorf("link message IDs %v and %v: both must be set and differ", s.A, s.B)
	}
	return nil
}

// LinkIDs implements MessageIDs.
func (m *Memory) LinkIDs(_ context.Context, same Same) error {
	if err := same.valid(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.link(same)
	return nil
}

// link records same; m.mu is held.
func (m *Memory) link(same Same) {
	if m.ids == nil {
		m.ids = map[MessageRef]map[MessageRef]bool{}
	}
	for _, p := range [][2]MessageRef{{same.A, same.B}, {same.B, same.A}} {
		if m.ids[p[0]] == nil {
			m.ids[p[0]] = map[MessageRef]bool{}
		}
		m.ids[p[0]][p[1]] = true
	}
}

// MessageID implements MessageIDs.
func (m *Memory) MessageID(ctx context.Context, ref MessageRef, on event.Network) (string, bool, error) {
	return nearest(ctx, ref, on, func(_ context.Context, r MessageRef) ([]MessageRef, error) {
		m.mu.Lock()
		defer m.mu.Unlock()
		out := make([]MessageRef, 0, len(m.ids[r]))
		for o := range m.ids[r] {
			out = append(out, o)
		}
		return out, nil
	})
}

// maxIDHops bounds the links followed from a message ID: a post from Matrix
// into a MUC and on to a phone is its Matrix event ID, the ID Parley posted
// it with in the MUC, the MUC's stanza-id and the phone's copy.
const maxIDHops = 3

// nearest returns the ID on network on that the fewest links separate from
// ref (the smallest of those at the same distance), following at most
// maxIDHops links, each read with linked.
func nearest(ctx context.Context, ref MessageRef, on event.Network, linked func(context.Context, MessageRef) ([]MessageRef, error)) (string, bool, error) {
	seen := map[MessageRef]bool{ref: true}
	frontier := []MessageRef{ref}
	for range maxIDHops {
		var next []MessageRef
		best := ""
		for _, r := range frontier {
			others, err := linked(ctx, r)
			if err != nil {
				return "", false, err
			}
			for _, o := range others {
				if seen[o] {
					continue
				}
				seen[o] = true
				next = append(next, o)
				if o.Network == on && (best == "" || o.ID < best) {
					best = o.ID
				}
			}
		}
		if best != "" {
			return best, true, nil
		}
		frontier = next
	}
	return "", false, nil
}

// LinkIDs implements MessageIDs.
func (s *SQL) LinkIDs(ctx context.Context, same Same) error {
	if err := same.valid(); err != nil {
		return err
	}
	if err := s.w.do(ctx, &write{links: []Same{same}}); err != nil {
		return fmt.Errorf("link message IDs: %w", err)
	}
	return nil
}

// MessageID implements MessageIDs.
func (s *SQL) MessageID(ctx context.Context, ref MessageRef, on event.Network) (string, bool, error) {
	id, ok, err := nearest(ctx, ref, on, s.linkedIDs)
	if err != nil {
		return "", false, fmt.Errorf("look up the %s ID of %s message %s: %w", on, ref.Network, ref.ID, err)
	}
	return id, ok, nil
}

// linkedIDs returns the message IDs linked with ref.
func (s *SQL) linkedIDs(ctx context.Context, ref MessageRef) ([]MessageRef, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT other_network, other_id FROM message_ids WHERE network = $1 AND id = $2`,
		string(ref.Network), ref.ID)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []MessageRef
	for rows.Next() {
		var network, id string
		if err := rows.Scan(&network, &id); err != nil {
			return nil, err
		}
		out = append(out, MessageRef{Network: event.Network(network), ID: id})
	}
	return out, rows.Err()
}
