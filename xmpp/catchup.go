package xmpp

import (
	"context"
	"encoding/xml"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/parleygw/parley/event"
)

// Catch-up and exactly-once across restarts, in the portal rooms.
//
// Inbound: the adapter keeps in its Links a cursor per room (cursorKey):
// the time and ID of the last post it dispatched from there (the time of a
// post from the room's history is its XEP-0203 stamp, of a live one the
// time the listener received it). When the listener joins a room that has
// a cursor, it asks for the history since then (XEP-0045 §7.2.15), less
// cursorSlack for the difference between Parley's clock and the server's,
// and dispatches the delayed posts it gets: they have the same IDs as when
// live (room/stanza-id or room/id), so the core drops those it has. A room
// without a cursor (a new portal) gives no history: Parley does not bridge
// what was said before the portal existed.
//
// Where the room keeps an archive (XEP-0313; Prosody's mod_muc_mam), the
// listener also asks it, once joined, for every post since the cursor
// (less cursorSlack), page after page (see mam.go): the history a join
// brings is bounded (Prosody gives at most 20 messages), the archive is
// not. The archive's posts carry the room's stanza-id, so they have the
// same IDs as live and as history, and the core drops those it has.
//
// Outbound: a room post whose Send may repeat an earlier one that reached
// the room (bridges.Attempt.Repeated) is looked for first (see delivered):
// in the room's archive, from the event's time on, where there is one;
// else in what the room keeps as history (Prosody keeps the last 20
// messages by default), where a post that was followed by more than that
// before the retry is not found, and is posted again. A post has its id attribute and origin-id from its event's ID
// (stableID), so clients that dedupe on them still show it once.

const (
	// cursorSlack is taken from a room's cursor when asking for history.
	cursorSlack = time.Minute
	// historyCheckStanzas is how much history a ghost asks for when it
	// looks for a post of its own.
	historyCheckStanzas = "50"
	// historyCheckTimeout bounds the wait for the history's end (the
	// room's subject, which follows the history).
	historyCheckTimeout = 5 * time.Second
	// echoesSize bounds the IDs of Parley's own posts remembered per room.
	echoesSize = 1024
)

// cursorKey is the key in the adapter's Links of room's cursor.
func cursorKey(room string) string { return "room-cursor/" + room }

// cursorOf returns the time and post ID of room's cursor, if it has one.
func (a *Adapter) cursorOf(ctx context.Context, room string) (time.Time, string, bool) {
	v, ok, err := a.host.Links(event.XMPP).Get(ctx, cursorKey(room))
	if err != nil || !ok {
		return time.Time{}, "", false
	}
	stamp, id, _ := strings.Cut(v, " ")
	t, err := time.Parse(time.RFC3339Nano, stamp)
	return t, id, err == nil
}

// advanceCursor moves room's cursor to the post id of time at, unless it
// is further already.
//
// While the listener catches up in room (see holdCursor), the move waits
// for the catch-up's end: a post dispatched live or from the history
// before the archive gave what precedes it must not move the cursor past
// posts not dispatched yet, which a crash would then lose.
func (a *Adapter) advanceCursor(ctx context.Context, room string, at time.Time, id string) {
	if a.rooms.heldCursor(room, at, id) {
		return
	}
	a.putCursor(ctx, room, at, id)
}

// putCursor moves room's cursor to the post id of time at, unless it is
// further already.
func (a *Adapter) putCursor(ctx context.Context, room string, at time.Time, id string) {
	if t, _, ok := a.cursorOf(ctx, room); ok && t.After(at) {
		return
	}
	if err := a.host.Links(event.XMPP).Put(ctx, cursorKey(room), at.UTC().Format(time.RFC3339Nano)+" "+id); err != nil {
		a.log.Warn("xmpp room cursor not recorded", "room", room, "error", err)
	}
}

// listenerHistory returns what the listener asks of room's history when it
// joins: the history since the cursor, or none.
func (a *Adapter) listenerHistory(ctx context.Context, room string) func() xml.TokenReader {
	t, id, ok := a.cursorOf(ctx, room)
	if !ok {
		return historyNone
	}
	from := t.Add(-cursorSlack)
	a.rooms.wantHistory(room, from, id)
	since := from.UTC().Format("2006-01-02T15:04:05Z")
	return func() xml.TokenReader { return historyElement(attr("since", since)) }
}

// historyCheck collects the IDs of the history a ghost gets at its join.
type historyCheck struct {
	ids  map[string]bool
	done chan struct{}
	once sync.Once
}

func (c *historyCheck) finish() { c.once.Do(func() { close(c.done) }) }

// wantHistory marks that the listener asked for room's history since
// from, the post last of its cursor.
func (r *rooms) wantHistory(room string, from time.Time, last string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.roomLocked(room)
	s.history, s.historyFrom, s.historyLast = true, from, last
}

// historyWanted reports whether the listener asked for room's history, and
// since when, with the post last of the cursor.
func (r *rooms) historyWanted(room string) (ok bool, from time.Time, last string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	if s == nil || !s.history {
		return false, time.Time{}, ""
	}
	return true, s.historyFrom, s.historyLast
}

// check starts a history check of who in room.
func (r *rooms) check(room, who string) *historyCheck {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &historyCheck{ids: map[string]bool{}, done: make(chan struct{})}
	s := r.roomLocked(room)
	if old := s.checks[who]; old != nil {
		old.finish()
	}
	s.checks[who] = c
	return c
}

// uncheck ends the history check c of who in room.
func (r *rooms) uncheck(room, who string, c *historyCheck) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.rooms[room]; s != nil && s.checks[who] == c {
		delete(s.checks, who)
	}
	c.finish()
}

// collect records the message m, to who in room, for a history check of
// who: a delayed message's IDs, or the end of the history.
func (r *rooms) collect(room, who string, m messageStanza) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	if s == nil || s.checks[who] == nil {
		return
	}
	c := s.checks[who]
	switch {
	case m.Delay != nil:
		for _, id := range ownIDs(m) {
			c.ids[id] = true
		}
	case m.Subject != nil:
		c.finish()
	}
}

// echo records the IDs of a post of Parley's own that the listener got
// back from room.
func (r *rooms) echo(room string, m messageStanza) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.roomLocked(room)
	if s.echoes == nil || len(s.echoes) >= echoesSize {
		s.echoes = map[string]bool{}
	}
	for _, id := range ownIDs(m) {
		s.echoes[id] = true
	}
}

// echoed reports whether the listener got back the post id from room in
// this session.
func (r *rooms) echoed(room, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	return s != nil && s.echoes[id]
}

// ownIDs returns the IDs that the poster of m gave it: its id attribute
// and its origin-id.
func ownIDs(m messageStanza) []string {
	var ids []string
	if m.ID != "" {
		ids = append(ids, m.ID)
	}
	if m.OriginID != nil && m.OriginID.ID != "" {
		ids = append(ids, m.OriginID.ID)
	}
	return ids
}

// delivered reports whether the post id of the ghost, an event of the
// time since, is in room already: an earlier attempt of the same Send
// reached it. The posts the listener got back in this session are looked
// at first; then the room's archive from since (less cursorSlack) on,
// when the room has one Parley may read (see mam.go), which sees every
// earlier attempt however many posts followed it. In a room without an
// archive, a ghost that is an occupant in this session is not looked for
// further; otherwise the ghost joins, asking for the last
// historyCheckStanzas of history, and looks for the post in it. It
// leaves the ghost an occupant.
//
// A ghost that is an occupant already is not made to join again: a retry
// in the same session follows the earlier attempt by a backoff, in which
// the room's copy of a post that reached it comes back to the listener. A
// post whose copy is slower than that, or a room where the listener is not,
// is posted again.
func (a *Adapter) delivered(ctx context.Context, room, ghost jid.JID, name, id string, since time.Time) (bool, error) {
	roomID, who := room.String(), ghost.String()
	if a.rooms.echoed(roomID, id) {
		return true, nil
	}
	if !since.IsZero() {
		since = since.Add(-cursorSlack)
	}
	if found, ok, err := a.archived(ctx, room, since, id); err != nil || ok {
		return found, err
	}
	if _, ok := a.rooms.nick(roomID, who); ok {
		return false, nil
	}
	c := a.rooms.check(roomID, who)
	defer a.rooms.uncheck(roomID, who, c)
	hist := func() xml.TokenReader { return historyElement(attr("maxstanzas", historyCheckStanzas)) }
	if _, err := a.joinRoomWith(ctx, room, ghost, name, hist); err != nil {
		return false, err
	}
	t := time.NewTimer(historyCheckTimeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		a.log.Debug("xmpp room history did not end", "room", roomID, "occupant", who)
	case <-ctx.Done():
		return false, ctx.Err()
	}
	a.rooms.mu.Lock()
	found := c.ids[id]
	a.rooms.mu.Unlock()
	return found, nil
}

// cursorHold is a room's cursor held during a catch-up: the furthest post
// dispatched meanwhile.
type cursorHold struct {
	at time.Time
	id string
}

// holdCursor holds room's cursor until the returned release runs, which
// moves it to the furthest post dispatched meanwhile.
func (a *Adapter) holdCursor(room string) (release func(ctx context.Context)) {
	a.rooms.mu.Lock()
	s := a.rooms.roomLocked(room)
	s.hold = &cursorHold{}
	h := s.hold
	a.rooms.mu.Unlock()
	return func(ctx context.Context) {
		a.rooms.mu.Lock()
		if s.hold == h {
			s.hold = nil
		}
		a.rooms.mu.Unlock()
		if h.id != "" {
			a.putCursor(ctx, room, h.at, h.id)
		}
	}
}

// heldCursor reports whether room's cursor is held, and then records the
// post id of time at if it is the furthest yet.
func (r *rooms) heldCursor(room string, at time.Time, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	if s == nil || s.hold == nil {
		return false
	}
	if s.hold.id == "" || !s.hold.at.After(at) {
		s.hold.at, s.hold.id = at, id
	}
	return true
}
