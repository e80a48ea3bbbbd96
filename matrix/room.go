package matrix

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"maunium.net/go/mautrix"
	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// DM rooms. A DM is a room with one ghost and one real user; the adapter
// keeps two links per DM in Links(event.Matrix):
//
//	"dm:<ghost>|<user>" → room ID   (where to send from ghost to user)
//	"room:<room ID>"    → "<ghost>|<user>"   (who talks in a room)
//
// It learns them when a user invites a ghost to a DM, or creates the room
// itself on the first Send, and forgets them when either of the two leaves.

func dmKey(ghost, user id.UserID) string { return "dm:" + string(ghost) + "|" + string(user) }

func roomKey(room id.RoomID) string { return "room:" + string(room) }

func pairValue(ghost, user id.UserID) string { return string(ghost) + "|" + string(user) }

func parsePair(v string) (ghost, user id.UserID, ok bool) {
	g, u, ok := strings.Cut(v, "|")
	if !ok || g == "" || u == "" {
		return "", "", false
	}
	return id.UserID(g), id.UserID(u), true
}

// roomPair returns the ghost and user of a DM room, ok false when the room
// is not a known DM.
func (a *Adapter) roomPair(ctx context.Context, room id.RoomID) (ghost, user id.UserID, ok bool, err error) {
	_, links := a.started()
	v, found, err := links.Get(ctx, roomKey(room))
	if err != nil {
		return "", "", false, fmt.Errorf("read link %s: %w", roomKey(room), err)
	}
	if !found {
		return "", "", false, nil
	}
	ghost, user, ok = parsePair(v)
	if ok {
		a.trackDM(ctx, ghost, user, true)
	}
	return ghost, user, ok, nil
}

// learnDM stores room as the DM between ghost and user. A newer DM replaces
// an older one for sending; the older room still maps to the pair.
func (a *Adapter) learnDM(ctx context.Context, ghost, user id.UserID, room id.RoomID) error {
	unlock := a.pairs.Lock(dmKey(ghost, user))
	defer unlock()
	return a.storeDM(ctx, ghost, user, room)
}

// learnOwnDM links room, a DM that ghost created with user (its is_direct
// invite came back in a transaction), unless the room is linked already.
// dmRoom links a room it creates at once, but a crash between the creation
// and the link left the user in a room whose messages no one bridged: the
// next run created another. The room becomes the one to send to only when
// the pair has none; either way the user's messages there are bridged.
func (a *Adapter) learnOwnDM(ctx context.Context, ghost, user id.UserID, room id.RoomID) error {
	unlock := a.pairs.Lock(dmKey(ghost, user))
	defer unlock()
	_, links := a.started()
	if _, ok, err := links.Get(ctx, roomKey(room)); err != nil {
		return fmt.Errorf("read link %s: %w", roomKey(room), err)
	} else if ok {
		return nil
	}
	if _, ok, err := links.Get(ctx, dmKey(ghost, user)); err != nil {
		return fmt.Errorf("read link %s: %w", dmKey(ghost, user), err)
	} else if !ok {
		return a.storeDM(ctx, ghost, user, room)
	}
	if err := links.Put(ctx, roomKey(room), pairValue(ghost, user)); err != nil {
		return fmt.Errorf("write link %s: %w", roomKey(room), err)
	}
	a.log.Info("older dm room linked", "room", room.String(), "ghost", ghost.String(), "user", user.String())
	return nil
}

func (a *Adapter) storeDM(ctx context.Context, ghost, user id.UserID, room id.RoomID) error {
	_, links := a.started()
	if err := links.Put(ctx, roomKey(room), pairValue(ghost, user)); err != nil {
		return fmt.Errorf("write link %s: %w", roomKey(room), err)
	}
	if err := links.Put(ctx, dmKey(ghost, user), string(room)); err != nil {
		return fmt.Errorf("write link %s: %w", dmKey(ghost, user), err)
	}
	a.log.Info("dm room linked", "room", room.String(), "ghost", ghost.String(), "user", user.String())
	a.watch(ctx, ghost, user, true)
	return nil
}

// watch tells the core that user watches (or stops watching) the presence
// of the person behind ghost: Matrix has no subscription handshake, so a
// direct chat is what makes someone a watcher. It also starts (or stops)
// polling user's presence through this DM (presencepoll.go). Presence is
// not durable, so a failure is only logged.
func (a *Adapter) watch(ctx context.Context, ghost, user id.UserID, active bool) {
	a.trackDM(ctx, ghost, user, active)
	host, _ := a.started()
	s := &event.Subscription{Header: event.Header{
		From: event.Address{Network: event.Matrix, ID: user.String()},
		To:   event.Address{Network: event.Matrix, ID: ghost.String()},
	}, Active: active}
	if err := host.Dispatch(ctx, s); err != nil {
		a.log.Warn("presence subscription not recorded", "ghost", ghost.String(), "user", user.String(), "err", err)
	}
}

// forgetDM drops the links of room, the DM between ghost and user.
func (a *Adapter) forgetDM(ctx context.Context, ghost, user id.UserID, room id.RoomID) error {
	_, links := a.started()
	key := dmKey(ghost, user)
	cur, ok, err := links.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read link %s: %w", key, err)
	}
	if ok && cur == string(room) {
		if err := links.Delete(ctx, key); err != nil {
			return fmt.Errorf("delete link %s: %w", key, err)
		}
	}
	if err := links.Delete(ctx, roomKey(room)); err != nil {
		return fmt.Errorf("delete link %s: %w", roomKey(room), err)
	}
	a.log.Info("dm room unlinked", "room", room.String(), "ghost", ghost.String(), "user", user.String())
	a.watch(ctx, ghost, user, false)
	return nil
}

// sendInDM sends content as ghost into the DM with user, creating the room
// when there is none. txn is the client transaction ID; the content is
// marked with it (sourceKey).
//
// Exactly once: when an earlier attempt of the same entry may have reached
// the homeserver (bridges.AttemptOf(ctx).Repeated(): a retry, or an entry
// resumed after a restart), the room's recent events are searched for the
// mark first (sentBefore), and an event found there is taken as delivered.
// The transaction ID alone is not enough: Dendrite remembers it only for
// requests that completed, so a request cut off by a crash, once resent,
// makes a second event.
//
// When the homeserver refuses the send with M_FORBIDDEN in a room known
// from before (the user left or kicked the ghost), the links are dropped
// and a retryable error returned: the next try creates a new room. Other
// errors are classified for the router.
func (a *Adapter) sendInDM(ctx context.Context, ghost, user id.UserID, content *mevent.MessageEventContent, txn string) (id.EventID, error) {
	unlock := a.pairs.Lock(dmKey(ghost, user))
	defer unlock()
	room, created, err := a.dmRoom(ctx, ghost, user)
	if err != nil {
		return "", err
	}
	if !created && txn != "" && a.mustLook(ctx, dmKey(ghost, user)) {
		found, err := a.sentBefore(ctx, ghost, room, txn)
		switch {
		case err != nil && (isTransient(err) || isTokenError(err)):
			return "", a.classify(fmt.Errorf("look for %s in %s: %w", txn, room, err))
		case err != nil:
			// Sending tells more (M_FORBIDDEN drops the room); at worst
			// this is the at-least-once of the transaction ID alone.
			a.log.Warn("could not look for an earlier send", "room", room.String(), "txn", txn, "err", err)
		case found != "":
			a.log.Info("found the event an earlier attempt sent", "room", room.String(), "txn", txn, "event", found.String())
			return found, nil
		case bridges.AttemptOf(ctx).Resumed:
			a.settle(dmKey(ghost, user))
		}
	}
	sctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := a.client(ghost).SendMessageEvent(sctx, room, mevent.EventMessage, markedContent(content, txn), mautrix.ReqSendEvent{TransactionID: txn})
	if err != nil {
		err = fmt.Errorf("send as %s in %s: %w", ghost, room, err)
		if errors.Is(err, mautrix.MForbidden) && !created {
			if ferr := a.forgetDM(ctx, ghost, user, room); ferr != nil {
				return "", errors.Join(err, ferr)
			}
			return "", fmt.Errorf("%w (dropped the room; the next try creates a new one)", err)
		}
		return "", a.classify(err)
	}
	return resp.EventID, nil
}

// Bounds of sentBefore: it reads at most lookBack events, newest first,
// lookPage at a time, asking for the ghost's messages only. The event it looks for is the ghost's
// last message in the room, or close to it: the router delivers the events
// of one DM in order, so nothing of that DM was sent after it; only notices
// (notify) may have come since.
const (
	lookBack = 100
	lookPage = 50
)

// sentBefore returns the ID of the message that ghost sent into room with
// the mark marker (sourceKey), or "" when it is not among the last lookBack
// events it reads there. It reads GET /rooms/{room}/messages backwards as
// ghost, filtered to the ghost's m.room.message events.
func (a *Adapter) sentBefore(ctx context.Context, ghost id.UserID, room id.RoomID, marker string) (id.EventID, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	filter := &mautrix.FilterPart{Senders: []id.UserID{ghost}, Types: []mevent.Type{mevent.EventMessage}}
	from := ""
	for read := 0; read < lookBack; {
		resp, err := a.client(ghost).Messages(ctx, room, from, "", mautrix.DirectionBackward, filter, min(lookPage, lookBack-read))
		if err != nil {
			return "", err
		}
		read += len(resp.Chunk)
		for _, evt := range resp.Chunk {
			if evt == nil || evt.Sender != ghost || evt.Type != mevent.EventMessage {
				continue // a homeserver that ignores the filter
			}
			if markerOf(evt) == marker {
				return evt.ID, nil
			}
		}
		if len(resp.Chunk) == 0 || resp.End == "" || resp.End == from {
			break // the start of the room
		}
		from = resp.End
	}
	return "", nil
}

// mustLook reports whether the Send of ctx must look for an earlier send of
// its event in the conversation key (a DM, dmKey, or a portal room,
// portalKey; see sendInDM): on a retry always; for an entry resumed from an
// earlier run unless one resumed before it in this conversation was not
// found there (settle).
func (a *Adapter) mustLook(ctx context.Context, key string) bool {
	at := bridges.AttemptOf(ctx)
	if at.Retry > 0 {
		return true
	}
	if !at.Resumed {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.settled[key]
}

// settle records that an entry resumed in the conversation key had not been
// sent by the earlier run: that run delivered the conversation's events in
// order, so it sent none of the entries resumed behind it either.
func (a *Adapter) settle(key string) {
	a.mu.Lock()
	a.settled[key] = true
	a.mu.Unlock()
}

// dmRoom returns the DM room of ghost and user, creating it as ghost (a
// trusted private chat, is_direct, user invited, no name) when there is
// none. created says it was created now. The caller holds the pair's lock.
func (a *Adapter) dmRoom(ctx context.Context, ghost, user id.UserID) (room id.RoomID, created bool, err error) {
	_, links := a.started()
	key := dmKey(ghost, user)
	v, ok, err := links.Get(ctx, key)
	if err != nil {
		return "", false, fmt.Errorf("read link %s: %w", key, err)
	}
	if ok && v != "" {
		a.trackDM(ctx, ghost, user, true)
		return id.RoomID(v), false, nil
	}
	cctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := a.client(ghost).CreateRoom(cctx, &mautrix.ReqCreateRoom{
		Invite:   []id.UserID{user},
		IsDirect: true,
		Preset:   "trusted_private_chat",
	})
	if err != nil {
		return "", false, a.classify(fmt.Errorf("create dm room of %s with %s: %w", ghost, user, err))
	}
	if err := a.storeDM(ctx, ghost, user, resp.RoomID); err != nil {
		return "", false, err
	}
	return resp.RoomID, true, nil
}

// notify posts an m.notice as sender into room, telling about the event
// sourceID. It returns an error only when trying again may work (the
// transaction is then retried; the transaction ID keeps the notice single).
func (a *Adapter) notify(ctx context.Context, room id.RoomID, sender id.UserID, sourceID id.EventID, text string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	_, err := a.client(sender).SendMessageEvent(ctx, room, mevent.EventMessage, noticeContent(text),
		mautrix.ReqSendEvent{TransactionID: txnID("notice|" + sourceID.String())})
	if err == nil {
		return nil
	}
	err = fmt.Errorf("send notice as %s in %s: %w", sender, room, err)
	if isTransient(err) || isTokenError(err) {
		return err
	}
	a.log.Warn("notice not sent", "room", room.String(), "err", err)
	return nil
}
