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
// with the others.
func (a *Adapter) PortalOpened(ctx context.Context, r event.Address) {
	if r.Network != event.XMPP {
		return
	}
	room, err := parseBare(r.ID)
	if err != nil || room.Localpart() == "" {
		a.log.Warn("xmpp portal room is not a room JID", "room", r.ID, "error", err)
		return
	}
	a.mu.Lock()
	connected := a.sess != nil
	a.mu.Unlock()
	if !connected {
		return
	}
	a.rooms.room(room.String())
	nick, err := a.joinRoomWith(ctx, room, a.domain, listenerNick, a.listenerHistory(ctx, room.String()))
	if err != nil {
		a.log.Warn("xmpp listener could not join room", "room", room.String(), "error", err)
		return
	}
	a.log.Info("xmpp listening in room", "room", room.String(), "nick", nick)
}
