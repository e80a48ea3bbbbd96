package bridges

import (
	"context"
	"fmt"
	"time"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
)

// presenceRetries bounds the Sends of one presence update: presence is state,
// and the next update makes a lost one moot.
const presenceRetries = 3

// presenceSlot holds the latest undelivered presence of one conversation.
// Presence is coalesced: a newer update replaces a pending one, so a flood
// of changes costs one Send per conversation at a time, and it never waits
// behind (or holds up) the chat messages of the conversation.
type presenceSlot struct {
	pending *event.Presence
}

// dispatchPresence resolves and coalesces an inbound presence update: a
// directed one to its one recipient, a broadcast one (To zero) to every
// watcher. It is not stored: after a restart, networks send presence afresh.
func (r *Router) dispatchPresence(ctx context.Context, p *event.Presence, m *mapping.Map) error {
	if p.Time.IsZero() {
		p.Time = r.now()
	}
	if p.To.IsZero() {
		return r.broadcastPresence(ctx, p, m)
	}
	origin := p.Header
	from, to, err := resolve(m, p.From, p.To)
	if err != nil {
		return err
	}
	if from, err = r.addressed.as(ctx, m, origin.From, to, from, rosterUse, chatUse); err != nil {
		return err
	}
	p.State, p.Status = r.recordPresence(origin.From, p.State, p.Status, m)
	if !m.MayWatch(to, origin.From) {
		return nil // the presence policy hides origin.From from this watcher
	}
	p.From, p.To = from, to
	if name := m.DisplayName(origin.From); name != "" {
		p.FromName = name
	}
	r.metrics.Received(origin.From.Network, event.KindPresence)
	r.queuePresence(p, m)
	return nil
}

// queuePresence puts p, addressed on its destination network, in the slot of
// its conversation, replacing any update still pending there.
func (r *Router) queuePresence(p *event.Presence, _ *mapping.Map) {
	key := conversation{p.From, p.To}
	r.mu.Lock()
	slot, busy := r.presence[key]
	if !busy {
		slot = &presenceSlot{}
		r.presence[key] = slot
	}
	slot.pending = p
	r.mu.Unlock()
	if !busy {
		r.workers.Add(1)
		go r.workPresence(key, slot)
	}
}

// recordPresence records state as the latest of account a and returns the
// state to show for its person (see mergedPresence).
func (r *Router) recordPresence(a event.Address, state event.PresenceState, status string, m *mapping.Map) (event.PresenceState, string) {
	r.mu.Lock()
	if state == event.Offline && status == "" {
		// What an absent entry means: the map holds only those who
		// are online, not everyone ever seen.
		delete(r.lastPresence, a)
	} else {
		r.lastPresence[a] = presenceOf{state, status}
	}
	r.mu.Unlock()
	return r.mergedPresence(a, presenceOf{state, status}, m)
}

// mergedPresence returns the state to show for the person of account a,
// whose own latest state is own: for an identity with several accounts,
// event.Merge of all of them (with the status text of the account that
// decided it); otherwise own. An account in a call counts as on the phone,
// whatever it said last.
func (r *Router) mergedPresence(a event.Address, own presenceOf, m *mapping.Map) (event.PresenceState, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	accounts := m.Accounts(a)
	if len(accounts) < 2 {
		if r.onPhone[a] > 0 {
			return event.OnThePhone, ""
		}
		return own.state, own.status
	}
	states := make([]event.PresenceState, 0, len(accounts))
	for _, acc := range accounts {
		states = append(states, r.presenceOfLocked(acc).state)
	}
	merged := event.Merge(states...)
	for _, acc := range accounts {
		if p := r.presenceOfLocked(acc); p.state == merged {
			return merged, p.status
		}
	}
	return merged, ""
}

// presenceOfLocked is the latest state of account a, on the phone while it
// is in a call. r.mu is held.
func (r *Router) presenceOfLocked(a event.Address) presenceOf {
	if r.onPhone[a] > 0 {
		return presenceOf{state: event.OnThePhone}
	}
	return r.lastPresence[a]
}

// setOnPhone marks the accounts as in a call (delta 1) or out of one (-1),
// and shows their persons' presence, on the phone or as it was before, to
// their watchers on every network.
func (r *Router) setOnPhone(ctx context.Context, delta int, accounts ...event.Address) {
	m := r.mapping.Load()
	r.mu.Lock()
	for _, a := range accounts {
		if r.onPhone[a] += delta; r.onPhone[a] <= 0 {
			delete(r.onPhone, a)
		}
	}
	r.mu.Unlock()
	for _, a := range accounts {
		r.mu.Lock()
		own := r.lastPresence[a]
		r.mu.Unlock()
		state, status := r.mergedPresence(a, own, m)
		if err := r.fanoutPresence(ctx, a, state, status, r.now(), m); err != nil {
			r.log.Warn("call: show presence", "account", a, "err", err)
		}
	}
}

type presenceOf struct {
	state  event.PresenceState
	status string
}

// workPresence delivers the latest presence of one conversation until none
// is pending. A transient failure is retried a few times unless a newer
// update arrives; a permanent one is dropped (no failure report: the sender
// did not send a message).
func (r *Router) workPresence(key conversation, slot *presenceSlot) {
	defer r.workers.Done()
	ctx := r.runCtx
	for attempt := 0; ; {
		r.mu.Lock()
		p := slot.pending
		if p == nil {
			delete(r.presence, key)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()

		dst, ok := r.networks[p.To.Network]
		var err error
		if ok {
			_, err = dst.Send(ctx, p)
		} else {
			err = Permanent(fmt.Errorf("network %s is not enabled", p.To.Network))
		}
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		newer := slot.pending != p
		if err == nil || IsPermanent(err) || newer || attempt+1 >= presenceRetries {
			if !newer {
				slot.pending = nil
			}
			attempt = 0
		} else {
			attempt++
		}
		r.mu.Unlock()
		switch {
		case err == nil:
			r.metrics.Delivered(p.To.Network, event.KindPresence, r.now().Sub(p.Time))
		case newer:
		case IsPermanent(err) || attempt == 0:
			r.log.Debug("presence not delivered", "network", p.To.Network, "to", p.To.ID, "err", err)
		default:
			select {
			case <-ctx.Done():
				return
			case <-time.After(r.retry.Delay(attempt - 1)):
			}
		}
	}
}
