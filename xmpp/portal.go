package xmpp

import (
	"context"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

var _ bridges.PortalNetwork = (*Adapter)(nil)

// PortalOpened implements bridges.PortalNetwork: the listener joins room, a
// portal's MUC opened while Parley runs, at once when the component is
// connected, as it joins the other portal rooms at each connect
// (joinListeners). When it is not connected, the next connect joins it
// with the others. A room Parley serves itself has no listener.
func (a *Adapter) PortalOpened(ctx context.Context, r event.Address) {
	if r.Network != event.XMPP {
		return
	}
	a.mu.Lock()
	connected := a.sess != nil
	a.mu.Unlock()
	if connected {
		a.listenTo(ctx, r)
	}
}
