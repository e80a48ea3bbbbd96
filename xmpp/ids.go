package xmpp

import (
	"context"
	"strings"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// roomStanzaID returns the stanza-id (XEP-0359) that room gave m, or "".
// Only the room's own ID is the same in every copy, and only the room may
// be trusted to have set it (XEP-0359 §5).
func roomStanzaID(m messageStanza, room jid.JID) string {
	for _, s := range m.StanzaIDs {
		if by, err := jid.Parse(s.By); err == nil && by.Equal(room) && s.ID != "" {
			return s.ID
		}
	}
	return ""
}

// linkReflection records, when m is the listener's copy of a post Parley
// made in room, that the room's stanza-id for it names the same message as
// the ID Parley posted it with (which the core links with the post's
// source): what later refers to the post in the room (a reply, a
// correction) names it by that stanza-id.
func (a *Adapter) linkReflection(ctx context.Context, m messageStanza, room jid.JID) {
	ids, ok := a.host.(bridges.MessageIDHost)
	if !ok || m.To != a.domain.String() || messageType(m.Type) != stanza.GroupChatMessage || m.body() == "" {
		return
	}
	from, err := jid.Parse(m.From)
	if err != nil {
		return
	}
	// Only from an occupant of Parley's: anyone may give a post an ID
	// that looks like Parley's.
	if nick := from.Resourcepart(); !a.rooms.ours(room.String(), nick) && !a.ghostNick(room.String(), nick) {
		return
	}
	sid := roomStanzaID(m, room)
	if sid == "" {
		return
	}
	for _, own := range ownIDs(m) {
		if !strings.HasPrefix(own, "parley-") {
			continue
		}
		if err := ids.SameMessage(ctx, event.XMPP, room.String()+"/"+sid, own); err != nil {
			a.log.Warn("xmpp room stanza-id not linked", "room", room.String(), "id", own, "stanza_id", sid, "error", err)
		}
		return
	}
}
