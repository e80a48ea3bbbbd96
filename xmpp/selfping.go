package xmpp

import (
	"context"
	"encoding/xml"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// MUC self-ping (XEP-0410): a room may lose an occupant without telling it
// (the room's server restarted and forgot it, the room was destroyed and
// made again, an error bounced by the occupant's server got it kicked). An
// occupant that is out sees nothing of the room: for the listener that
// means posts not bridged. So each of Parley's occupants of a room that
// stayed silent for Config.SelfPing pings its own occupant JID. The room
// answers for an occupant (a result, or one of the errors XEP-0410 §3
// lists as still joined); any other error means it is out: the listener
// joins again, asking for what it missed since the room's cursor (see
// catchup.go), and a ghost is forgotten as an occupant, so that it joins
// again before its next post. No answer tells nothing: the connection's
// own checks deal with a server that is gone.

// nsPing is XEP-0199's namespace, which XEP-0410 uses.
const nsPing = "urn:xmpp:ping"

// hear records that a stanza came from room at t.
func (r *rooms) hear(room string, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.rooms[room]; s != nil {
		s.heard = t
	}
}

// silent returns the occupants of Parley in the rooms that stayed silent
// since before, by room: JID and nick.
func (r *rooms) silent(before time.Time) map[string]map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]map[string]string{}
	for room, s := range r.rooms {
		if s.heard.After(before) || len(s.nickOf) == 0 {
			continue
		}
		out[room] = map[string]string{}
		for who, nick := range s.nickOf {
			out[room][who] = nick
		}
	}
	return out
}

// selfPings pings, every fifth of Config.SelfPing, the occupants of the
// rooms silent for Config.SelfPing, until ctx ends. It runs once per
// session, apart from the connection goroutine.
func (a *Adapter) selfPings(ctx context.Context) {
	every := a.cfg.selfPing()
	t := time.NewTicker(every / 5)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for roomID, occupants := range a.rooms.silent(a.now().Add(-every)) {
			room, err := jid.Parse(roomID)
			if err != nil {
				continue
			}
			for who, nick := range occupants {
				if ctx.Err() != nil {
					return
				}
				a.selfPing(ctx, room, who, nick)
			}
		}
	}
}

// selfPing pings the occupant room/nick from who and, when the room says
// who is not in it, has the listener join again or forgets the ghost.
func (a *Adapter) selfPing(ctx context.Context, room jid.JID, who, nick string) {
	from, err1 := jid.Parse(who)
	occupant, err2 := room.WithResource(nick)
	if err1 != nil || err2 != nil {
		return
	}
	id := randomID()
	ping := element(xml.Name{Space: nsPing, Local: "ping"}, nil)
	answer, err := a.request(ctx, id, stanza.IQ{ID: id, Type: stanza.GetIQ, From: from, To: occupant}.Wrap(ping))
	if err != nil {
		a.log.Debug("xmpp self-ping unanswered", "room", room.String(), "occupant", who, "error", err)
		return
	}
	a.rooms.hear(room.String(), a.now())
	if stillJoined(answer) {
		return
	}
	condition := ""
	if answer.Error != nil {
		condition = string(answer.Error.Condition)
	}
	a.rooms.left(room.String(), who)
	if who != a.domain.String() {
		a.log.Info("xmpp ghost no longer in room: joins again before its next post", "room", room.String(), "occupant", who, "condition", condition)
		return
	}
	a.log.Warn("xmpp listener no longer in room: joining again", "room", room.String(), "condition", condition)
	if err := a.listen(ctx, room); err != nil {
		a.log.Warn("xmpp listener could not join room again", "room", room.String(), "error", err)
	}
}

// stillJoined reports whether answer, to a self-ping, says the occupant is
// in the room (XEP-0410 §3): a result; service-unavailable or
// feature-not-implemented (the room passed the ping on to the occupant,
// which does not answer pings); or an error that says nothing of the room
// (remote-server-not-found, remote-server-timeout: its server is not
// reachable now).
func stillJoined(answer iqStanza) bool {
	if answer.Type != string(stanza.ErrorIQ) {
		return true
	}
	if answer.Error == nil {
		return false
	}
	switch answer.Error.Condition {
	case stanza.ServiceUnavailable, stanza.FeatureNotImplemented, stanza.RemoteServerNotFound, stanza.RemoteServerTimeout:
		return true
	}
	return false
}
