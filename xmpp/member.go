package xmpp

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// Membership of the portal rooms (XEP-0045 §7.2, §7.6, §9.1–9.2), both
// ways.
//
// Inbound, the listener sees every occupant come, go and change nick; for
// the occupants who are not Parley's own (a ghost, the listener, or a JID
// under the component domain that the room reveals), it dispatches
// event.Member, in the room's order with its posts. The participant is
// named as in posts: their real bare JID when the room reveals it, else
// their occupant JID room/nick. A nick change (status 303) is one
// MemberRenamed when the participant is known by their real JID; when they
// are known by room/nick, their address changes with the nick, so it is a
// MemberLeft of room/old followed by a MemberJoined of room/new.
//
// When the listener joins (at each connection), the room first tells it
// who is there. The adapter keeps, in its Links, who it announced as a
// member of each room (memberKey): an occupant announced already is not
// announced again, and once the list ends (the listener's own presence),
// one announced who is no longer there gets a MemberLeft: they left while
// Parley was away.
//
// Event IDs: room + "/member/" + participant + "/" + change + "/" + key,
// where key is the presence's own id attribute when it has one, else the
// time the listener received it (in nanoseconds). Not a counter of the
// session, which would give the same IDs again after a restart, and the
// core would drop a later join as a duplicate; not room/participant/joined
// alone, which would make every join after a leave a duplicate too. The
// presence's id makes the one case where a presence may be handled twice
// (Parley stopped between the dispatch and the write to its Links, then
// the room's list replays the same presence) give the same ID, which the
// core drops. A client that gives the same id to two of its joins loses
// the second; the room's list is otherwise never announced twice.
//
// Outbound, event.Member moves a ghost: MemberJoined makes it an occupant
// (or changes its nick to Name when it is one), MemberRenamed changes its
// nick, MemberLeft takes it out with Reason as its status.

// ghostNickKey is the key in the adapter's Links that records that one of
// Parley's occupants holds nick in room; its value is the occupant's JID.
// It tells Parley's occupants of earlier sessions, which the room keeps, in
// rooms that do not reveal real JIDs. A record outlives an occupant the
// room removed on its own (a kick): someone else who takes the nick then
// is not announced.
func ghostNickKey(room, nick string) string {
	return "room-ghost/" + room + "/" + nick
}

// recordGhostNick records that who, one of Parley's, holds nick in room.
func (a *Adapter) recordGhostNick(ctx context.Context, room, nick, who string) {
	if err := a.host.Links(event.XMPP).Put(ctx, ghostNickKey(room, nick), who); err != nil {
		a.log.Warn("xmpp room nick not recorded", "room", room, "nick", nick, "error", err)
	}
}

// recordedGhostNick returns the nick that who, one of Parley's, was
// recorded to hold in room (by this session or an earlier one).
func (a *Adapter) recordedGhostNick(ctx context.Context, room, who string) (string, bool) {
	prefix := ghostNickKey(room, "")
	held, err := a.host.Links(event.XMPP).List(ctx, prefix)
	if err != nil {
		a.log.Warn("xmpp room nicks not read", "room", room, "error", err)
		return "", false
	}
	for key, holder := range held {
		if holder == who {
			return strings.TrimPrefix(key, prefix), true
		}
	}
	return "", false
}

// forgetGhostNick forgets that one of Parley's holds nick in room.
func (a *Adapter) forgetGhostNick(ctx context.Context, room, nick string) {
	if err := a.host.Links(event.XMPP).Delete(ctx, ghostNickKey(room, nick)); err != nil {
		a.log.Warn("xmpp room nick not forgotten", "room", room, "nick", nick, "error", err)
	}
}

// memberKey is the key in the adapter's Links that records that
// participant was announced as a member of room; its value is their nick.
func memberKey(room, participant string) string {
	return "room-member/" + room + "/" + participant
}

// pend records that who asked for nick in room.
func (r *rooms) pend(room, nick, who string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roomLocked(room).pending[nick] = who
}

// unpend forgets that who asked for nick in room.
func (r *rooms) unpend(room, nick, who string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.rooms[room]; s != nil && s.pending[nick] == who {
		delete(s.pending, nick)
	}
}

// see records that the occupant nick of room is participant, and reports
// whether it was there already (a change of status only) and whether the
// room's list of who is there has ended.
func (r *rooms) see(room, nick, participant string) (known, listening bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.roomLocked(room)
	_, known = s.present[nick]
	s.present[nick] = participant
	return known, s.listening
}

// gone forgets the occupant nick of room and returns their participant
// address, if the listener saw them come.
func (r *rooms) gone(room, nick string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	if s == nil {
		return "", false
	}
	p, ok := s.present[nick]
	delete(s.present, nick)
	return p, ok
}

// listen marks the end of the room's list of who is there, and returns the
// participants present.
func (r *rooms) listen(room string) map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.roomLocked(room)
	s.listening = true
	here := make(map[string]bool, len(s.present))
	for _, p := range s.present {
		here[p] = true
	}
	return here
}

// own reports whether the occupant nick of room, whose real JID the room
// gave as real (or ""), is one of Parley's.
func (a *Adapter) own(ctx context.Context, room, nick, real string) bool {
	if a.rooms.ours(room, nick) || a.ghostNick(room, nick) {
		return true
	}
	if real != "" {
		j, err := jid.Parse(real)
		return err == nil && j.Domainpart() == a.domain.Domainpart()
	}
	_, ok, err := a.host.Links(event.XMPP).Get(ctx, ghostNickKey(room, nick))
	return err == nil && ok
}

// handleOccupant dispatches what the presence p of the occupant nick of
// room, seen by the listener, changes in the room's membership.
func (a *Adapter) handleOccupant(ctx context.Context, room jid.JID, nick string, p roomPresence) {
	roomID := room.String()
	real := ""
	if j, ok := p.X.realJID(); ok {
		real = j.String()
	}
	key := p.ID
	if key == "" {
		key = strconv.FormatInt(a.now().UnixNano(), 10)
	}
	if stanza.PresenceType(p.Type) != stanza.UnavailablePresence {
		a.rooms.occupant(roomID, nick, real)
		if a.own(ctx, roomID, nick, real) {
			return
		}
		participant := roomID + "/" + nick
		if real != "" {
			participant = real
		}
		known, listening := a.rooms.see(roomID, nick, participant)
		if known {
			return // a change of status
		}
		if !listening {
			// The room's list of who is there: announce only who was
			// not announced before.
			if _, ok, err := a.host.Links(event.XMPP).Get(ctx, memberKey(roomID, participant)); err == nil && ok {
				return
			}
		}
		a.dispatchMember(ctx, room, participant, nick, event.MemberJoined, "", key)
		return
	}

	participant, ok := a.rooms.gone(roomID, nick)
	a.rooms.occupant(roomID, nick, "")
	if !ok {
		return // not one the listener announced: one of Parley's
	}
	newNick := ""
	reason := ""
	if p.X != nil {
		for _, it := range p.X.Items {
			if it.Nick != "" {
				newNick = it.Nick
			}
			if it.Reason != "" {
				reason = it.Reason
			}
		}
	}
	if p.X.has(statusNickChange) && newNick != "" {
		if participant != roomID+"/"+nick {
			// Known by their real JID: the same participant, renamed.
			a.rooms.see(roomID, newNick, participant)
			a.rooms.occupant(roomID, newNick, participant)
			a.dispatchMember(ctx, room, participant, newNick, event.MemberRenamed, "", key)
			return
		}
		// Known by their occupant JID, which changes with the nick.
		a.dispatchMember(ctx, room, participant, "", event.MemberLeft, "", key)
		renamed := roomID + "/" + newNick
		a.rooms.see(roomID, newNick, renamed)
		a.dispatchMember(ctx, room, renamed, newNick, event.MemberJoined, "", key)
		return
	}
	if !p.X.has(statusKicked) && !p.X.has(statusBanned) {
		reason = ""
	}
	a.dispatchMember(ctx, room, participant, "", event.MemberLeft, reason, key)
}

// listenerIn runs when the listener's own presence in room came: the
// room's list of who is there has ended. Participants announced earlier
// who are not there left while Parley was away.
func (a *Adapter) listenerIn(ctx context.Context, room jid.JID) {
	roomID := room.String()
	here := a.rooms.listen(roomID)
	prefix := memberKey(roomID, "")
	members, err := a.host.Links(event.XMPP).List(ctx, prefix)
	if err != nil {
		a.log.Warn("xmpp room members not read", "room", roomID, "error", err)
		return
	}
	key := strconv.FormatInt(a.now().UnixNano(), 10)
	for k := range members {
		participant := k[len(prefix):]
		if !here[participant] {
			a.dispatchMember(ctx, room, participant, "", event.MemberLeft, "", "away-"+key)
		}
	}
}

// dispatchMember dispatches a change of participant's membership of room,
// and records it in the adapter's Links once the core took it. key makes
// the event's ID (see the top of this file).
func (a *Adapter) dispatchMember(ctx context.Context, room jid.JID, participant, nick string, change event.MemberChange, reason, key string) {
	roomID := room.String()
	name := nick
	if change == event.MemberLeft {
		name = ""
	}
	evt := &event.Member{
		Header: event.Header{
			ID:       roomID + "/member/" + participant + "/" + change.String() + "/" + key,
			From:     event.Address{Network: event.XMPP, ID: participant},
			To:       event.Address{Network: event.XMPP, ID: roomID},
			FromName: nick,
			Room:     true,
			Time:     a.now(),
		},
		Change: change,
		Name:   name,
		Reason: reason,
	}
	dctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
	defer cancel()
	if err := a.host.Dispatch(dctx, evt); err != nil {
		a.log.Log(ctx, dispatchLevel(err), "xmpp room membership not accepted", "event", evt.ID, "room", roomID, "error", err)
		return
	}
	a.log.Debug("xmpp room membership dispatched", "event", evt.ID, "room", roomID, "change", change.String())
	links := a.host.Links(event.XMPP)
	var err error
	if change == event.MemberLeft {
		err = links.Delete(dctx, memberKey(roomID, participant))
	} else {
		err = links.Put(dctx, memberKey(roomID, participant), nick)
	}
	if err != nil {
		a.log.Warn("xmpp room member not recorded", "room", roomID, "participant", participant, "error", err)
	}
}

// sendMember moves the ghost m.From in the room m.To (see the top of this
// file) and returns the stanza ID of the presence that did. A ghost that
// is to leave or be renamed but is no occupant has nothing to do.
func (a *Adapter) sendMember(ctx context.Context, m *event.Member) (string, error) {
	from, room, err := a.outboundAddresses(&m.Header)
	if err != nil {
		return "", err
	}
	switch {
	case !m.Room:
		return "", bridges.Permanent(errors.New("membership change outside a room"))
	case room.Localpart() == "" || room.Resourcepart() != "":
		return "", bridges.Permanent(fmt.Errorf("send to %q: not the bare JID of a room", m.To.ID))
	case from.Localpart() == "":
		return "", bridges.Permanent(fmt.Errorf("send from %q: not a ghost JID", m.From.ID))
	case !m.Change.Valid():
		return "", bridges.Permanent(fmt.Errorf("membership change %s", m.Change))
	}
	ghost, roomID := from.Bare(), room.String()
	name := m.Name
	if name == "" {
		name = m.FromName
	}
	id := stableID(m.ID)
	nick, joined := a.rooms.nick(roomID, ghost.String())
	switch m.Change {
	case event.MemberJoined:
		if !joined {
			_, err := a.joinRoom(ctx, room, ghost, name)
			return id, err
		}
		if name == "" {
			return id, nil // no name to change to
		}
		return id, a.changeNick(ctx, room, ghost, name)
	case event.MemberRenamed:
		if !joined || name == "" {
			return id, nil
		}
		return id, a.changeNick(ctx, room, ghost, name)
	default: // MemberLeft
		if !joined {
			// An occupant since an earlier session, if the links
			// hold its nick: the room still has it.
			if nick, joined = a.recordedGhostNick(ctx, roomID, ghost.String()); !joined {
				return id, nil
			}
		}
		occupant, err := room.WithResource(nick)
		if err != nil {
			return "", bridges.Permanent(fmt.Errorf("leave %s as %q: %w", roomID, nick, err))
		}
		var status xml.TokenReader
		if m.Reason != "" {
			status = element(xml.Name{Local: "status"}, nil, xmlstream.Token(xml.CharData(m.Reason)))
		}
		p := stanza.Presence{ID: id, From: ghost, To: occupant, Type: stanza.UnavailablePresence}.Wrap(status)
		if err := a.writeWithBarrier(ctx, p); err != nil {
			return "", err
		}
		a.rooms.left(roomID, ghost.String())
		a.forgetGhostNick(ctx, roomID, nick)
		return id, nil
	}
}

// changeNick changes the nick of the ghost, an occupant of room, to the one
// name gives (see baseNick), with the suffix rule of joins when it is
// taken. A ghost that holds that nick, or a suffixed form of it, keeps it.
func (a *Adapter) changeNick(ctx context.Context, room, ghost jid.JID, name string) error {
	roomID := room.String()
	s := a.rooms.room(roomID)
	s.joining.Lock()
	defer s.joining.Unlock()
	nick, ok := a.rooms.nick(roomID, ghost.String())
	if !ok {
		return nil // left meanwhile
	}
	base := baseNick(room, ghost, name)
	for i := range nickAttempts {
		if nick == nickCandidate(base, i) {
			return nil
		}
	}
	_, err := a.presenceToNick(ctx, room, ghost, base, nil)
	return err
}
