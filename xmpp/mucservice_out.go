package xmpp

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// Outbound events of the MUC service: what the core sends to a served room
// (from the Matrix side) goes to every XMPP occupant, from the occupant of
// the Matrix member who made it.

// sendServed delivers evt, an event whose To is the served room room, to
// the room's XMPP occupants. It returns the ID of the event in the room.
func (a *Adapter) sendServed(ctx context.Context, evt event.Event, room jid.JID, alias string) (string, error) {
	h := evt.Head()
	ghost, err := jid.Parse(h.From.ID)
	if err != nil || h.From.Network != event.XMPP || ghost.Domainpart() != a.domain.Domainpart() || ghost.Localpart() == "" {
		return "", bridges.Permanent(fmt.Errorf("send to %s from %q: not a ghost JID", room, h.From.ID))
	}
	ghost = ghost.Bare()
	id := stableID(h.ID)
	var out []xml.TokenReader
	s := a.served
	s.mu.Lock()
	sr := s.roomLocked(room, alias)
	// A Matrix member is an occupant from its first event on.
	arrive := func(name string) string {
		nick, fresh := sr.memberNick(ghost, name)
		if fresh {
			for _, u := range sr.userJIDs() {
				out = append(out, servedOccupantPresence(room, nick, u, "", nil))
			}
		}
		return nick
	}
	switch e := evt.(type) {
	case *event.Message:
		if e.Body == "" {
			s.mu.Unlock()
			return "", bridges.Permanent(errors.New("message has no body"))
		}
		p := servedPost{nick: arrive(e.FromName), body: e.Body, id: id, at: e.Time}
		if p.at.IsZero() {
			p.at = a.now()
		}
		for _, u := range sr.userJIDs() {
			out = append(out, servedGroupchat(room, p, u, false))
		}
		sr.remember(p)
	case *event.Topic:
		p := servedPost{nick: arrive(e.FromName), body: e.Text, id: id, at: e.Time}
		sr.subject = p
		for _, u := range sr.userJIDs() {
			out = append(out, servedSubject(room, p, u))
		}
	case *event.Member:
		out = append(out, a.servedMemberLocked(sr, ghost, e, arrive)...)
	default:
		s.mu.Unlock()
		return "", bridges.Permanent(fmt.Errorf("send %s to the served room %s: not supported", evt.Kind(), room))
	}
	s.mu.Unlock()
	if len(out) == 0 {
		return id, nil // no XMPP occupant to tell
	}
	if err := a.writeWithBarrier(ctx, xmlstream.MultiReader(out...)); err != nil {
		return "", err
	}
	return id, nil
}

// servedMemberLocked applies the change of the Matrix member ghost in sr
// and returns the presences that tell the XMPP occupants. The caller holds
// the lock of the served rooms; arrive makes ghost an occupant.
func (a *Adapter) servedMemberLocked(sr *servedRoom, ghost jid.JID, e *event.Member, arrive func(string) string) []xml.TokenReader {
	var out []xml.TokenReader
	old, known := sr.members[ghost.String()]
	switch e.Change {
	case event.MemberJoined, event.MemberRenamed:
		if !known {
			arrive(e.Name)
			return out
		}
		delete(sr.occupants, old)
		nick := sr.freeNick(ghost, e.Name)
		sr.occupants[nick] = &servedOccupant{nick: nick, jid: ghost}
		sr.members[ghost.String()] = nick
		if nick == old {
			return out
		}
		for _, u := range sr.userJIDs() {
			out = append(out, servedOccupantLeft(sr.jid, old, u, nick, []int{statusNickChange}), servedOccupantPresence(sr.jid, nick, u, "", nil))
		}
	case event.MemberLeft:
		if !known {
			return out
		}
		delete(sr.occupants, old)
		delete(sr.members, ghost.String())
		for _, u := range sr.userJIDs() {
			out = append(out, servedOccupantLeft(sr.jid, old, u, "", nil))
		}
	}
	return out
}
