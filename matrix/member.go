package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix"
	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// Membership of portal rooms, both ways.
//
// Inbound, a real user's m.room.member event in a portal room (state_key
// is the member) becomes an event.Member: a join after anything but a join
// is MemberJoined; a join after a join with another display name is
// MemberRenamed; a leave or a ban (their own leave, a kick, a ban) of a
// member is MemberLeft, with the event's reason. Invites, knocks and joins
// that change nothing the other side shows (an avatar) are not bridged, nor
// is the membership of the bot or of the ghosts.
//
// Outbound, an event.Member for a ghost (From) in a portal room (To) joins
// the ghost to the room (MemberJoined), sets its display name in that room
// (Name: an m.room.member state event for the ghost, leaving its global
// display name as the posts and DMs set it), or has it leave
// (MemberLeft). Each is idempotent: what the room shows already is not
// sent again, so that an event delivered again after a crash changes
// nothing.

// memberChange returns the change that evt, the m.room.member event of
// user (a real user) in a portal room with content, stands for, and the
// name user shows after it (before it for MemberLeft); 0 when it is none.
// What the member was before comes from unsigned.prev_content, or, when
// the homeserver gave none, from what the adapter knew of the room
// (known, the member's name then).
func memberChange(evt *mevent.Event, content *mevent.MemberEventContent, known bool, knownName string) (event.MemberChange, string) {
	prevMembership, prevName := mevent.Membership(""), ""
	hasPrev := false
	if p := evt.Unsigned.PrevContent; p != nil && len(p.VeryRaw) > 0 {
		var prev mevent.MemberEventContent
		if err := json.Unmarshal(p.VeryRaw, &prev); err == nil {
			prevMembership, prevName, hasPrev = prev.Membership, prev.Displayname, true
		}
	}
	if !hasPrev && known {
		prevMembership, prevName, hasPrev = mevent.MembershipJoin, knownName, true
	}
	switch content.Membership {
	case mevent.MembershipJoin:
		if prevMembership != mevent.MembershipJoin {
			return event.MemberJoined, content.Displayname
		}
		if content.Displayname != prevName {
			return event.MemberRenamed, content.Displayname
		}
	case mevent.MembershipLeave, mevent.MembershipBan:
		// A refused invite, a knock withdrawn or a ban of someone who had
		// left: they were not in the room.
		if !hasPrev || prevMembership == mevent.MembershipJoin {
			return event.MemberLeft, prevName
		}
	}
	return 0, ""
}

// dispatchMember dispatches the membership change of user, a real user,
// in the portal room name (evt, content). Its caller keeps the member's
// display name up to date afterwards.
func (a *Adapter) dispatchMember(ctx context.Context, evt *mevent.Event, name string, user id.UserID, content *mevent.MemberEventContent) error {
	a.portals.mu.Lock()
	knownName, known := a.portals.names[evt.RoomID][user]
	a.portals.mu.Unlock()
	change, shown := memberChange(evt, content, known, knownName)
	if change == 0 {
		return nil
	}
	m := &event.Member{
		Header: event.Header{
			ID:       evt.ID.String(),
			From:     event.Address{Network: event.Matrix, ID: user.String()},
			To:       event.Address{Network: event.Matrix, ID: name},
			FromName: shown,
			Room:     true,
		},
		Change: change,
	}
	if evt.Timestamp > 0 {
		m.Time = time.UnixMilli(evt.Timestamp).UTC()
	}
	switch change {
	case event.MemberLeft:
		m.Reason = content.Reason
	default:
		m.Name = shown
		if m.Name == "" {
			m.Name = user.Localpart()
		}
	}
	host, _ := a.started()
	err := host.Dispatch(ctx, m)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bridges.ErrNoRoute), errors.Is(err, bridges.ErrRefused):
		a.log.Info("membership change not bridged", "room", name, "event", evt.ID.String(), "member", user.String(),
			"change", change.String(), "reason", err)
		return nil
	default:
		return fmt.Errorf("dispatch %s: %w", evt.ID, err)
	}
}

// sendMember carries out m, a membership change of a ghost (From) in a
// portal room (To). It returns the ID of the event it sent, "" when there
// was nothing to change.
func (a *Adapter) sendMember(ctx context.Context, m *event.Member) (string, error) {
	h := m.Header
	if !h.Room {
		return "", bridges.Permanent(fmt.Errorf("send to matrix: membership change %s → %s is not in a room", h.From, h.To))
	}
	if !m.Change.Valid() {
		return "", bridges.Permanent(fmt.Errorf("send to matrix: membership change %d", m.Change))
	}
	ghost, name, room, via, err := a.portalTarget(ctx, h, "membership change")
	if err != nil {
		return "", err
	}
	in, err := a.ghostJoined(ctx, name, room, ghost)
	if err != nil {
		return "", err
	}
	switch m.Change {
	case event.MemberJoined:
		if in {
			evt, err := a.setRoomName(ctx, name, room, ghost, m.Name)
			if !errors.Is(err, errGhostOut) {
				return evt, err
			}
		}
		if err := a.ensureRegistered(ctx, ghost); err != nil {
			return "", a.classify(fmt.Errorf("register ghost %s: %w", ghost, err))
		}
		a.ensureDisplayName(ctx, ghost, h.FromName)
		if err := a.ensureGhostIn(ctx, name, room, via, ghost); err != nil {
			return "", err
		}
		a.forgetRoomName(room, ghost) // the join took the ghost's global name
		return a.setRoomName(ctx, name, room, ghost, m.Name)
	case event.MemberRenamed:
		if !in {
			return "", nil
		}
		evt, err := a.setRoomName(ctx, name, room, ghost, m.Name)
		if errors.Is(err, errGhostOut) {
			return "", nil
		}
		return evt, err
	default: // MemberLeft
		if !in {
			return "", nil
		}
		lctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		if _, err := a.client(ghost).LeaveRoom(lctx, room, &mautrix.ReqLeave{Reason: m.Reason}); err != nil {
			if isTransient(err) || isTokenError(err) {
				return "", a.classify(fmt.Errorf("leave portal room %s as %s: %w", name, ghost, err))
			}
			// Not in the room after all (kicked meanwhile): nothing to do.
			a.log.Info("ghost could not leave the portal room", "room", name, "ghost", ghost.String(), "err", err)
		}
		a.setGhostIn(room, ghost, false)
		a.forgetRoomName(room, ghost)
		return "", nil
	}
}

// ghostJoined reports whether ghost is joined to the portal room name
// (room): known in this run, or else read from the room's state as the bot,
// so that after a restart a ghost still in the room is not joined again
// (which would reset its name in the room to its global one).
func (a *Adapter) ghostJoined(ctx context.Context, name string, room id.RoomID, ghost id.UserID) (bool, error) {
	if a.ghostIn(room, ghost) {
		return true, nil
	}
	if _, err := a.joinBot(ctx, name); err != nil {
		if errors.Is(err, errPortalClosed) {
			return false, nil // the join that follows tells, or nothing is to be done
		}
		return false, err
	}
	content, found, err := a.memberState(ctx, room, ghost)
	switch {
	case err != nil && (isTransient(err) || isTokenError(err)):
		return false, a.classify(fmt.Errorf("read the membership of %s in portal room %s: %w", ghost, name, err))
	case err != nil:
		a.log.Warn("could not read a ghost's membership of a portal room", "room", name, "ghost", ghost.String(), "err", err)
		return false, nil
	case !found || content.Membership != mevent.MembershipJoin:
		return false, nil
	}
	a.setGhostIn(room, ghost, true)
	a.setMemberName(room, ghost, content.Displayname)
	return true, nil
}

// learnGhostIn reads, when the bot is in the portal room name (room) and
// the adapter does not know ghost to be in it, whether it is (from an
// earlier run): a join of a ghost in the room already would show its
// global name there instead of the one a Member gave it.
func (a *Adapter) learnGhostIn(ctx context.Context, name string, room id.RoomID, ghost id.UserID) error {
	a.portals.mu.Lock()
	botIn := a.portals.botIn[room]
	a.portals.mu.Unlock()
	if !botIn {
		return nil
	}
	_, err := a.ghostJoined(ctx, name, room, ghost)
	return err
}

// memberState reads the m.room.member state of user in room as the bot;
// found is false when there is none.
func (a *Adapter) memberState(ctx context.Context, room id.RoomID, user id.UserID) (content mevent.MemberEventContent, found bool, err error) {
	sctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if err := a.client(a.bot).StateEvent(sctx, room, mevent.StateMember, user.String(), &content); err != nil {
		if errors.Is(err, mautrix.MNotFound) {
			return content, false, nil
		}
		return content, false, err
	}
	return content, true, nil
}

// errGhostOut is setRoomName's answer for a ghost that the room's state
// shows out of the room, though the adapter thought it in.
var errGhostOut = errors.New("the ghost is not in the room")

// setRoomName has ghost, joined to the portal room name (room), show
// display as its name there, unless it does already (known from the room's
// member events, or read from its state). A ghost the state shows out of
// the room is forgotten as joined, and the error is errGhostOut.
func (a *Adapter) setRoomName(ctx context.Context, name string, room id.RoomID, ghost id.UserID, display string) (string, error) {
	display = displayName(display)
	if display == "" {
		return "", nil
	}
	a.portals.mu.Lock()
	cur, known := a.portals.names[room][ghost]
	a.portals.mu.Unlock()
	if known && cur == display {
		return "", nil
	}
	content, found, err := a.memberState(ctx, room, ghost)
	switch {
	case err != nil && (isTransient(err) || isTokenError(err)):
		return "", a.classify(fmt.Errorf("read the membership of %s in portal room %s: %w", ghost, name, err))
	case err != nil:
		a.log.Debug("could not read a ghost's name in a portal room", "room", name, "ghost", ghost.String(), "err", err)
	case found && content.Membership != mevent.MembershipJoin:
		// Removed, unseen: a name would join it again.
		a.setGhostIn(room, ghost, false)
		a.forgetRoomName(room, ghost)
		return "", errGhostOut
	case found && content.Displayname == display:
		a.setMemberName(room, ghost, display)
		return "", nil
	}
	sctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	next := mevent.MemberEventContent{Membership: mevent.MembershipJoin, Displayname: display, AvatarURL: content.AvatarURL}
	resp, err := a.client(ghost).SendStateEvent(sctx, room, mevent.StateMember, ghost.String(), &next)
	if err != nil {
		err = fmt.Errorf("set the name of %s in portal room %s: %w", ghost, name, err)
		if errors.Is(err, mautrix.MForbidden) {
			// Removed since it joined: the next try joins again.
			a.setGhostIn(room, ghost, false)
			a.forgetRoomName(room, ghost)
			return "", err
		}
		return "", a.classify(err)
	}
	a.setMemberName(room, ghost, display)
	return resp.EventID.String(), nil
}

func (a *Adapter) forgetRoomName(room id.RoomID, user id.UserID) {
	a.portals.mu.Lock()
	defer a.portals.mu.Unlock()
	delete(a.portals.names[room], user)
}
