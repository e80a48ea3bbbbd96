package xmpp

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/names"
)

// Inbound stanzas of the MUC service: joins, leaves and nick changes
// (XEP-0045 §7.2, §7.6, §7.14), posts (§7.4), and what it refuses.

// servedPresence is what the service reads of a presence to a served room.
type servedPresence struct {
	ID   string `xml:"id,attr"`
	From string `xml:"from,attr"`
	To   string `xml:"to,attr"`
	Type string `xml:"type,attr"`
	// MUC is the <x xmlns='http://jabber.org/protocol/muc'/> of a join.
	MUC *struct {
		History *servedHistoryRequest `xml:"http://jabber.org/protocol/muc history"`
	} `xml:"http://jabber.org/protocol/muc x"`
}

// servedHistoryRequest is the <history/> of a join (XEP-0045 §7.2.15).
// maxchars is honoured only as "0", no history.
type servedHistoryRequest struct {
	MaxStanzas string `xml:"maxstanzas,attr"`
	MaxChars   string `xml:"maxchars,attr"`
	Seconds    string `xml:"seconds,attr"`
	Since      string `xml:"since,attr"`
}

// pick returns the posts of history that the request asks for.
func (h *servedHistoryRequest) pick(history []servedPost, now time.Time) []servedPost {
	if h == nil {
		return history
	}
	if h.MaxChars == "0" {
		return nil
	}
	if n, err := strconv.Atoi(h.MaxStanzas); err == nil && n >= 0 && n < len(history) {
		history = history[len(history)-n:]
	}
	var from time.Time
	if s, err := strconv.Atoi(h.Seconds); err == nil && s >= 0 {
		from = now.Add(-time.Duration(s) * time.Second)
	}
	if t, err := time.Parse(time.RFC3339, h.Since); err == nil && t.After(from) {
		from = t
	}
	for len(history) > 0 && history[0].at.Before(from) {
		history = history[1:]
	}
	return history
}

// servedError is the error answering a stanza to a served room: se with
// text, when given, as its <text/>.
func servedError(typ stanza.ErrorType, cond stanza.Condition, text string) stanza.Error {
	se := stanza.Error{Type: typ, Condition: cond}
	if text != "" {
		se.Text = map[string]string{"": text}
	}
	return se
}

// handleServedPresence reads one presence to a served room from r and
// applies it; what it writes goes to w.
func (a *Adapter) handleServedPresence(ctx context.Context, w xmlstream.TokenWriter, r xml.TokenReader) error {
	var p servedPresence
	if err := xml.NewTokenDecoder(r).Decode(&p); err != nil {
		a.log.Warn("xmpp malformed presence to a served room dropped", "error", err)
		return nil
	}
	from, to, reason := a.inboundAddresses(p.From, p.To)
	room, alias, ok := a.servedRoom(p.To)
	refuse := func(se stanza.Error) error {
		a.log.Info("xmpp join of a served room refused", "from", p.From, "to", p.To, "condition", string(se.Condition))
		reply := stanza.Presence{ID: p.ID, From: to, To: from, Type: stanza.ErrorPresence}
		return writeStanza(w, reply.Wrap(xmlstream.MultiReader(
			element(xml.Name{Space: nsMUC, Local: "x"}, nil), se.TokenReader())))
	}
	if bare, _, cut := strings.Cut(p.To, "/"); !ok && cut && from.Resourcepart() != "" && a.isServed(bare) &&
		from.Domainpart() != a.domain.Domainpart() && p.Type == "" {
		// A nick that is no valid resourcepart (RFC 7622 §3.4):
		// answered from the room.
		to, _, _ = a.servedRoom(bare)
		return refuse(servedError(stanza.Modify, stanza.JIDMalformed, "That nick cannot be used in an XMPP address."))
	}
	if reason != "" || !ok || from.Resourcepart() == "" {
		a.log.Debug("xmpp presence to a served room ignored", "from", p.From, "to", p.To, "reason", reason)
		return nil
	}
	switch stanza.PresenceType(p.Type) {
	case stanza.ErrorPresence, stanza.UnavailablePresence:
		// An error bounced from an occupant's client is as good as its
		// leaving (XEP-0045 §18.1).
		return a.servedLeave(ctx, w, room, from, stanza.PresenceType(p.Type) == stanza.UnavailablePresence)
	case stanza.AvailablePresence:
	default:
		return nil // subscriptions and probes: a room has none
	}
	if _, ok := a.serverDomains[from.Domainpart()]; !ok {
		return refuse(a.notAllowed())
	}
	nick := to.Resourcepart()
	switch {
	case nick == "":
		return refuse(servedError(stanza.Modify, stanza.JIDMalformed, "A nick is needed to join a room."))
	case names.Clean(nick, maxNick) != nick:
		return refuse(servedError(stanza.Modify, stanza.NotAcceptable,
			"A nick may not hold control or formatting characters, begin or end with a space, or be longer than "+strconv.Itoa(maxNick)+" characters."))
	}

	// A room is kept in memory only once its portal is open: joins
	// refused do not grow the service.
	s := a.served
	s.mu.Lock()
	var (
		old          string
		inRoom, open bool
	)
	if sr := s.rooms[room.String()]; sr != nil {
		old, inRoom = sr.users[from.String()]
		if !sr.mayHold(nick, from) {
			s.mu.Unlock()
			return refuse(servedError(stanza.Cancel, stanza.Conflict, "Someone in the room has that nick already."))
		}
		open = sr.open
	}
	s.mu.Unlock()

	switch {
	case inRoom && old == nick:
		// A presence update, or a client joining again: it is told
		// who is there again only when it asks to join.
		if p.MUC == nil {
			return nil
		}
	case inRoom:
		return a.servedNickChange(ctx, w, room, from, old, nick, p.ID)
	}
	if !open {
		if err := a.openServed(ctx, room, alias, from); err != nil {
			cond := stanza.NotAllowed
			if errors.Is(err, errNoOpener) {
				cond = stanza.ItemNotFound
			}
			return refuse(servedError(stanza.Cancel, cond, err.Error()))
		}
	}
	var hist *servedHistoryRequest
	if p.MUC != nil {
		hist = p.MUC.History
	}
	return a.servedJoin(ctx, w, room, alias, from, nick, hist, p.ID, inRoom)
}

// errNoOpener: the host opens no portals at run time.
var errNoOpener = errors.New("this gateway does not open Matrix rooms on demand")

// openServed asks the core to open the portal between the Matrix room
// alias and the served room room, for the user by.
func (a *Adapter) openServed(ctx context.Context, room jid.JID, alias string, by jid.JID) error {
	o, ok := a.host.(portalOpener)
	if !ok {
		return errNoOpener
	}
	octx, cancel := context.WithTimeout(ctx, dispatchTimeout)
	defer cancel()
	err := o.OpenPortal(octx, event.Address{Network: event.XMPP, ID: by.Bare().String()},
		event.Address{Network: event.Matrix, ID: alias}, event.Address{Network: event.XMPP, ID: room.String()})
	if err != nil {
		a.log.Info("xmpp served room not opened", "room", room.String(), "alias", alias, "error", err)
		return fmt.Errorf("%s cannot be opened: %w", alias, err)
	}
	a.served.mu.Lock()
	a.served.roomLocked(room, alias).open = true
	a.served.mu.Unlock()
	a.log.Info("xmpp served room opened", "room", room.String(), "alias", alias)
	return nil
}

// servedJoin makes from an occupant of room as nick and sends it what a
// joiner gets (XEP-0045 §7.2.3–7.2.16): the occupants' presences, its own
// with status 110, the history it asks for, the subject. The others see it
// come, and the core is told (MemberJoined) unless again (a client joining
// again with the nick it holds).
func (a *Adapter) servedJoin(ctx context.Context, w xmlstream.TokenWriter, room jid.JID, alias string, from jid.JID, nick string, hist *servedHistoryRequest, presenceID string, again bool) error {
	s := a.served
	s.mu.Lock()
	sr := s.roomLocked(room, alias)
	if !sr.mayHold(nick, from) {
		// A Matrix member took the nick while the portal opened.
		s.mu.Unlock()
		se := servedError(stanza.Cancel, stanza.Conflict, "Someone in the room has that nick already.")
		occupant, _ := room.WithResource(nick)
		return writeStanza(w, stanza.Presence{ID: presenceID, From: occupant, To: from, Type: stanza.ErrorPresence}.Wrap(se.TokenReader()))
	}
	// Another client of the same user may hold the nick already
	// (multi-session nick): then the others see no one new.
	_, shared := sr.occupants[nick]
	shared = shared && !again
	sr.users[from.String()] = nick
	sr.occupants[nick] = &servedOccupant{nick: nick, jid: from.Bare(), user: true}
	var out []xml.TokenReader
	nicks := make([]string, 0, len(sr.occupants))
	for n := range sr.occupants {
		nicks = append(nicks, n)
	}
	sort.Strings(nicks)
	for _, n := range nicks {
		if n != nick {
			out = append(out, servedOccupantPresence(room, n, from, "", nil))
		}
	}
	for _, u := range sr.userJIDs() {
		if !u.Equal(from) && !again && !shared {
			out = append(out, servedOccupantPresence(room, nick, u, "", nil))
		}
	}
	out = append(out, servedOccupantPresence(room, nick, from, presenceID, []int{statusSelf}))
	for _, h := range hist.pick(sr.history, a.now()) {
		out = append(out, servedGroupchat(room, h, from, true))
	}
	out = append(out, servedSubject(room, sr.subject, from))
	s.mu.Unlock()

	for _, r := range out {
		if err := writeStanza(w, r); err != nil {
			return err
		}
	}
	a.log.Info("xmpp served room joined", "room", room.String(), "occupant", from.String(), "nick", nick)
	if again || shared {
		return nil
	}
	a.dispatchServedMember(ctx, room, from, nick, event.MemberJoined, presenceID)
	return nil
}

// servedNickChange changes the nick of the XMPP occupant from of room from
// old to nick (XEP-0045 §7.6), for all the user's clients that share it:
// every XMPP occupant gets the unavailable presence of old with status
// 303, then the presence of nick.
func (a *Adapter) servedNickChange(ctx context.Context, w xmlstream.TokenWriter, room, from jid.JID, old, nick, presenceID string) error {
	s := a.served
	s.mu.Lock()
	sr := s.rooms[room.String()]
	if sr == nil || sr.users[from.String()] != old {
		s.mu.Unlock()
		return nil
	}
	delete(sr.occupants, old)
	sr.occupants[nick] = &servedOccupant{nick: nick, jid: from.Bare(), user: true}
	moved := map[string]bool{}
	for full, n := range sr.users {
		if j, err := jid.Parse(full); err == nil && n == old && j.Bare().Equal(from.Bare()) {
			sr.users[full] = nick
			moved[full] = true
		}
	}
	var out []xml.TokenReader
	for _, u := range sr.userJIDs() {
		self := moved[u.String()]
		codes, id := []int{statusNickChange}, ""
		if self {
			codes = []int{statusNickChange, statusSelf}
		}
		if u.Equal(from) {
			id = presenceID
		}
		out = append(out, servedOccupantLeft(room, old, u, nick, codes))
		codes = nil
		if self {
			codes = []int{statusSelf}
		}
		out = append(out, servedOccupantPresence(room, nick, u, id, codes))
	}
	s.mu.Unlock()
	for _, r := range out {
		if err := writeStanza(w, r); err != nil {
			return err
		}
	}
	a.dispatchServedMember(ctx, room, from, nick, event.MemberRenamed, presenceID)
	return nil
}

// servedLeave takes the XMPP occupant from out of room (XEP-0045 §7.14):
// the others see it leave, itself too when told (its own unavailable
// presence; not when its client bounced an error). The core is told once
// the user's last resource left.
func (a *Adapter) servedLeave(ctx context.Context, w xmlstream.TokenWriter, room, from jid.JID, tell bool) error {
	s := a.served
	s.mu.Lock()
	sr := s.rooms[room.String()]
	if sr == nil {
		s.mu.Unlock()
		return nil
	}
	nick, ok := sr.users[from.String()]
	if !ok {
		s.mu.Unlock()
		return nil
	}
	delete(sr.users, from.String())
	var out []xml.TokenReader
	if !sr.holds(nick) {
		// Its last client that held the nick: the others see it go.
		delete(sr.occupants, nick)
		for _, u := range sr.userJIDs() {
			out = append(out, servedOccupantLeft(room, nick, u, "", nil))
		}
	}
	if tell {
		out = append(out, servedOccupantLeft(room, nick, from, "", []int{statusSelf}))
	}
	last := !sr.hasUser(from.Bare(), "")
	s.mu.Unlock()
	for _, r := range out {
		if err := writeStanza(w, r); err != nil {
			return err
		}
	}
	a.log.Info("xmpp served room left", "room", room.String(), "occupant", from.String(), "nick", nick)
	if last {
		a.dispatchServedMember(ctx, room, from, "", event.MemberLeft, "")
	}
	return nil
}

// dispatchServedMember tells the core that the XMPP occupant from of room
// made change, now showing nick. A refusal is logged: the room is Parley's
// and has nobody to tell.
func (a *Adapter) dispatchServedMember(ctx context.Context, room, from jid.JID, nick string, change event.MemberChange, presenceID string) {
	key := presenceID
	if key == "" {
		key = strconv.FormatInt(a.now().UnixNano(), 10)
	}
	bare := from.Bare().String()
	evt := &event.Member{
		Header: event.Header{
			ID:       room.String() + "/member/" + bare + "/" + change.String() + "/" + key,
			From:     event.Address{Network: event.XMPP, ID: bare},
			To:       event.Address{Network: event.XMPP, ID: room.String()},
			FromName: nick,
			Room:     true,
			Time:     a.now(),
		},
		Change: change,
		Name:   nick,
	}
	dctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
	err := a.host.Dispatch(dctx, evt)
	cancel()
	if err != nil {
		a.log.Log(ctx, dispatchLevel(err), "xmpp served room member not accepted", "room", room.String(), "from", bare, "change", change.String(), "error", err)
	}
}

// handleServedMessage reads one message to a served room (or to one of
// its occupants) from r: a post of an occupant is dispatched to the core
// and, once accepted, reflected to every XMPP occupant; what the service
// does not take is answered with an error.
func (a *Adapter) handleServedMessage(ctx context.Context, w xmlstream.TokenWriter, r xml.TokenReader) error {
	m, err := decodeMessage(r)
	if err != nil {
		a.log.Warn("xmpp malformed message to a served room dropped", "error", err)
		return nil
	}
	from, to, reason := a.inboundAddresses(m.From, m.To)
	room, _, ok := a.servedRoom(m.To)
	if reason != "" || !ok {
		a.log.Debug("xmpp message to a served room ignored", "from", m.From, "to", m.To, "reason", reason)
		return nil
	}
	typ := messageType(m.Type)
	if typ == stanza.ErrorMessage {
		// An occupant's client refused a message of the room: it is
		// gone (XEP-0045 §18.1).
		return a.servedLeave(ctx, w, room, from, false)
	}
	refuse := func(se stanza.Error) error {
		a.log.Info("xmpp message to a served room refused", "from", m.From, "to", m.To, "condition", string(se.Condition))
		reply := stanza.Message{ID: m.ID, From: to, To: from, Type: stanza.ErrorMessage}
		return writeStanza(w, reply.Wrap(se.TokenReader()))
	}
	if _, ok := a.serverDomains[from.Domainpart()]; !ok {
		return refuse(a.notAllowed())
	}
	if to.Resourcepart() != "" || typ != stanza.GroupChatMessage {
		return refuse(servedError(stanza.Cancel, stanza.FeatureNotImplemented,
			"Private messages and invitations are not supported in rooms Parley serves."))
	}
	a.served.mu.Lock()
	var nick string
	if sr := a.served.rooms[room.String()]; sr != nil {
		nick = sr.users[from.String()]
	}
	a.served.mu.Unlock()
	switch {
	case nick == "":
		return refuse(servedError(stanza.Modify, stanza.NotAcceptable, "Only occupants may post in the room: join it first."))
	case m.body() == "" && m.Subject != nil:
		return refuse(servedError(stanza.Auth, stanza.Forbidden, "The subject is the Matrix room's topic: change it there."))
	case m.body() == "":
		return nil // a chat state, a receipt: nothing to carry
	}
	sid := randomID()
	now := a.now()
	evt := &event.Message{
		Header: event.Header{
			ID:       room.String() + "/" + sid,
			From:     event.Address{Network: event.XMPP, ID: from.Bare().String()},
			To:       event.Address{Network: event.XMPP, ID: room.String()},
			FromName: nick,
			Room:     true,
			Time:     now,
		},
		Body: m.body(),
	}
	// A failure to post it goes to this resource (see outboundFailure).
	a.senders.remember(evt.ID, from)
	dctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
	err = a.host.Dispatch(dctx, evt)
	cancel()
	if err != nil {
		a.log.Log(ctx, dispatchLevel(err), "xmpp served room post not accepted", "room", room.String(), "from", m.From, "error", err)
		return refuse(dispatchError(err))
	}
	post := servedPost{nick: nick, body: m.body(), id: sid, at: now}
	var out []xml.TokenReader
	a.served.mu.Lock()
	if sr := a.served.rooms[room.String()]; sr != nil {
		sr.remember(post)
		for _, u := range sr.userJIDs() {
			id := ""
			if u.Equal(from) {
				id = m.ID // the author knows its reflection by its id
			}
			out = append(out, servedGroupchatID(room, post, u, id, false))
		}
	}
	a.served.mu.Unlock()
	for _, r := range out {
		if err := writeStanza(w, r); err != nil {
			return err
		}
	}
	a.log.Debug("xmpp served room post dispatched", "event", evt.ID, "room", room.String(), "from", m.From)
	return nil
}

// servedOccupantPresence is the presence of the occupant nick of room, to to,
// with the status codes codes.
func servedOccupantPresence(room jid.JID, nick string, to jid.JID, id string, codes []int) xml.TokenReader {
	occupant, _ := room.WithResource(nick)
	return stanza.Presence{ID: id, From: occupant, To: to}.Wrap(mucUserX("participant", "", codes))
}

// servedOccupantLeft is the unavailable presence of the occupant nick of room,
// to to; newNick is set for a nick change (status 303).
func servedOccupantLeft(room jid.JID, nick string, to jid.JID, newNick string, codes []int) xml.TokenReader {
	occupant, _ := room.WithResource(nick)
	return stanza.Presence{From: occupant, To: to, Type: stanza.UnavailablePresence}.Wrap(mucUserX("none", newNick, codes))
}

// mucUserX is the <x xmlns='http://jabber.org/protocol/muc#user'/> of an
// occupant's presence: no affiliation, the role role, the new nick of a
// nick change, and the status codes.
func mucUserX(role, nick string, codes []int) xml.TokenReader {
	attrs := []xml.Attr{attr("affiliation", "none"), attr("role", role)}
	if nick != "" {
		attrs = append(attrs, attr("nick", nick))
	}
	children := []xml.TokenReader{element(xml.Name{Local: "item"}, attrs)}
	for _, c := range codes {
		children = append(children, element(xml.Name{Local: "status"}, []xml.Attr{attr("code", strconv.Itoa(c))}))
	}
	return element(xml.Name{Space: nsMUCUser, Local: "x"}, nil, children...)
}

// servedGroupchat is the post p of room to to; delayed (for the history)
// it carries the time of the post (XEP-0203).
func servedGroupchat(room jid.JID, p servedPost, to jid.JID, delayed bool) xml.TokenReader {
	return servedGroupchatID(room, p, to, "", delayed)
}

// servedGroupchatID is servedGroupchat with the stanza's id attribute; by
// default the room's stanza-id of the post.
func servedGroupchatID(room jid.JID, p servedPost, to jid.JID, id string, delayed bool) xml.TokenReader {
	occupant, _ := room.WithResource(p.nick)
	if id == "" {
		id = p.id
	}
	payload := []xml.TokenReader{
		element(xml.Name{Local: "body"}, nil, xmlstream.Token(xml.CharData(p.body))),
		element(xml.Name{Space: nsSID, Local: "stanza-id"}, []xml.Attr{attr("id", p.id), attr("by", room.String())}),
	}
	if delayed {
		payload = append(payload, element(xml.Name{Space: nsDelay, Local: "delay"},
			[]xml.Attr{attr("stamp", p.at.UTC().Format(time.RFC3339)), attr("from", room.String())}))
	}
	return stanza.Message{ID: id, From: occupant, To: to, Type: stanza.GroupChatMessage}.Wrap(xmlstream.MultiReader(payload...))
}

// servedSubject is the subject message of room to to (XEP-0045 §7.2.15):
// from the occupant who set it, or from the room; an empty <subject/>
// when there is none.
func servedSubject(room jid.JID, subject servedPost, to jid.JID) xml.TokenReader {
	from := room
	if subject.nick != "" {
		from, _ = room.WithResource(subject.nick)
	}
	var text []xml.TokenReader
	if subject.body != "" {
		text = append(text, xmlstream.Token(xml.CharData(subject.body)))
	}
	return stanza.Message{ID: randomID(), From: from, To: to, Type: stanza.GroupChatMessage}.Wrap(
		element(xml.Name{Local: "subject"}, nil, text...))
}

// handleServed reads one stanza named name (a message or a presence) to a
// served room from r and applies it; what it writes goes to w.
func (a *Adapter) handleServed(ctx context.Context, w xmlstream.TokenWriter, r xml.TokenReader, name string) error {
	switch name {
	case "message":
		return a.handleServedMessage(ctx, w, r)
	case "presence":
		return a.handleServedPresence(ctx, w, r)
	}
	return nil
}

// servedSelfPing answers a ping from from to the occupant nick of room
// (XEP-0410, MUC self-ping): nil (a result) when from is that occupant, an
// error otherwise: not-acceptable when from is no occupant, which tells
// its client to join again (after a restart of Parley, say), and
// feature-not-implemented for a ping to someone else, which the service
// does not pass on.
func (a *Adapter) servedSelfPing(room, from jid.JID, nick string) *stanza.Error {
	a.served.mu.Lock()
	defer a.served.mu.Unlock()
	var held string
	if sr := a.served.rooms[room.String()]; sr != nil {
		held = sr.users[from.String()]
	}
	switch held {
	case nick:
		return nil
	case "":
		se := servedError(stanza.Cancel, stanza.NotAcceptable, "You are not in this room: join it again.")
		return &se
	default:
		se := servedError(stanza.Cancel, stanza.FeatureNotImplemented, "")
		return &se
	}
}
