package xmpp

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/names"
)

// Multi-user chats (XEP-0045): the rooms of the portals.
//
// Parley listens in each portal room through one occupant, the listener:
// the component's own domain JID under listenerNick. Only what the listener
// receives is dispatched; every ghost that joined the room gets its own
// copy of each message, and those copies are ignored. A ghost joins a room
// when it first posts there (see Adapter.joinRoom) or when the core sends
// its event.Member (see member.go), and stays an occupant until it leaves
// or the connection ends: the adapter then forgets who joined where, and
// joins again on the next post. The listener also dispatches who comes and
// goes (member.go), and catches up with the history the room keeps when it
// joins again (catchup.go).

// Namespaces of XEP-0045.
const (
	nsMUC     = "http://jabber.org/protocol/muc"
	nsMUCUser = "http://jabber.org/protocol/muc#user"
	nsDelay   = "urn:xmpp:delay" // XEP-0203: history replayed at join carries it
)

// Limits of room occupancy.
const (
	// listenerNick is the nick of the listener occupant.
	listenerNick = "Parley"
	// maxNick bounds a nick, in characters.
	maxNick = 64
	// nickAttempts bounds the nicks tried when the room says the one
	// asked for is taken: the name, then the name with " 2", " 3"...
	nickAttempts = 8
	// joinTimeout bounds the wait for the room's answer to a join.
	joinTimeout = 30 * time.Second
	// statusSelf is the XEP-0045 status code of an occupant's own
	// presence, which tells it that it joined.
	statusSelf = 110
	// statusBanned, statusNickChange and statusKicked are the XEP-0045
	// status codes of an unavailable presence that tell why the
	// occupant left.
	statusBanned     = 301
	statusNickChange = 303
	statusKicked     = 307
)

// mucUser is the <x xmlns='http://jabber.org/protocol/muc#user'/> of an
// occupant's presence.
type mucUser struct {
	Items []struct {
		JID    string `xml:"jid,attr"`
		Nick   string `xml:"nick,attr"`
		Role   string `xml:"role,attr"`
		Reason string `xml:"http://jabber.org/protocol/muc#user reason"`
	} `xml:"http://jabber.org/protocol/muc#user item"`
	Statuses []struct {
		Code int `xml:"code,attr"`
	} `xml:"http://jabber.org/protocol/muc#user status"`
}

// has reports whether the status code is among x's.
func (x *mucUser) has(code int) bool {
	if x == nil {
		return false
	}
	for _, s := range x.Statuses {
		if s.Code == code {
			return true
		}
	}
	return false
}

// realJID returns the occupant's real bare JID when the room reveals it.
func (x *mucUser) realJID() (jid.JID, bool) {
	if x == nil {
		return jid.JID{}, false
	}
	for _, it := range x.Items {
		if it.JID == "" {
			continue
		}
		if j, err := jid.Parse(it.JID); err == nil && j.Localpart() != "" {
			return j.Bare(), true
		}
	}
	return jid.JID{}, false
}

// rooms is what the adapter knows of the rooms it is in, for the current
// session only. Safe for concurrent use.
type rooms struct {
	mu sync.Mutex
	// gen counts the sessions: a join answered after the session ended
	// is not recorded.
	gen   uint64
	rooms map[string]*roomState // by the room's bare JID
	// waits are the joins waiting for the room's answer.
	waits map[joinKey]*joinWait
	// queries are the archive queries in progress, by query ID (see
	// mam.go).
	queries map[string]*archiveQuery
}

type roomState struct {
	// ours maps the nicks Parley's occupants hold to their JIDs (a ghost's
	// bare JID, or the component domain for the listener).
	ours map[string]string
	// nickOf maps an occupant JID of ours to its nick.
	nickOf map[string]string
	// real maps the nicks of other occupants to their real bare JIDs,
	// when the room reveals them to the listener.
	real map[string]string
	// pending maps the nicks asked for by joins and nick changes of
	// Parley's occupants in progress to the JIDs asking: the listener may
	// see the room's presence for such a nick before the room's answer
	// to the occupant makes it ours.
	pending map[string]string
	// present maps the nicks of the other occupants the listener sees to
	// their participant addresses (see participant).
	present map[string]string
	// moderator is set when the listener is a moderator of the room
	// (it made the room, say): it may change the subject.
	moderator bool
	// listening is set once the listener's own presence came: the
	// presences before it are the room's list of who is there.
	listening bool
	// history is set when the listener asked for the history since the
	// room's cursor: the delayed posts it gets are dispatched.
	history bool
	// historyFrom and historyLast are the time since which the listener
	// asked for history, and the ID of the post last dispatched.
	historyFrom time.Time
	historyLast string
	// checks are the history checks of ghosts (see Adapter.delivered).
	checks map[string]*historyCheck
	// echoes are the IDs of Parley's own posts the listener got back in
	// this session (see Adapter.delivered).
	echoes map[string]bool
	// caught are the IDs of the posts of the room's history dispatched
	// in this session: the archive's copies of them are not dispatched
	// again (see catchUpArchive).
	caught map[string]bool
	// hold, while the listener catches up, holds the room's cursor (see
	// Adapter.advanceCursor).
	hold *cursorHold
	// heard is when a stanza last came from the room (see selfping.go).
	heard time.Time
	// joining is held by the one join in progress in the room.
	joining sync.Mutex
}

// joinKey names a join: the room's bare JID and the joining JID.
type joinKey struct{ room, who string }

// joinWait is a join waiting for the room's answer: done is closed with
// nick set (the nick the room gave) or err.
type joinWait struct {
	done chan struct{}
	nick string
	err  error
}

func newRooms() *rooms {
	return &rooms{rooms: make(map[string]*roomState), waits: make(map[joinKey]*joinWait), queries: make(map[string]*archiveQuery)}
}

// room returns the state of room, creating it.
func (r *rooms) room(room string) *roomState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.roomLocked(room)
}

func (r *rooms) roomLocked(room string) *roomState {
	s := r.rooms[room]
	if s == nil {
		s = &roomState{
			ours: map[string]string{}, nickOf: map[string]string{}, real: map[string]string{},
			pending: map[string]string{}, present: map[string]string{}, checks: map[string]*historyCheck{},
		}
		r.rooms[room] = s
	}
	return s
}

// known reports whether room is a room the adapter is in or joins.
func (r *rooms) known(room string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.rooms[room]
	return ok
}

// reset forgets who joined where and fails the joins in progress: the
// session ended. The rooms stay known, so that their stanzas still arrive
// on the room path.
func (r *rooms) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	for _, s := range r.rooms {
		clear(s.ours)
		clear(s.nickOf)
		clear(s.real)
		clear(s.pending)
		clear(s.present)
		s.listening, s.history, s.echoes, s.caught, s.moderator = false, false, nil, nil, false
		for who, c := range s.checks {
			c.finish()
			delete(s.checks, who)
		}
	}
	for k, w := range r.waits {
		w.err = errSessionEnded
		close(w.done)
		delete(r.waits, k)
	}
}

// nick returns the nick who holds in room, if who joined it.
func (r *rooms) nick(room, who string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	if s == nil {
		return "", false
	}
	n, ok := s.nickOf[who]
	return n, ok
}

// expect registers a join of who in room and returns its wait and the
// session generation.
func (r *rooms) expect(room, who string) (*joinWait, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roomLocked(room)
	w := &joinWait{done: make(chan struct{})}
	if old := r.waits[joinKey{room, who}]; old != nil {
		old.err = errors.New("superseded by another join")
		close(old.done)
	}
	r.waits[joinKey{room, who}] = w
	return w, r.gen
}

// cancel removes the wait w of who in room, if still there.
func (r *rooms) cancel(room, who string, w *joinWait) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waits[joinKey{room, who}] == w {
		delete(r.waits, joinKey{room, who})
	}
}

// answer ends the join of who in room, if one waits, with nick or err.
func (r *rooms) answer(room, who, nick string, err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.waits[joinKey{room, who}]
	if w == nil {
		return false
	}
	w.nick, w.err = nick, err
	close(w.done)
	delete(r.waits, joinKey{room, who})
	return true
}

// joined records that who holds nick in room, unless the session of gen
// has ended.
func (r *rooms) joined(gen uint64, room, who, nick string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gen != r.gen {
		return
	}
	s := r.roomLocked(room)
	if old, ok := s.nickOf[who]; ok {
		delete(s.ours, old)
	}
	s.ours[nick] = who
	s.nickOf[who] = nick
}

// left forgets that who is in room.
func (r *rooms) left(room, who string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	if s == nil {
		return
	}
	if n, ok := s.nickOf[who]; ok {
		delete(s.ours, n)
		delete(s.nickOf, who)
	}
}

// ours reports whether nick in room is held by one of Parley's occupants.
func (r *rooms) ours(room, nick string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	if s == nil {
		return false
	}
	if _, ok := s.ours[nick]; ok {
		return true
	}
	_, ok := s.pending[nick]
	return ok
}

// occupant records (or with real empty, forgets) the real bare JID of the
// occupant nick of room.
func (r *rooms) occupant(room, nick, real string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	if s == nil {
		return
	}
	if real == "" {
		delete(s.real, nick)
	} else {
		s.real[nick] = real
	}
}

// realJID returns the real bare JID of the occupant nick of room, when the
// room revealed it.
func (r *rooms) realJID(room, nick string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	if s == nil {
		return "", false
	}
	j, ok := s.real[nick]
	return j, ok
}

// fromRoom returns the bare JID of the room that sent a stanza from rawFrom,
// when it is a room the adapter knows.
func (a *Adapter) fromRoom(rawFrom string) (jid.JID, bool) {
	from, err := jid.Parse(rawFrom)
	if err != nil || from.Localpart() == "" {
		return jid.JID{}, false
	}
	room := from.Bare()
	return room, a.rooms.known(room.String())
}

// cleanNick turns a display name into a nick: control and bidirectional
// formatting characters removed, spaces collapsed and trimmed, at most
// maxNick characters. It returns "" when nothing is left.
func cleanNick(name string) string { return names.Clean(name, maxNick) }

// nickCandidate returns the nick to ask for at the attempt-th try (from 0):
// base, then "base 2", "base 3"..., each at most maxNick characters.
func nickCandidate(base string, attempt int) string {
	if attempt == 0 {
		return base
	}
	suffix := " " + strconv.Itoa(attempt+1)
	return strings.TrimSpace(names.Truncate(base, maxNick-len(suffix))) + suffix
}

// baseNick returns the nick a ghost asks for in room: its display name
// cleaned, or its localpart when that gives no valid nick.
func baseNick(room, ghost jid.JID, name string) string {
	if n := cleanNick(name); n != "" {
		if _, err := room.WithResource(n); err == nil {
			return n
		}
	}
	return ghost.Localpart()
}

// joinRoom makes who (a ghost's bare JID, or the component domain for the
// listener) an occupant of room, and returns its nick there. It returns at
// once when who joined already in this session. Otherwise it sends the
// join presence, without history, and waits for the room's answer: a nick
// taken is tried again with a suffix (see nickCandidate); a refusal is a
// permanent error, unless the room says to wait.
//
// Joins to one room are serialised.
func (a *Adapter) joinRoom(ctx context.Context, room, who jid.JID, name string) (string, error) {
	return a.joinRoomWith(ctx, room, who, name, historyNone)
}

// historyNone asks a room for no history at join.
func historyNone() xml.TokenReader { return historyElement(attr("maxstanzas", "0")) }

// historyElement returns the <x xmlns='http://jabber.org/protocol/muc'/>
// of a join presence, with a <history/> of the attributes attrs (XEP-0045
// §7.2.15).
func historyElement(attrs ...xml.Attr) xml.TokenReader {
	return element(xml.Name{Space: nsMUC, Local: "x"}, nil, element(xml.Name{Space: nsMUC, Local: "history"}, attrs))
}

// joinRoomWith is joinRoom, with the join presence's <x/> made by x: the
// history asked for.
func (a *Adapter) joinRoomWith(ctx context.Context, room, who jid.JID, name string, x func() xml.TokenReader) (string, error) {
	roomID, whoID := room.String(), who.String()
	if n, ok := a.rooms.nick(roomID, whoID); ok {
		return n, nil
	}
	s := a.rooms.room(roomID)
	s.joining.Lock()
	defer s.joining.Unlock()
	if n, ok := a.rooms.nick(roomID, whoID); ok {
		return n, nil // joined while this one waited
	}
	return a.presenceToNick(ctx, room, who, baseNick(room, who, name), x)
}

// presenceToNick sends who's presence to room/base, or to the first nick
// of nickCandidate(base, ...) the room does not say is taken, and returns
// the nick the room gave. With x it is a join, and x makes the presence's
// <x/>; with x nil it changes the nick of who, an occupant already. The
// caller holds the room's joining lock.
func (a *Adapter) presenceToNick(ctx context.Context, room, who jid.JID, base string, x func() xml.TokenReader) (string, error) {
	roomID, whoID := room.String(), who.String()
	var last stanza.Error
	for attempt := range nickAttempts {
		nick := nickCandidate(base, attempt)
		occupant, err := room.WithResource(nick)
		if err != nil {
			return "", bridges.Permanent(fmt.Errorf("join %s as %q: %w", roomID, nick, err))
		}
		got, err := a.join(ctx, room, who, occupant, x)
		var se stanza.Error
		switch {
		case err == nil:
			return got, nil
		case !errors.As(err, &se):
			return "", fmt.Errorf("join %s as %q: %w", roomID, nick, err)
		case se.Condition == stanza.Conflict:
			last = se
			continue
		case se.Type == stanza.Wait:
			return "", fmt.Errorf("join %s as %q: the room says to wait: %w", roomID, nick, err)
		default:
			return "", bridges.Permanent(fmt.Errorf("join %s as %q: the room refused %s: %s (%w)", roomID, nick, whoID, se.Condition, err))
		}
	}
	return "", bridges.Permanent(fmt.Errorf("join %s: the nicks %q to %q are all taken: %w", roomID, base, nickCandidate(base, nickAttempts-1), last))
}

// join sends one presence from who to occupant (room/nick), a join with
// the <x/> that x makes or with x nil a nick change, and waits for the
// room's answer: the nick it gave, or the stanza.Error it answered with.
func (a *Adapter) join(ctx context.Context, room, who, occupant jid.JID, x func() xml.TokenReader) (string, error) {
	roomID, whoID := room.String(), who.String()
	w, gen := a.rooms.expect(roomID, whoID)
	defer a.rooms.cancel(roomID, whoID, w)
	a.rooms.pend(roomID, occupant.Resourcepart(), whoID)
	defer a.rooms.unpend(roomID, occupant.Resourcepart(), whoID)
	var payload xml.TokenReader
	if x != nil {
		payload = x()
	}
	p := stanza.Presence{ID: randomID(), From: who, To: occupant}.Wrap(payload)
	if _, err := a.write(ctx, p); err != nil {
		return "", err
	}
	timeout := time.NewTimer(joinTimeout)
	defer timeout.Stop()
	select {
	case <-w.done:
	case <-timeout.C:
		return "", fmt.Errorf("no answer from the room within %s", joinTimeout)
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if w.err != nil {
		return "", w.err
	}
	old, had := a.rooms.nick(roomID, whoID)
	a.rooms.joined(gen, roomID, whoID, w.nick)
	if had && old != w.nick {
		a.forgetGhostNick(ctx, roomID, old)
	}
	a.recordGhostNick(ctx, roomID, w.nick, whoID)
	a.log.Debug("xmpp room joined", "room", roomID, "occupant", whoID, "nick", w.nick)
	return w.nick, nil
}

// joinListeners joins the listener to every portal room the host names.
// It runs once per session, from the connection goroutine's helper, and
// returns once done or when ctx ends.
func (a *Adapter) joinListeners(ctx context.Context) {
	rh, ok := a.host.(bridges.RoomHost)
	if !ok {
		return
	}
	for _, r := range rh.Rooms(event.XMPP) {
		a.listenTo(ctx, r)
		if ctx.Err() != nil {
			return
		}
	}
}

// listenTo has the listener join r, a portal's MUC (see listen), unless
// Parley serves that room itself (see mucservice.go).
func (a *Adapter) listenTo(ctx context.Context, r event.Address) {
	room, err := parseBare(r.ID)
	if err != nil || room.Localpart() == "" {
		a.log.Warn("xmpp portal room is not a room JID", "room", r.ID, "error", err)
		return
	}
	if a.isServed(r.ID) {
		return
	}
	if err := a.listen(ctx, room); err != nil && ctx.Err() == nil {
		a.log.Warn("xmpp listener could not join room", "room", room.String(), "error", err)
	}
}

// listen has the listener join room, asking for the history since the
// room's cursor, and then catch up from the room's archive (see
// catchup.go).
func (a *Adapter) listen(ctx context.Context, room jid.JID) error {
	a.rooms.room(room.String())
	// The cursor before the join, held until the catch-up ends.
	since, _, cursor := a.cursorOf(ctx, room.String())
	release := a.holdCursor(room.String())
	defer release(context.WithoutCancel(ctx))
	nick, err := a.joinRoomWith(ctx, room, a.domain, listenerNick, a.listenerHistory(ctx, room.String()))
	if err != nil {
		return err
	}
	a.rooms.hear(room.String(), a.now())
	a.log.Info("xmpp listening in room", "room", room.String(), "nick", nick)
	if cursor {
		a.catchUpArchive(ctx, room, since)
	}
	return nil
}

// roomPresence is what the adapter reads of a presence from a room.
type roomPresence struct {
	ID    string        `xml:"id,attr"`
	From  string        `xml:"from,attr"`
	To    string        `xml:"to,attr"`
	Type  string        `xml:"type,attr"`
	X     *mucUser      `xml:"http://jabber.org/protocol/muc#user x"`
	Error *stanza.Error `xml:"error"`
}

// handleRoomPresence applies a presence from the room room: the answer to
// a join, an occupant coming, going or changing nick (seen by the
// listener: see handleOccupant), or one of Parley's occupants leaving
// (kicked, or the room destroyed). It never answers.
func (a *Adapter) handleRoomPresence(ctx context.Context, r xml.TokenReader, room jid.JID) error {
	var p roomPresence
	if err := xml.NewTokenDecoder(r).Decode(&p); err != nil {
		a.log.Warn("xmpp malformed room presence dropped", "error", err)
		return nil
	}
	from, err1 := jid.Parse(p.From)
	to, err2 := jid.Parse(p.To)
	if err1 != nil || err2 != nil || to.Domainpart() != a.domain.Domainpart() {
		a.log.Debug("xmpp room presence ignored", "from", p.From, "to", p.To)
		return nil
	}
	roomID, who, nick := room.String(), to.Bare().String(), from.Resourcepart()
	a.rooms.hear(roomID, a.now())
	switch stanza.PresenceType(p.Type) {
	case stanza.ErrorPresence:
		se := stanza.Error{Type: stanza.Cancel, Condition: stanza.UndefinedCondition}
		if p.Error != nil {
			se = *p.Error
		}
		if !a.rooms.answer(roomID, who, "", se) {
			a.log.Debug("xmpp room error presence ignored", "room", roomID, "to", who, "condition", string(se.Condition))
		}
	case stanza.AvailablePresence:
		if p.X.has(statusSelf) {
			a.rooms.answer(roomID, who, nick, nil)
			if who == a.domain.String() {
				a.rooms.setListenerModerator(roomID, p.X.role() == "moderator")
				a.listenerIn(ctx, room)
			}
			return nil
		}
		if who == a.domain.String() && nick != "" {
			a.handleOccupant(ctx, room, nick, p)
		}
	case stanza.UnavailablePresence:
		if p.X.has(statusSelf) {
			if p.X.has(statusNickChange) {
				// A nick change of ours: the room's answer with
				// the new nick follows.
				return nil
			}
			// One of Parley's occupants is out (left, kicked, or the
			// room closed): join again on the next post.
			a.rooms.left(roomID, who)
			a.log.Info("xmpp occupant left room", "room", roomID, "occupant", who, "nick", nick)
			return nil
		}
		if who == a.domain.String() && nick != "" {
			a.handleOccupant(ctx, room, nick, p)
		}
	}
	return nil
}

// translateRoomMessage decides what to do with the message m from the
// room room and, when it is to be dispatched, translates it. Only the
// listener's copy of a post by someone else than Parley, live (not
// history) and with a body, is dispatched.
func (a *Adapter) translateRoomMessage(m messageStanza, room jid.JID, now time.Time) inbound {
	in := inbound{id: m.ID, typ: messageType(m.Type)}
	historyOn, historyFrom, historyLast := a.rooms.historyWanted(room.String())
	from, err1 := jid.Parse(m.From)
	to, err2 := jid.Parse(m.To)
	roomID := room.String()
	nick := from.Resourcepart()
	switch {
	case err1 != nil || err2 != nil || to.Domainpart() != a.domain.Domainpart():
		in.reason = "not addressed to the component domain"
	case in.typ == stanza.ErrorMessage:
		in.reason = "error message"
		if to.Localpart() != "" {
			// A ghost's post was refused (not an occupant any more?):
			// join again on the next post.
			a.rooms.left(roomID, to.Bare().String())
		}
	case in.typ != stanza.GroupChatMessage:
		in.reason = "not a groupchat (a private message, an invitation...)"
	case to.Localpart() != "":
		in.reason = "copy to a ghost"
		a.rooms.collect(roomID, to.Bare().String(), m)
	case nick == "":
		in.reason = "from the room itself"
	case a.rooms.ours(roomID, nick) || a.ghostNick(roomID, nick) || parleyID(m):
		in.reason = "reflection of Parley's own post"
		a.rooms.echo(roomID, m)
	case m.Delay != nil && !historyOn && !m.archived:
		in.reason = "history"
	case m.body() == "":
		in.reason = "no body"
	}
	if in.reason != "" {
		return in
	}
	in.from, in.to = from, to

	id := roomStanzaID(m, room)
	if id == "" {
		id = m.ID
	}
	if id == "" && m.OriginID != nil {
		id = m.OriginID.ID
	}
	if id == "" {
		// Every copy has its own ID then; only the listener's is
		// dispatched.
		id = randomID()
	}
	// The participant's stable address: their real bare JID when the room
	// reveals it to the listener, else their occupant JID room/nick,
	// which changes with the nick (XEP-0421 occupant IDs would do
	// better).
	sender := from.String()
	if real, ok := a.rooms.realJID(roomID, nick); ok {
		sender = real
	} else if real, ok := m.X.realJID(); ok && m.archived {
		// The room's archive says who posted (a room that shows
		// real JIDs), though they left since.
		sender = real.String()
	}
	if m.Delay != nil {
		// From the history since the room's cursor (see catchup.go):
		// when the room says it was posted. The post of the cursor
		// itself, and what is older than asked for, are not
		// dispatched again; the others the core may have are
		// dropped there, by their IDs.
		t, err := time.Parse(time.RFC3339, m.Delay.Stamp)
		switch {
		case err != nil:
			in.reason = "history without a valid stamp"
		case t.Before(historyFrom) && !m.archived:
			// An archive query asks from the cursor on itself.
			in.reason = "history before the room's cursor"
		case roomID+"/"+id == historyLast:
			in.reason = "history: the post of the room's cursor"
		case m.archived && a.rooms.wasCaught(roomID, roomID+"/"+id):
			in.reason = "archive: dispatched from the history already"
		}
		if in.reason != "" {
			return in
		}
		now = t
	}
	in.action = dispatch
	in.evt = &event.Message{
		Header: event.Header{
			ID:       roomID + "/" + id,
			From:     event.Address{Network: event.XMPP, ID: sender},
			To:       event.Address{Network: event.XMPP, ID: roomID},
			FromName: nick,
			Room:     true,
			Time:     now,
		},
		Body: m.body(),
	}
	return in
}

// parleyID reports whether m carries the id or origin-id that Parley gives
// its posts (see stableID): a post of Parley's own, from the history or by
// a ghost of an earlier session, in a room that does not reveal the real
// JIDs. Someone else who gives their post such an ID only keeps it from
// being bridged.
func parleyID(m messageStanza) bool {
	for _, id := range ownIDs(m) {
		if strings.HasPrefix(id, "parley-") {
			return true
		}
	}
	return false
}

// ghostNick reports whether the room revealed that nick is held by a JID
// under the component domain: a ghost that joined in an earlier session.
func (a *Adapter) ghostNick(room, nick string) bool {
	real, ok := a.rooms.realJID(room, nick)
	if !ok {
		return false
	}
	j, err := jid.Parse(real)
	return err == nil && j.Domainpart() == a.domain.Domainpart()
}

// handleRoomMessage dispatches or ignores the message m from the room
// room. A post the core does not accept is logged, never answered: an
// error would go to the whole room.
func (a *Adapter) handleRoomMessage(ctx context.Context, m messageStanza, room jid.JID) error {
	a.rooms.hear(room.String(), a.now())
	if m.Result != nil {
		return a.handleArchived(ctx, m, room)
	}
	in := a.translateRoomMessage(m, room, a.now())
	if m.Subject != nil && m.body() == "" && messageType(m.Type) == stanza.GroupChatMessage && m.To == a.domain.String() {
		a.handleRoomSubject(ctx, m, room)
	}
	a.linkReflection(ctx, m, room)
	if in.action != dispatch {
		a.log.Debug("xmpp room message ignored", "reason", in.reason, "from", m.From, "to", m.To, "id", m.ID)
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
	err := a.host.Dispatch(dctx, in.evt)
	cancel()
	if err != nil {
		a.log.Log(ctx, dispatchLevel(err), "xmpp room message not accepted", "event", in.evt.ID, "room", room.String(), "from", m.From, "error", err)
		return nil
	}
	a.log.Debug("xmpp room message dispatched", "event", in.evt.ID, "room", room.String(), "from", m.From)
	if m.Delay != nil && !m.archived {
		a.rooms.catch(room.String(), in.evt.ID)
	}
	a.advanceCursor(ctx, room.String(), in.evt.Time, in.evt.ID)
	return nil
}

// outboundRoomMessage makes the ghost m.From an occupant of the room m.To
// (see joinRoom) and translates m into a groupchat message from it. It
// returns the stanza ID and the stanza; no stanza when m is a repeated
// Send whose earlier attempt reached the room (see delivered).
func (a *Adapter) outboundRoomMessage(ctx context.Context, m *event.Message) (string, xml.TokenReader, error) {
	from, room, err := a.outboundAddresses(&m.Header)
	if err != nil {
		return "", nil, err
	}
	if room.Localpart() == "" || room.Resourcepart() != "" {
		return "", nil, bridges.Permanent(fmt.Errorf("send to %q: not the bare JID of a room", m.To.ID))
	}
	if from.Localpart() == "" {
		return "", nil, bridges.Permanent(fmt.Errorf("send from %q: not a ghost JID", m.From.ID))
	}
	if m.Body == "" {
		return "", nil, bridges.Permanent(errors.New("message has no body"))
	}
	id := stableID(m.ID)
	if bridges.AttemptOf(ctx).Repeated() {
		// An earlier attempt may have reached the room (see
		// catchup.go).
		done, err := a.delivered(ctx, room, from.Bare(), m.FromName, id, m.Time)
		if err != nil {
			return "", nil, err
		}
		if done {
			a.log.Info("xmpp room post delivered by an earlier attempt", "room", room.String(), "event", m.ID, "id", id)
			return id, nil, nil
		}
	}
	if _, err := a.joinRoom(ctx, room, from.Bare(), m.FromName); err != nil {
		return "", nil, err
	}
	payload := xmlstream.MultiReader(
		element(xml.Name{Local: "body"}, nil, xmlstream.Token(xml.CharData(m.Body))),
		element(xml.Name{Space: nsSID, Local: "origin-id"}, []xml.Attr{attr("id", id)}),
	)
	msg := stanza.Message{ID: id, From: from.Bare(), To: room, Type: stanza.GroupChatMessage}
	return id, msg.Wrap(payload), nil
}
