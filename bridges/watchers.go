package bridges

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/store"
)

// watchersNS is the store namespace of the watcher registry: one link per
// (presentity, watcher) pair of real addresses.
const watchersNS = "watchers"

// watchers is the durable registry of who watches whose presence, cached in
// memory and written through to the store on every change. It has its own
// lock, so store I/O here never holds up message routing.
type watchers struct {
	mu    sync.Mutex
	st    store.Links
	cache map[event.Address]map[event.Address]struct{}
}

func newWatchers(st store.Links) *watchers {
	return &watchers{st: st, cache: map[event.Address]map[event.Address]struct{}{}}
}

// list returns the watchers of p.
func (w *watchers) list(ctx context.Context, p event.Address) ([]event.Address, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	set, err := w.of(ctx, p)
	if err != nil {
		return nil, err
	}
	out := make([]event.Address, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	return out, nil
}

// of returns the watchers of p, loading them from the store the first time.
// w.mu is held.
func (w *watchers) of(ctx context.Context, p event.Address) (map[event.Address]struct{}, error) {
	if set, ok := w.cache[p]; ok {
		return set, nil
	}
	links, err := w.st.ListLinks(ctx, watchersNS, watcherPrefix(p))
	if err != nil {
		return nil, fmt.Errorf("read watchers of %s: %w", p, err)
	}
	set := make(map[event.Address]struct{}, len(links))
	for key := range links {
		if a, ok := event.ParseAddress(strings.TrimPrefix(key, watcherPrefix(p))); ok {
			set[a] = struct{}{}
		}
	}
	w.cache[p] = set
	return set, nil
}

// set records that watcher does (or no longer does) watch p, and reports
// whether that changed anything. Each pair is its own link, so a change
// writes one row however many watchers p has.
func (w *watchers) set(ctx context.Context, p, watcher event.Address, active bool) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	set, err := w.of(ctx, p)
	if err != nil {
		return false, err
	}
	_, had := set[watcher]
	if had == active {
		return false, nil
	}
	key := watcherPrefix(p) + watcher.String()
	if active {
		err = w.st.PutLink(ctx, watchersNS, key, "1")
	} else {
		err = w.st.DeleteLink(ctx, watchersNS, key)
	}
	if err != nil {
		return false, fmt.Errorf("record watcher of %s: %w", p, err)
	}
	if active {
		set[watcher] = struct{}{}
	} else {
		delete(set, watcher)
	}
	return true, nil
}

// watcherPrefix is the key prefix of p's watchers: "network:id" and a
// newline, which no address contains.
func watcherPrefix(p event.Address) string { return p.String() + "\n" }

// subscriptionSeq makes IDs for subscriptions that came without one.
var subscriptionSeq atomic.Uint64

// dispatchSubscription records a watcher, answers it with the presentity's
// last known presence, and forwards the subscription to the presentity's
// network through the outbox (an XMPP user must approve the watcher's
// ghost before their server shares presence with it).
func (r *Router) dispatchSubscription(ctx context.Context, s *event.Subscription, m *mapping.Map) error {
	origin := s.Header
	if origin.ID == "" {
		origin.ID = fmt.Sprintf("subscription/%d/%d", time.Now().UnixNano(), subscriptionSeq.Add(1))
		s.ID = origin.ID
	}
	ghost, presentity, err := resolve(m, s.From, s.To)
	if err != nil {
		return err
	}
	if s.Active && !m.MayWatch(origin.From, presentity) {
		return fmt.Errorf("%w: the presence policy does not let %s watch %s", ErrRefused, origin.From, presentity)
	}
	if s.Active {
		// Presence then comes from the address the watcher subscribed to.
		if err := r.addressed.note(ctx, m, rosterUse, origin.From, origin.To, presentity); err != nil {
			return err
		}
	}
	// A subscription request comes from the address the presentity knows.
	if ghost, err = r.addressed.as(ctx, m, origin.From, presentity, ghost, rosterUse, chatUse); err != nil {
		return err
	}
	changed, err := r.watchers.set(ctx, presentity, origin.From, s.Active)
	if err != nil {
		return err
	}
	r.mu.Lock()
	last, known := r.lastPresence[presentity]
	r.mu.Unlock()
	if s.Active && known {
		// The presence the watcher's network shows, on behalf of the
		// presentity: merged for an identity.
		state, status := r.mergedPresence(presentity, last, m)
		r.queuePresence(&event.Presence{Header: event.Header{From: origin.To, To: origin.From, Time: r.now()}, State: state, Status: status}, m)
	}
	if !changed {
		return nil
	}
	s.From, s.To = ghost, presentity
	e := store.Entry{Origin: origin, Event: s, Accepted: r.now()}
	dup, err := r.store.Enqueue(ctx, &e)
	if err != nil {
		return fmt.Errorf("accept subscription of %s to %s: %w", origin.From, origin.To, err)
	}
	if !dup {
		r.metrics.Received(origin.From.Network, event.KindSubscription)
		r.push(e)
	}
	return nil
}

// broadcastPresence sends a presentity's presence to each of its watchers
// (and to the watchers of the other accounts of its identity), each as its
// own network shows the presentity.
func (r *Router) broadcastPresence(ctx context.Context, p *event.Presence, m *mapping.Map) error {
	state, status := r.recordPresence(p.From, p.State, p.Status, m)
	r.metrics.Received(p.From.Network, event.KindPresence)
	return r.fanoutPresence(ctx, p.From, state, status, p.Time, m)
}

// fanoutPresence sends the person of account presentity, in state, to every
// watcher of any of the person's accounts.
func (r *Router) fanoutPresence(ctx context.Context, presentity event.Address, state event.PresenceState, status string, at time.Time, m *mapping.Map) error {
	accounts := m.Accounts(presentity)
	if accounts == nil {
		accounts = []event.Address{presentity}
	}
	var targets []conversation // {the account watched, its watcher}
	for _, acc := range accounts {
		ws, err := r.watchers.list(ctx, acc)
		if err != nil {
			return err
		}
		for _, w := range ws {
			targets = append(targets, conversation{acc, w})
		}
	}
	for _, t := range targets {
		w := t.to
		if !m.MayWatch(w, presentity) {
			continue // recorded before the policy changed
		}
		from, err := m.Appearance(presentity, w.Network)
		if err == nil {
			// The address the watcher subscribed to, if it was another.
			from, err = r.addressed.as(ctx, m, t.from, w, from, rosterUse, chatUse)
		}
		if err != nil {
			r.log.Debug("presence has no appearance for a watcher", "presentity", presentity, "watcher", w, "err", err)
			continue
		}
		r.queuePresence(&event.Presence{Header: event.Header{From: from, To: w, FromName: m.DisplayName(presentity), Time: at},
			State: state, Status: status}, m)
	}
	return nil
}
