package sip

import (
	"context"
	"fmt"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// presenceMediaType is the media type of presence documents (RFC 3863).
const presenceMediaType = "application/pidf+xml"

// sendPresence implements Send for a *event.Presence: p.From is a ghost or
// alias under the adapter's domain (the presentity), p.To a SIP watcher.
// The state is remembered for the pair, so that a later SUBSCRIBE is
// answered with it, and a NOTIFY is scheduled in each subscription dialog
// the watcher holds for the presentity (at most one per notify interval;
// the latest state wins). Without a subscription, Send does nothing and
// returns nil: the watcher may have gone, and the core keeps its watchers
// durably while SIP subscriptions end with Parley (see subscriptions).
func (a *Adapter) sendPresence(_ context.Context, p *event.Presence) (string, error) {
	if p.From.Network != event.SIP || p.To.Network != event.SIP {
		return "", bridges.Permanent(fmt.Errorf("send presence to %s: addresses %s → %s are not on the SIP network", p.To.ID, p.From, p.To))
	}
	_, fromHost, err := AddressCodec{}.Split(p.From.ID)
	if err != nil {
		return "", bridges.Permanent(fmt.Errorf("send presence to %s: %w", p.To.ID, err))
	}
	if fromHost != a.domain {
		return "", bridges.Permanent(fmt.Errorf("send presence to %s: presentity %s is not under the domain %s", p.To.ID, p.From.ID, a.domain))
	}
	if _, _, err := (AddressCodec{}).Split(p.To.ID); err != nil {
		return "", bridges.Permanent(fmt.Errorf("send presence to %s: %w", p.To.ID, err))
	}
	a.subs.update(a, pairKey{presentity: p.From.ID, watcher: p.To.ID}, presenceNote{state: p.State, status: p.Status})
	return "", nil
}

// presenceNote is one presence state with its free text.
type presenceNote struct {
	state  event.PresenceState
	status string
}
