package xmpp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// A portal MUC's subject crosses the portal as event.Topic. The adapter
// keeps the last subject it saw per room in its Links (subjectKey). The
// room sends its subject after every join (XEP-0045 §7.2.15) and again at
// each change: a subject that differs from the one kept, set by an occupant
// that is not one of Parley's, is dispatched, so a change made while Parley
// was away crosses when the listener joins again. The first subject seen in
// a room (a new portal) is only kept: the portal does not overwrite the
// other side's topic with it.

// subjectKey is the key in the adapter's Links of room's last subject.
func subjectKey(room string) string { return "room-subject/" + room }

// handleRoomSubject follows the subject in m, the listener's copy of a
// message from room with a <subject/> and no body.
func (a *Adapter) handleRoomSubject(ctx context.Context, m messageStanza, room jid.JID) {
	from, err := jid.Parse(m.From)
	if err != nil {
		return
	}
	roomID, nick, text := room.String(), from.Resourcepart(), m.Subject.Text
	links := a.host.Links(event.XMPP)
	last, known, err := links.Get(ctx, subjectKey(roomID))
	if err != nil {
		a.log.Warn("xmpp room subject not read", "room", roomID, "error", err)
		return
	}
	if known && last == text {
		return
	}
	if err := links.Put(ctx, subjectKey(roomID), text); err != nil {
		a.log.Warn("xmpp room subject not recorded", "room", roomID, "error", err)
		return
	}
	switch {
	case !known:
		return // a new portal: keep the room's subject, carry later changes
	case nick == "":
		a.log.Debug("xmpp room subject set by the room itself, not carried", "room", roomID)
		return
	case a.rooms.ours(roomID, nick) || a.ghostNick(roomID, nick):
		return // Parley's own: the other side has it
	}
	sender := from.String()
	if real, ok := a.rooms.realJID(roomID, nick); ok {
		sender = real
	}
	sum := sha256.Sum256([]byte(m.ID + "\x00" + text + "\x00" + last))
	t := &event.Topic{
		Header: event.Header{
			ID:       roomID + "/subject/" + hex.EncodeToString(sum[:8]),
			From:     event.Address{Network: event.XMPP, ID: sender},
			To:       event.Address{Network: event.XMPP, ID: roomID},
			FromName: nick,
			Room:     true,
			Time:     a.now(),
		},
		Text: text,
	}
	dctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
	defer cancel()
	if err := a.host.Dispatch(dctx, t); err != nil {
		a.log.Log(ctx, dispatchLevel(err), "xmpp room subject not accepted", "room", roomID, "from", m.From, "error", err)
		return
	}
	a.log.Debug("xmpp room subject dispatched", "room", roomID, "from", m.From)
}

// outboundTopic translates t into a change of the subject of the room t.To:
// by the listener when it is a moderator there (most rooms let only
// moderators change the subject), else by the ghost t.From, which joins
// first. A room that refuses answers with an error, which is logged.
func (a *Adapter) outboundTopic(ctx context.Context, t *event.Topic) (string, xml.TokenReader, error) {
	from, room, err := a.outboundAddresses(&t.Header)
	if err != nil {
		return "", nil, err
	}
	if !t.Room || room.Localpart() == "" || room.Resourcepart() != "" {
		return "", nil, bridges.Permanent(fmt.Errorf("send topic to %q: not the bare JID of a room", t.To.ID))
	}
	if from.Localpart() == "" {
		return "", nil, bridges.Permanent(errors.New("send topic: not from a ghost JID"))
	}
	setter := from.Bare()
	if a.rooms.listenerModerator(room.String()) {
		// Most rooms let only moderators change the subject.
		setter = a.domain
	} else if _, err := a.joinRoom(ctx, room, setter, t.FromName); err != nil {
		return "", nil, err
	}
	// Kept first, so that the room's reflection is not taken for a
	// change of someone else's.
	if err := a.host.Links(event.XMPP).Put(ctx, subjectKey(room.String()), t.Text); err != nil {
		return "", nil, fmt.Errorf("record the subject of %s: %w", room, err)
	}
	id := stableID(t.ID)
	msg := stanza.Message{ID: id, From: setter, To: room, Type: stanza.GroupChatMessage}
	return id, msg.Wrap(element(xml.Name{Local: "subject"}, nil, xmlstream.Token(xml.CharData(t.Text)))), nil
}

// role returns the role the first item of x gives, or "".
func (x *mucUser) role() string {
	if x == nil || len(x.Items) == 0 {
		return ""
	}
	return x.Items[0].Role
}

// setListenerModerator records whether the listener is a moderator of room.
func (r *rooms) setListenerModerator(room string, moderator bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roomLocked(room).moderator = moderator
}

// listenerModerator reports whether the listener is a moderator of room in
// this session.
func (r *rooms) listenerModerator(room string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	return s != nil && s.moderator
}
