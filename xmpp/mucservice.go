package xmpp

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/escape"
	"github.com/parleygw/parley/internal/names"
)

// The MUC service (XEP-0045, service side): Parley serves a Matrix room as
// a multi-user chat under its own component domain, so that an XMPP user
// opens a Matrix room from their client by joining it.
//
// Addresses: the Matrix room alias #name:server is served as the room JID
// #name%server@<component domain>, name and server escaped as the ghost
// templates escape values (every byte outside [a-z0-9.-] becomes '=' and
// two hex digits). A Matrix user's localpart cannot start with '#', and an
// escaped value never holds '#' or '%', so a served room never clashes with
// a ghost. Only aliases are served, not room IDs.
//
// The first join of a served room asks the core to open a portal between
// the alias and the room JID (portalOpener); a host that cannot, or whose
// policy refuses, has the join refused with its reason. From then on the
// room is a portal like those of the YAML, except that Parley is the MUC:
//
//   - its XMPP occupants are the users who joined (by full JID); each is
//     a participant of the portal by their real bare JID, whose joins,
//     leaves, nick changes and posts are dispatched (event.Member,
//     event.Message with Header.Room) with To the room JID;
//   - its other occupants are the Matrix members the core tells of
//     (event.Member, or a first post), named by their display name
//     cleaned, a suffix " 2", " 3"... when another occupant holds it;
//   - a post is reflected to every XMPP occupant with the room's
//     stanza-id (XEP-0359), and kept for the history of later joins
//     (the last servedHistory posts of this process);
//   - the subject is the Matrix room's topic, as the core sends it
//     (event.Topic).
//
// The room is semi-anonymous (no one sees real JIDs), open and
// unmoderated: every occupant is a participant with no affiliation.
// Private messages between occupants are not supported.
//
// What a served room knows lives in memory: after a restart, the XMPP
// occupants join again (their clients rejoin when the component comes
// back), the Matrix members reappear as the core tells of them, and the
// history starts empty.

// Limits of the MUC service.
const (
	// servedHistory bounds the posts a served room keeps for the
	// history sent at join.
	servedHistory = 50
	// servedNickAttempts bounds the suffixes tried for a Matrix
	// member's nick before its ghost's localpart is used.
	servedNickAttempts = 100
)

// XEP-0045 features of the service and its rooms (XEP-0045 §6.2, §6.4).
const (
	featureMUCOpen          = "muc_open"
	featureMUCUnmoderated   = "muc_unmoderated"
	featureMUCSemiAnonymous = "muc_semianonymous"
	featureMUCTemporary     = "muc_temporary"
)

// portalOpener is what the host does when it opens portals at run time
// (the core's registry, bridges.PortalHost): OpenPortal joins rooms (here a
// Matrix alias and a served room JID) into one portal at the request of by
// (the joiner's bare JID), or says why it will not (the YAML's policy). It
// returns nil at once when that portal exists already.
type portalOpener interface {
	OpenPortal(ctx context.Context, by event.Address, rooms ...event.Address) error
}

// servedRooms is the state of the rooms the MUC service serves. Safe for
// concurrent use.
type servedRooms struct {
	mu    sync.Mutex
	rooms map[string]*servedRoom // by the room's bare JID
}

// servedRoom is one served room.
type servedRoom struct {
	jid   jid.JID
	alias string // the Matrix room alias it serves
	// open is set once the core opened the room's portal.
	open bool
	// occupants are all the occupants by nick; users maps the full JIDs
	// of the XMPP clients in the room to their nicks, members the Matrix
	// members' ghost JIDs to theirs.
	occupants map[string]*servedOccupant
	users     map[string]string
	members   map[string]string
	history   []servedPost
	subject   servedPost
}

// servedOccupant is an occupant of a served room: an XMPP user (jid their
// bare JID; each of their clients that joined holds the nick) or a Matrix
// member (jid their ghost's bare JID).
type servedOccupant struct {
	nick string
	jid  jid.JID
	user bool
}

// servedPost is a post (or, as a room's subject, a subject change) kept
// for the history.
type servedPost struct {
	nick, body, id string
	at             time.Time
}

func newServedRooms() *servedRooms {
	return &servedRooms{rooms: make(map[string]*servedRoom)}
}

// room returns the state of room, serving alias, creating it.
func (s *servedRooms) roomLocked(room jid.JID, alias string) *servedRoom {
	r := s.rooms[room.String()]
	if r == nil {
		r = &servedRoom{
			jid: room, alias: alias,
			occupants: map[string]*servedOccupant{}, users: map[string]string{}, members: map[string]string{},
		}
		s.rooms[room.String()] = r
	}
	return r
}

// openRooms returns the served rooms whose portal is open, by JID, as
// disco#items.
func (s *servedRooms) openRooms() []discoItem {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []discoItem
	for _, r := range s.rooms {
		if r.open {
			out = append(out, discoItem{JID: r.jid.String(), Name: r.alias})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].JID < out[j].JID })
	return out
}

// userJIDs returns the full JIDs of the XMPP occupants of r, in order.
func (r *servedRoom) userJIDs() []jid.JID {
	full := make([]string, 0, len(r.users))
	for u := range r.users {
		full = append(full, u)
	}
	sort.Strings(full)
	out := make([]jid.JID, 0, len(full))
	for _, u := range full {
		if j, err := jid.Parse(u); err == nil {
			out = append(out, j)
		}
	}
	return out
}

// hasUser reports whether an XMPP occupant other than except has the bare
// JID bare.
func (r *servedRoom) hasUser(bare jid.JID, except string) bool {
	for full := range r.users {
		j, err := jid.Parse(full)
		if err == nil && full != except && j.Bare().Equal(bare) {
			return true
		}
	}
	return false
}

// mayHold reports whether the XMPP user from may hold nick in r: nobody
// holds it, or the same user (another of their clients: a multi-session
// nick, XEP-0045 §7.2.9).
func (r *servedRoom) mayHold(nick string, from jid.JID) bool {
	o, taken := r.occupants[nick]
	return !taken || (o.user && o.jid.Equal(from.Bare()))
}

// holds reports whether a client of an XMPP user holds nick in r.
func (r *servedRoom) holds(nick string) bool {
	for _, n := range r.users {
		if n == nick {
			return true
		}
	}
	return false
}

// remember keeps p for the history.
func (r *servedRoom) remember(p servedPost) {
	r.history = append(r.history, p)
	if len(r.history) > servedHistory {
		r.history = r.history[len(r.history)-servedHistory:]
	}
}

// memberNick returns the nick of the Matrix member ghost in r, and whether
// it is new: a member the room did not know gets a nick from name (see
// servedNick) and becomes an occupant.
func (r *servedRoom) memberNick(ghost jid.JID, name string) (string, bool) {
	if n, ok := r.members[ghost.String()]; ok {
		return n, false
	}
	n := r.freeNick(ghost, name)
	r.members[ghost.String()] = n
	r.occupants[n] = &servedOccupant{nick: n, jid: ghost}
	return n, true
}

// freeNick returns the nick a Matrix member ghost gets in r for the name
// name: the name cleaned (or the ghost's localpart when nothing is left),
// then with a suffix " 2", " 3"..., the first no other occupant holds.
func (r *servedRoom) freeNick(ghost jid.JID, name string) string {
	base := names.Clean(name, maxNick)
	if _, err := r.jid.WithResource(base); base == "" || err != nil {
		base = ghost.Localpart()
	}
	for i := range servedNickAttempts {
		n := nickCandidate(base, i)
		if o, taken := r.occupants[n]; !taken || (!o.user && o.jid.Equal(ghost)) {
			if _, err := r.jid.WithResource(n); err == nil {
				return n
			}
		}
	}
	return ghost.Localpart() + " " + randomID()[:6]
}

// servedRoom returns the served room that raw (a JID, maybe with a
// resource) names and the Matrix alias it serves, when raw is under the
// component domain and its localpart names an alias.
func (a *Adapter) servedRoom(raw string) (jid.JID, string, bool) {
	j, err := jid.Parse(raw)
	if err != nil || j.Domainpart() != a.domain.Domainpart() {
		return jid.JID{}, "", false
	}
	alias, ok := servedAlias(j.Localpart())
	if !ok {
		return jid.JID{}, "", false
	}
	return j.Bare(), alias, true
}

// isServed reports whether raw names a served room (or an occupant of one).
func (a *Adapter) isServed(raw string) bool {
	_, _, ok := a.servedRoom(raw)
	return ok
}

// servedBare returns the bare part of raw, a JID as written: what comes
// before its first '/'. A nick that is no valid resourcepart leaves a
// bare part that still names the room.
func servedBare(raw string) string {
	bare, _, _ := strings.Cut(raw, "/")
	return bare
}

// servedAlias returns the Matrix room alias that the localpart of a served
// room names: "#name%server" gives "#name:server", both parts unescaped.
func servedAlias(local string) (string, bool) {
	rest, ok := strings.CutPrefix(local, "#")
	if !ok {
		return "", false
	}
	name, server, ok := strings.Cut(rest, "%")
	if !ok || name == "" || server == "" {
		return "", false
	}
	n, ok1 := escape.Decode(name)
	s, ok2 := escape.Decode(server)
	if !ok1 || !ok2 {
		return "", false
	}
	return "#" + n + ":" + s, true
}

// servedLocalpart returns the localpart of the room that serves the Matrix
// alias #name:server; it reverses servedAlias.
func servedLocalpart(alias string) (string, bool) {
	rest, ok := strings.CutPrefix(alias, "#")
	if !ok {
		return "", false
	}
	name, server, ok := strings.Cut(rest, ":")
	if !ok || name == "" || server == "" {
		return "", false
	}
	return "#" + escape.Encode(name) + "%" + escape.Encode(server), true
}
