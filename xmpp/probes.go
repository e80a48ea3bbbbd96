package xmpp

import (
	"context"
	"strings"

	"github.com/parleygw/parley/event"
)

// probePrefix starts the links of the pairs to probe after a restart: a
// ghost that asked a user for their presence, so that some watcher sees
// it. The server sends a user's presence to a subscribed ghost when it
// changes, and Parley keeps none across a restart: without a probe, a
// watcher would see the user offline until their next change.
const probePrefix = "probe:"

// probeKey is the link of the pair ghost → user (bare JIDs, which hold no
// space).
func probeKey(ghost, user string) string { return probePrefix + ghost + " " + user }

// rememberProbe records, after s was sent, whether its ghost is to probe
// its user after a restart: yes for a subscription request, no once it is
// cancelled. A failure is logged: it costs a probe, not the subscription.
func (a *Adapter) rememberProbe(ctx context.Context, s *event.Subscription) {
	links := a.host.Links(event.XMPP)
	if links == nil {
		return
	}
	from, to, err := a.outboundAddresses(&s.Header)
	if err != nil {
		return // Send checked them
	}
	key := probeKey(from.Bare().String(), to.Bare().String())
	if s.Active {
		err = links.Put(ctx, key, "")
	} else {
		err = links.Delete(ctx, key)
	}
	if err != nil {
		a.log.Warn("xmpp probe list not updated", "ghost", from.Bare().String(), "user", to.Bare().String(), "error", err)
	}
}

// savedProbes returns the pairs rememberProbe recorded.
func (a *Adapter) savedProbes(ctx context.Context) []presencePair {
	links := a.host.Links(event.XMPP)
	if links == nil {
		return nil
	}
	saved, err := links.List(ctx, probePrefix)
	if err != nil {
		a.log.Warn("xmpp probe list not read", "error", err)
		return nil
	}
	pairs := make([]presencePair, 0, len(saved))
	for key := range saved {
		ghost, user, ok := strings.Cut(strings.TrimPrefix(key, probePrefix), " ")
		if ok {
			pairs = append(pairs, presencePair{user: user, ghost: ghost})
		}
	}
	return pairs
}

// toProbe returns the pairs to probe on a new connection: those that had
// online resources on the last one, and those recorded, once each.
func (a *Adapter) toProbe(ctx context.Context, stale []presencePair) []presencePair {
	seen := make(map[presencePair]bool, len(stale))
	out := make([]presencePair, 0, len(stale))
	for _, p := range append(stale, a.savedProbes(ctx)...) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}
