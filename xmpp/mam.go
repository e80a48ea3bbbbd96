package xmpp

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// Archive queries (XEP-0313, Message Archive Management) of the portal
// rooms: the listener asks a room's archive for the posts since the room's
// cursor when it joins (catch-up), and a ghost's repeated post is looked
// for in it (see delivered). A room without an archive answers the query
// with an error; the room's history (XEP-0045 §7.2.15) then serves alone.
//
// The room sends each post it finds as a <message/> with a <result/>
// (XEP-0313 §4.2), then answers the query's <iq/> with a <fin/>, on the same
// ordered stream: when the answer comes, every result has come.

// Namespaces of archive queries.
const (
	nsMAM     = "urn:xmpp:mam:2"
	nsForward = "urn:xmpp:forward:0" // XEP-0297: a result wraps the post
	nsData    = "jabber:x:data"
	nsRSM     = "http://jabber.org/protocol/rsm" // XEP-0059: the pages
)

const (
	// mamPage is the number of posts asked for per page.
	mamPage = 50
	// mamPages bounds the pages of one catch-up or lookup.
	mamPages = 200
	// mamTimeout bounds the wait for the answer to one page.
	mamTimeout = 30 * time.Second
)

// errNoArchive is the answer of a room that keeps no archive, or does not
// let Parley read it.
var errNoArchive = errors.New("the room has no archive Parley may read")

// mamFin is the end of an archive query's answer.
type mamFin struct {
	Complete string `xml:"complete,attr"`
	Last     string `xml:"http://jabber.org/protocol/rsm set>last"`
}

// mamResult is one post of an archive query's answer.
type mamResult struct {
	QueryID   string `xml:"queryid,attr"`
	ID        string `xml:"id,attr"`
	Forwarded struct {
		Delay *struct {
			Stamp string `xml:"stamp,attr"`
		} `xml:"urn:xmpp:delay delay"`
		Message *messageStanza `xml:"message"`
	} `xml:"urn:xmpp:forward:0 forwarded"`
}

// archiveQuery is an archive query in progress: its results are
// dispatched (a catch-up), or their IDs collected (a lookup).
type archiveQuery struct {
	room     string
	dispatch bool
	ids      map[string]bool
	count    int
	last     string
}

// startQuery registers the archive query id.
func (r *rooms) startQuery(id string, q *archiveQuery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queries[id] = q
}

// endQuery forgets the archive query id.
func (r *rooms) endQuery(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.queries, id)
}

// query returns the archive query id of room, if one runs.
func (r *rooms) query(id, room string) (*archiveQuery, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q, ok := r.queries[id]
	return q, ok && q.room == room
}

// request writes the <iq/> of the given ID and waits for its answer. The
// answer comes through the handler (answerPing), like a barrier's.
func (a *Adapter) request(ctx context.Context, id string, iq xml.TokenReader) (iqStanza, error) {
	live, w, release, err := a.expectAnswer(id)
	if err != nil {
		return iqStanza{}, err
	}
	defer release()
	if _, err := a.writeOn(ctx, live, iq); err != nil {
		return iqStanza{}, err
	}
	t := time.NewTimer(mamTimeout)
	defer t.Stop()
	select {
	case <-w.done:
		return w.answer, w.err
	case <-t.C:
		return iqStanza{}, fmt.Errorf("no answer to %s within %s", id, mamTimeout)
	case <-ctx.Done():
		return iqStanza{}, ctx.Err()
	}
}

// queryArchive asks room's archive, as from, for the posts from start on
// (or all with start zero), page after page, each one's results going to
// q. It returns errNoArchive when the room keeps no archive for Parley.
func (a *Adapter) queryArchive(ctx context.Context, room, from jid.JID, start time.Time, q *archiveQuery) error {
	after := ""
	for range mamPages {
		qid := randomID()
		a.rooms.startQuery(qid, q)
		before := q.count
		answer, err := a.request(ctx, qid, stanza.IQ{ID: qid, Type: stanza.SetIQ, From: from, To: room}.Wrap(
			mamQuery(qid, start, after)))
		a.rooms.endQuery(qid)
		switch {
		case err != nil:
			return fmt.Errorf("query the archive of %s: %w", room, err)
		case answer.Type == string(stanza.ErrorIQ):
			se := stanza.Error{Condition: stanza.UndefinedCondition}
			if answer.Error != nil {
				se = *answer.Error
			}
			return fmt.Errorf("query the archive of %s: %w: %s", room, errNoArchive, se.Condition)
		case answer.Fin == nil:
			return fmt.Errorf("query the archive of %s: %w: no <fin/> in the answer", room, errNoArchive)
		}
		if answer.Fin.Complete == "true" || q.count == before || answer.Fin.Last == "" {
			return nil
		}
		after = answer.Fin.Last
	}
	return fmt.Errorf("query the archive of %s: more than %d pages", room, mamPages)
}

// mamQuery returns the <query/> of an archive query (XEP-0313 §4.1) with
// the ID qid, for the posts from start on, after the result after (RSM).
func mamQuery(qid string, start time.Time, after string) xml.TokenReader {
	field := func(name, value string) xml.TokenReader {
		return element(xml.Name{Space: nsData, Local: "field"}, []xml.Attr{attr("var", name)},
			element(xml.Name{Space: nsData, Local: "value"}, nil, xmlstream.Token(xml.CharData(value))))
	}
	fields := []xml.TokenReader{field("FORM_TYPE", nsMAM)}
	if !start.IsZero() {
		fields = append(fields, field("start", start.UTC().Format(time.RFC3339)))
	}
	set := []xml.TokenReader{element(xml.Name{Space: nsRSM, Local: "max"}, nil, xmlstream.Token(xml.CharData(strconv.Itoa(mamPage))))}
	if after != "" {
		set = append(set, element(xml.Name{Space: nsRSM, Local: "after"}, nil, xmlstream.Token(xml.CharData(after))))
	}
	return element(xml.Name{Space: nsMAM, Local: "query"}, []xml.Attr{attr("queryid", qid)},
		element(xml.Name{Space: nsData, Local: "x"}, []xml.Attr{attr("type", "submit")}, fields...),
		element(xml.Name{Space: nsRSM, Local: "set"}, nil, set...))
}

// handleArchived takes the result m, from room, of an archive query in
// progress: a catch-up's post is dispatched as history, a lookup's IDs
// collected. Results of no query in progress are dropped.
func (a *Adapter) handleArchived(ctx context.Context, m messageStanza, room jid.JID) error {
	res := m.Result
	q, ok := a.rooms.query(res.QueryID, room.String())
	post := res.Forwarded.Message
	if !ok || post == nil || res.Forwarded.Delay == nil {
		a.log.Debug("xmpp archive result ignored", "room", room.String(), "queryid", res.QueryID)
		return nil
	}
	a.rooms.mu.Lock()
	q.count++
	q.last = res.ID
	if !q.dispatch {
		for _, id := range ownIDs(*post) {
			q.ids[id] = true
		}
	}
	a.rooms.mu.Unlock()
	if !q.dispatch {
		return nil
	}
	// The room's copy: as the listener would have got it live, with the
	// room's stanza-id and the time the archive gives.
	p := *post
	p.To = m.To
	p.Delay = res.Forwarded.Delay
	p.StanzaIDs = append([]struct {
		ID string `xml:"id,attr"`
		By string `xml:"by,attr"`
	}{{ID: res.ID, By: room.String()}}, p.StanzaIDs...)
	// A subject of the archive is not the room's now: the join gave that.
	p.Result, p.Subject, p.archived = nil, nil, true
	return a.handleRoomMessage(ctx, p, room)
}

// catchUpArchive dispatches the posts of room's archive since the time t
// of its cursor before the listener joined (less cursorSlack). It reports
// whether the room has an archive Parley read; without one, the history
// the listener asked for at its join serves. A room without a cursor (a
// new portal) is not caught up: nothing before the portal is bridged.
func (a *Adapter) catchUpArchive(ctx context.Context, room jid.JID, t time.Time) bool {
	q := &archiveQuery{room: room.String(), dispatch: true}
	err := a.queryArchive(ctx, room, a.domain, t.Add(-cursorSlack), q)
	switch {
	case errors.Is(err, errNoArchive):
		a.log.Info("xmpp room has no archive: catch-up from its history", "room", room.String(), "error", err)
		return false
	case err != nil:
		a.log.Warn("xmpp room archive catch-up failed", "room", room.String(), "posts", q.count, "error", err)
		return false
	}
	a.log.Info("xmpp room caught up from its archive", "room", room.String(), "posts", q.count)
	return true
}

// archived reports whether the post id of a ghost is in room's archive
// from since on (ok false when the room keeps no archive Parley may read).
func (a *Adapter) archived(ctx context.Context, room jid.JID, since time.Time, id string) (found, ok bool, err error) {
	q := &archiveQuery{room: room.String(), ids: map[string]bool{}}
	err = a.queryArchive(ctx, room, a.domain, since, q)
	if errors.Is(err, errNoArchive) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	a.rooms.mu.Lock()
	defer a.rooms.mu.Unlock()
	return q.ids[id], true, nil
}

// catch records that the post id of room's history was dispatched in this
// session.
func (r *rooms) catch(room, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.roomLocked(room)
	if s.caught == nil || len(s.caught) >= echoesSize {
		s.caught = map[string]bool{}
	}
	s.caught[id] = true
}

// wasCaught reports whether the post id of room's history was dispatched
// in this session.
func (r *rooms) wasCaught(room, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	return s != nil && s.caught[id]
}
