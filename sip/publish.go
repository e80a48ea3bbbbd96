package sip

import (
	"context"
	"crypto/rand"
	"mime"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/event"
)

// maxPublications bounds the publications of one address of record (one
// per device, normally). Beyond it a new one is answered 503.
const maxPublications = 16

// publication is one event state publication (RFC 3903) of a user's
// presence: what one of their devices last published.
type publication struct {
	etag    string
	note    presenceNote
	updated time.Time
	expiry  *time.Timer
}

// publications holds the presence publications of the users of the
// domain, in memory only: they end when Parley stops, and the devices
// publish again when their refresh fails with 412 (RFC 3903 §4.1).
type publications struct {
	mu     sync.Mutex
	byAOR  map[string]map[string]*publication // AOR → etag → publication
	last   map[string]presenceNote            // AOR → last composed presence dispatched
	closed bool
}

func newPublications() *publications {
	return &publications{byAOR: map[string]map[string]*publication{}, last: map[string]presenceNote{}}
}

// close stops the expiry timers.
func (p *publications) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, pubs := range p.byAOR {
		for _, pub := range pubs {
			pub.expiry.Stop()
		}
	}
}

// composeLocked returns the presence of aor from its publications: the
// states merged with event.Merge, with the note of the most recent
// publication in that state. No publication is offline.
func (p *publications) composeLocked(aor string) presenceNote {
	var states []event.PresenceState
	for _, pub := range p.byAOR[aor] {
		states = append(states, pub.note.state)
	}
	n := presenceNote{state: event.Merge(states...)}
	var newest time.Time
	for _, pub := range p.byAOR[aor] {
		if pub.note.state == n.state && !pub.updated.Before(newest) {
			newest, n.status = pub.updated, pub.note.status
		}
	}
	return n
}

// changedLocked composes the presence of aor and reports whether it differs
// from the one dispatched last, recording it as dispatched.
func (p *publications) changedLocked(aor string) (presenceNote, bool) {
	n := p.composeLocked(aor)
	old, seen := p.last[aor]
	if seen && old == n {
		return n, false
	}
	if len(p.byAOR[aor]) == 0 {
		delete(p.last, aor)
		if !seen {
			return n, false
		}
	} else {
		p.last[aor] = n
	}
	return n, true
}

// onPublish handles PUBLISH of presence (RFC 3903, RFC 3856) by a user of
// the domain for their own AOR, authenticated with digest (407). It
// creates (no SIP-If-Match, a body), refreshes (SIP-If-Match, no body),
// modifies (SIP-If-Match and a body) or removes (SIP-If-Match, Expires 0)
// a publication, answering 200 with a new SIP-ETag and the Expires granted;
// 412 for an unknown entity-tag, 423 for a too brief Expires, 489 for
// another event package, 415 for a body other than application/pidf+xml
// and 400 for a malformed PIDF document. Whenever the user's presence,
// composed from all their publications, changes, a broadcast
// event.Presence (To zero) is dispatched; also when a publication lapses.
func (a *Adapter) onPublish(req *sip.Request, src netip.Addr, p *peer) *reply {
	in, r := checkRequest(req)
	if r != nil {
		return r
	}
	if _, r := presenceEvent(req); r != nil {
		return r
	}
	now := a.now()
	in.source, in.peer = src, p
	if r := a.authorizeSender(req, &in, now); r != nil {
		return r
	}
	if in.fromHost != a.domain || !a.users[in.fromUser] {
		return newReply(403, "Forbidden (Only Users Of The Domain Publish)")
	}
	if target, _, err := aorOf(&req.Recipient); err != nil || target != in.from {
		return newReply(403, "Forbidden (Publish Your Own Presence)")
	}
	expires, r := a.subscribeExpires(req)
	if r != nil {
		return r
	}
	var note presenceNote
	body := req.Body()
	hasBody := len(body) > 0
	if hasBody {
		if len(body) > a.cfg.MaxMessageSize {
			return newReply(413, "Request Entity Too Large")
		}
		ct := ""
		if h := req.ContentType(); h != nil {
			ct = h.Value()
		}
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != presenceMediaType {
			return newReply(415, "Unsupported Media Type", sip.NewHeader("Accept", presenceMediaType))
		}
		doc, err := parsePIDF(body)
		if err != nil {
			a.log.Debug("sip publish with a malformed pidf document", "from", in.from, "err", err)
			return newReply(400, "Malformed PIDF Document")
		}
		note = presenceNote{state: doc.state(), status: doc.note()}
	}
	ifMatch := ""
	if h := req.GetHeader("SIP-If-Match"); h != nil {
		ifMatch = strings.TrimSpace(h.Value())
	}
	if ifMatch == "" && !hasBody {
		return newReply(400, "Missing Body")
	}

	ps := a.pubs
	ps.mu.Lock()
	pubs := ps.byAOR[in.from]
	var pub *publication
	switch {
	case ifMatch != "":
		pub = pubs[ifMatch]
		if pub == nil {
			ps.mu.Unlock()
			return newReply(412, "Conditional Request Failed")
		}
		delete(pubs, ifMatch)
		pub.expiry.Stop()
	case expires == 0:
		ps.mu.Unlock()
		return newReply(400, "Expires 0 Without SIP-If-Match")
	default:
		if len(pubs) >= maxPublications {
			ps.mu.Unlock()
			return newReply(503, "Too Many Publications", sip.NewHeader("Retry-After", "60"))
		}
		pub = &publication{}
	}
	var etag string
	if expires > 0 {
		if pubs == nil {
			pubs = map[string]*publication{}
			ps.byAOR[in.from] = pubs
		}
		etag = rand.Text()
		pub.etag = etag
		if hasBody {
			pub.note, pub.updated = note, now
		}
		pubs[etag] = pub
		aor := in.from
		pub.expiry = time.AfterFunc(expires, func() { a.async(func() { a.expirePublication(aor, pub, etag) }) })
	} else if len(pubs) == 0 {
		delete(ps.byAOR, in.from)
	}
	n, changed := ps.changedLocked(in.from)
	ps.mu.Unlock()
	if changed {
		a.dispatchPresence(in.from, n, now)
	}
	headers := []sip.Header{sip.NewHeader("Expires", strconv.FormatInt(int64(expires/time.Second), 10))}
	if etag != "" {
		headers = append(headers, sip.NewHeader("SIP-ETag", etag))
	}
	return newReply(200, "OK", headers...)
}

// expirePublication removes pub of aor when it lapses with the
// entity-tag etag (not when it was refreshed or modified meanwhile), and
// dispatches the user's presence if that changes it.
func (a *Adapter) expirePublication(aor string, pub *publication, etag string) {
	ps := a.pubs
	ps.mu.Lock()
	if ps.closed || pub.etag != etag || ps.byAOR[aor][etag] != pub {
		ps.mu.Unlock()
		return
	}
	delete(ps.byAOR[aor], pub.etag)
	if len(ps.byAOR[aor]) == 0 {
		delete(ps.byAOR, aor)
	}
	n, changed := ps.changedLocked(aor)
	ps.mu.Unlock()
	if changed {
		a.dispatchPresence(aor, n, a.now())
	}
}

// dispatchPresence dispatches the presence n of the user aor, broadcast.
// A failure is logged: presence is state, the next change corrects it.
func (a *Adapter) dispatchPresence(aor string, n presenceNote, now time.Time) {
	host, _, _, _ := a.stack()
	evt := &event.Presence{
		Header: event.Header{
			ID:   aor + "/presence/" + strconv.FormatInt(now.UnixNano(), 10),
			From: event.Address{Network: event.SIP, ID: aor},
			Time: now,
		},
		State:  n.state,
		Status: n.status,
	}
	ctx, cancel := context.WithTimeout(a.dispatchCtx, dispatchTimeout)
	defer cancel()
	if err := host.Dispatch(ctx, evt); err != nil {
		a.log.Warn("sip presence not dispatched", "from", aor, "state", n.state.String(), "err", err)
		return
	}
	a.log.Debug("sip presence dispatched", "from", aor, "state", n.state.String())
}
