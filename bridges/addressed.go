package bridges

import (
	"context"
	"fmt"
	"sync"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/store"
)

// addressedNS is the store namespace of the addresses people wrote to: one
// link per use (chat or roster) and conversation between a YAML identity's
// account and someone else.
const addressedNS = "addressed"

// The uses of an address that addressed tells apart: a client keeps chats
// and roster items by address, and a user may chat with one address of an
// identity and have another in the roster.
const (
	chatUse   = "chat"   // the address someone sends messages to
	rosterUse = "roster" // the address someone subscribed to (or probes)
)

// addressed remembers, per conversation with a YAML identity, the address
// the other person wrote or subscribed to, so that the identity's answers
// and presence come from that address and the other person's client keeps
// one chat and one roster item. mapping.Appearance alone would answer from
// the identity's alias, also to someone who wrote to its ghost. Only
// identities need this: everyone else has one address on each network. It
// is cached in memory and written through to the store, so it survives
// restarts, and it has its own lock, like watchers.
type addressed struct {
	mu    sync.Mutex
	st    store.Links
	cache map[addressedKey]event.Address // the zero Address: none recorded
}

// addressedKey is one use of an address in the conversation of an
// identity's account (from) with someone else (to).
type addressedKey struct {
	use string
	conversation
}

func newAddressed(st store.Links) *addressed {
	return &addressed{st: st, cache: map[addressedKey]event.Address{}}
}

// note records that peer used written (for use), which m resolved to
// account. It writes the store only when that changes what is recorded.
func (a *addressed) note(ctx context.Context, m *mapping.Map, use string, peer, written, account event.Address) error {
	if m.Accounts(account) == nil {
		return nil
	}
	key := addressedKey{use, conversation{account, peer}}
	a.mu.Lock()
	defer a.mu.Unlock()
	have, err := a.get(ctx, key)
	if err != nil || have == written {
		return err
	}
	if err := a.st.PutLink(ctx, addressedNS, key.link(), written.String()); err != nil {
		return fmt.Errorf("record the address %s wrote to: %w", peer, err)
	}
	a.cache[key] = written
	return nil
}

// as returns the address account appears as towards peer: the first
// address recorded for one of uses that m still maps to account, otherwise
// def, the appearance m gives.
func (a *addressed) as(ctx context.Context, m *mapping.Map, account, peer, def event.Address, uses ...string) (event.Address, error) {
	if m.Accounts(account) == nil {
		return def, nil
	}
	for _, use := range uses {
		a.mu.Lock()
		written, err := a.get(ctx, addressedKey{use, conversation{account, peer}})
		a.mu.Unlock()
		if err != nil {
			return def, err
		}
		if written.IsZero() || written.Network != def.Network {
			continue
		}
		if _, to, err := m.Resolve(peer, written); err == nil && to == account {
			return written, nil
		} // else the mapping changed since
	}
	return def, nil
}

// get returns what is recorded for key, loading it from the store the first
// time. a.mu is held.
func (a *addressed) get(ctx context.Context, key addressedKey) (event.Address, error) {
	if v, ok := a.cache[key]; ok {
		return v, nil
	}
	s, ok, err := a.st.GetLink(ctx, addressedNS, key.link())
	if err != nil {
		return event.Address{}, fmt.Errorf("read the address %s wrote to: %w", key.to, err)
	}
	var v event.Address
	if ok {
		v, _ = event.ParseAddress(s)
	}
	a.cache[key] = v
	return v, nil
}

// link is the store key of k: its use and both "network:id" addresses,
// separated by newlines, which no address contains.
func (k addressedKey) link() string { return k.use + "\n" + k.from.String() + "\n" + k.to.String() }
