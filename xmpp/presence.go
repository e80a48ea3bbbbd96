package xmpp

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/names"
	"github.com/parleygw/parley/internal/ratelimit"
)

// Limits of inbound presence.
const (
	// maxStatus bounds the <status/> text the adapter passes on, in
	// characters; longer text is truncated. RFC 6121 sets no limit.
	maxStatus = 1024
	// presencePairs bounds how many (user, ghost) pairs the adapter keeps
	// the per-resource presence of; maxResources bounds the resources of
	// one pair. Beyond them a presence is dispatched unmerged.
	presencePairs = 1 << 16
	maxResources  = 32
	// subscribeRate and subscribeBurst bound the subscription requests
	// (subscribe, unsubscribe) the adapter accepts from one bare JID.
	subscribeRate  = 10
	subscribeBurst = 20
	// probeRate and probeBurst bound the probes accepted from one bare
	// JID: a server probes every contact of a user who logs in, so the
	// burst is larger.
	probeRate  = 20
	probeBurst = 200
	// limitersSize bounds how many senders each rate limiter tracks.
	limitersSize = 4096
)

// presenceStanza is what the adapter reads of an inbound <presence/>.
type presenceStanza struct {
	XMLName  xml.Name
	ID       string     `xml:"id,attr"`
	From     string     `xml:"from,attr"`
	To       string     `xml:"to,attr"`
	Type     string     `xml:"type,attr"`
	Lang     string     `xml:"http://www.w3.org/XML/1998/namespace lang,attr"`
	Shows    []langText `xml:"show"`
	Statuses []langText `xml:"status"`
}

// decodePresence decodes one <presence/> element, start tag included, from r.
func decodePresence(r xml.TokenReader) (presenceStanza, error) {
	var p presenceStanza
	if err := xml.NewTokenDecoder(r).Decode(&p); err != nil {
		return presenceStanza{}, fmt.Errorf("decode presence stanza: %w", err)
	}
	if p.XMLName.Local != "presence" {
		return presenceStanza{}, fmt.Errorf("decode presence stanza: got <%s/>", p.XMLName.Local)
	}
	return p, nil
}

// show returns the text of the RFC 6121 <show/> child; ok is false when
// there is more than one (RFC 6121 §4.7.2.1 allows at most one).
func (p presenceStanza) show() (show string, ok bool) {
	n := 0
	for _, s := range p.Shows {
		// A <show/> in another namespace is an extension, not RFC 6121's.
		if s.XMLName.Space != p.XMLName.Space {
			continue
		}
		show = strings.TrimSpace(s.Text)
		n++
	}
	return show, n <= 1
}

// status returns the <status/> text to use: the one in the stanza's
// language (or without a language), else the first; truncated to maxStatus
// characters.
func (p presenceStanza) status() string {
	var text string
	found := false
	for _, s := range p.Statuses {
		if s.XMLName.Space != p.XMLName.Space {
			continue
		}
		if s.Lang == "" || s.Lang == p.Lang {
			text = s.Text
			break
		}
		if !found {
			text, found = s.Text, true
		}
	}
	return names.Truncate(strings.TrimSpace(text), maxStatus)
}

// showState maps an RFC 6121 <show/> value to a presence state; ok is false
// for a value RFC 6121 §4.7.2.1 does not define.
func showState(show string) (s event.PresenceState, ok bool) {
	switch show {
	case "", "chat":
		return event.Available, true
	case "away":
		return event.Away, true
	case "xa":
		return event.ExtendedAway, true
	case "dnd":
		return event.DoNotDisturb, true
	}
	return event.Offline, false
}

// presenceAction is what the adapter does with an inbound presence.
type presenceAction uint8

const (
	// presenceIgnore: drop the stanza (logged at debug level).
	presenceIgnore presenceAction = iota
	// presenceRefuse: answer with a presence error, apply nothing.
	presenceRefuse
	// presenceUpdate: record the sender's state and dispatch the merged
	// presence.
	presenceUpdate
	// presenceSubscribe: dispatch an active Subscription, approve it and
	// ask for the user's presence in return.
	presenceSubscribe
	// presenceUnsubscribe: dispatch an inactive Subscription and confirm.
	presenceUnsubscribe
	// presenceProbe: dispatch an active Subscription, so that the core
	// answers with the last known presence.
	presenceProbe
)

// inboundPresence is the translation of one inbound presence stanza.
type inboundPresence struct {
	action presenceAction
	// reason says, for the log, why the stanza is ignored or refused.
	reason string
	// err answers the stanza when action is presenceRefuse.
	err stanza.Error
	// from is the sender's JID as written (full or bare), to the ghost's
	// bare JID; id and typ are the stanza's own.
	from, to jid.JID
	id       string
	typ      stanza.PresenceType
	// state and status are the sender's, for presenceUpdate.
	state  event.PresenceState
	status string
}

// translatePresence decides what to do with the inbound presence p. Like
// translateMessage it trusts no attribute: the sender must be a user of the
// server's domains and the recipient a ghost under the component domain.
func (a *Adapter) translatePresence(p presenceStanza) inboundPresence {
	in := inboundPresence{id: p.ID, typ: stanza.PresenceType(p.Type)}
	from, to, reason := a.inboundAddresses(p.From, p.To)
	if reason != "" {
		in.reason = reason
		return in
	}
	in.from, in.to = from, to.Bare()
	if in.typ == stanza.ErrorPresence {
		// Never answer an error with an error.
		in.reason = "presence error"
		return in
	}
	if to.Localpart() == "" {
		// The gateway itself has no presence to share or watch.
		in.reason = "addressed to the component domain itself"
		return in
	}
	if !a.allowedSender(from) {
		in.action, in.reason = presenceRefuse, "sender is not a user of the server's domains"
		in.err = a.notAllowed()
		return in
	}
	switch in.typ {
	case stanza.AvailablePresence:
		show, ok := p.show()
		state, known := showState(show)
		if !ok || !known {
			in.action, in.reason = presenceRefuse, "invalid <show/>"
			in.err = stanza.Error{Type: stanza.Modify, Condition: stanza.BadRequest}
			return in
		}
		in.action, in.state, in.status = presenceUpdate, state, p.status()
	case stanza.UnavailablePresence:
		// A <show/> means nothing here: a resource going offline is never
		// refused, lest it stay online forever.
		in.action, in.state, in.status = presenceUpdate, event.Offline, p.status()
	case stanza.SubscribePresence:
		in.action = presenceSubscribe
	case stanza.UnsubscribePresence:
		in.action = presenceUnsubscribe
	case stanza.ProbePresence:
		in.action = presenceProbe
	case stanza.SubscribedPresence, stanza.UnsubscribedPresence:
		// The user answers a subscription request of a ghost: their
		// server keeps the roster; nothing for the core.
		in.reason = "answer to a subscription request"
	default:
		in.action, in.reason = presenceRefuse, "unknown presence type"
		in.err = stanza.Error{Type: stanza.Modify, Condition: stanza.BadRequest}
	}
	return in
}

// handlePresence reads one <presence/> from r and applies, answers or
// ignores it (RFC 6121 §3–4); replies go to w.
//
// Available and unavailable presence is recorded per resource of the
// sender, and the presence of the sender's best resource (event.Merge) is
// dispatched as directed presence to the ghost. A subscription request is
// approved on behalf of the ghost once the core accepted it, and answered
// with a subscription request from the ghost (the gateway asks for mutual
// subscription); one to nobody is refused with "unsubscribed".
func (a *Adapter) handlePresence(ctx context.Context, w xmlstream.TokenWriter, r xml.TokenReader) error {
	p, err := decodePresence(r)
	if err != nil {
		a.log.Warn("xmpp malformed presence dropped", "error", err)
		return nil
	}
	in := a.translatePresence(p)
	if in.action != presenceIgnore && !a.allow(in) {
		a.log.Debug("xmpp presence dropped: rate limited", "from", p.From, "to", p.To, "type", p.Type)
		return nil
	}
	switch in.action {
	case presenceIgnore:
		a.log.Debug("xmpp presence ignored", "reason", in.reason, "from", p.From, "to", p.To, "type", p.Type)
		return nil
	case presenceRefuse:
		a.log.Info("xmpp presence refused", "reason", in.reason, "from", p.From, "to", p.To, "type", p.Type, "condition", string(in.err.Condition))
		return writeStanza(w, stanza.Presence{ID: in.id, From: in.from, To: in.to}.Error(in.err))
	case presenceUpdate:
		return a.dispatchPresence(ctx, in)
	case presenceSubscribe, presenceUnsubscribe, presenceProbe:
		return a.handleSubscription(ctx, w, in)
	}
	return nil
}

// allow reports whether the subscription request or probe in is within its
// sender's rate (whether it is to be applied or refused: a storm of refused
// requests is not answered either). Other presence is not limited: the core
// coalesces presence updates.
func (a *Adapter) allow(in inboundPresence) bool {
	var l *ratelimit.Limiter[string]
	switch in.typ {
	case stanza.SubscribePresence, stanza.UnsubscribePresence:
		l = a.subscribeLimiter
	case stanza.ProbePresence:
		l = a.probeLimiter
	default:
		return true
	}
	ok, _ := l.Allow(in.from.Bare().String(), a.now())
	return ok
}

// dispatchPresence records the state of one resource of the sender and
// dispatches the sender's merged presence to the ghost. Presence is not
// answered, whatever the core says.
func (a *Adapter) dispatchPresence(ctx context.Context, in inboundPresence) error {
	user := in.from.Bare().String()
	ghost := in.to.String()
	state, status := a.presences.update(user, ghost, in.from.Resourcepart(), in.state, in.status)
	evt := &event.Presence{
		Header: event.Header{
			From: event.Address{Network: event.XMPP, ID: user},
			To:   event.Address{Network: event.XMPP, ID: ghost},
			Time: a.now(),
		},
		State:  state,
		Status: status,
	}
	dctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
	err := a.host.Dispatch(dctx, evt)
	cancel()
	if err != nil {
		a.log.Log(ctx, dispatchLevel(err), "xmpp presence not accepted", "from", user, "to", ghost, "state", state.String(), "error", err)
		return nil
	}
	a.log.Debug("xmpp presence dispatched", "from", user, "to", ghost, "state", state.String())
	return nil
}

// handleSubscription dispatches the Subscription that a subscribe,
// unsubscribe or probe stands for and answers it on w (RFC 6121 §3.1.5,
// §3.3.5, §4.3.2).
func (a *Adapter) handleSubscription(ctx context.Context, w xmlstream.TokenWriter, in inboundPresence) error {
	user := in.from.Bare()
	evt := &event.Subscription{
		Header: event.Header{
			From: event.Address{Network: event.XMPP, ID: user.String()},
			To:   event.Address{Network: event.XMPP, ID: in.to.String()},
			Time: a.now(),
		},
		Active: in.action != presenceUnsubscribe,
	}
	dctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
	err := a.host.Dispatch(dctx, evt)
	cancel()
	reply := func(typ stanza.PresenceType) xml.TokenReader {
		return stanza.Presence{ID: randomID(), From: in.to, To: user, Type: typ}.Wrap(nil)
	}
	if err != nil {
		a.log.Log(ctx, dispatchLevel(err), "xmpp subscription not accepted", "from", user.String(), "to", in.to.String(), "type", string(in.typ), "error", err)
	}
	switch in.action {
	case presenceUnsubscribe:
		// An unsubscribe cannot be refused.
		return writeStanza(w, reply(stanza.UnsubscribedPresence))
	case presenceProbe:
		if errors.Is(err, bridges.ErrNoRoute) {
			return writeStanza(w, reply(stanza.UnsubscribedPresence))
		}
		return nil
	}
	switch {
	case err == nil:
		if err := writeStanza(w, reply(stanza.SubscribedPresence)); err != nil {
			return err
		}
		return writeStanza(w, reply(stanza.SubscribePresence))
	case errors.Is(err, bridges.ErrNoRoute), errors.Is(err, bridges.ErrRefused):
		return writeStanza(w, reply(stanza.UnsubscribedPresence))
	default:
		// Not stored: the request stays pending; the user may ask again.
		se := dispatchError(err)
		return writeStanza(w, stanza.Presence{ID: in.id, From: in.from, To: in.to, Type: in.typ}.Error(se))
	}
}

// dispatchLevel is the log level of a Dispatch error: the sender's doing is
// informational, the core's failure an error.
func dispatchLevel(err error) slog.Level {
	if errors.Is(err, bridges.ErrNoRoute) || errors.Is(err, bridges.ErrRefused) {
		return slog.LevelInfo
	}
	return slog.LevelError
}

// outboundPresence translates p into a presence from a ghost JID under the
// component domain to an XMPP user. It returns the stanza ID and the stanza.
func (a *Adapter) outboundPresence(p *event.Presence) (string, xml.TokenReader, error) {
	from, to, err := a.outboundAddresses(&p.Header)
	if err != nil {
		return "", nil, err
	}
	var (
		typ  stanza.PresenceType
		show string
	)
	status := p.Status
	switch p.State {
	case event.Offline:
		typ = stanza.UnavailablePresence
	case event.Available:
	case event.Away:
		show = "away"
	case event.ExtendedAway:
		show = "xa"
	case event.DoNotDisturb:
		show = "dnd"
	case event.OnThePhone:
		// XMPP has no "in a call": busy, and the status says why.
		show = "dnd"
		if status == "" {
			status = "On the phone"
		} else {
			status = "On the phone: " + status
		}
	default:
		return "", nil, bridges.Permanent(fmt.Errorf("presence state %d is unknown", p.State))
	}
	var payload []xml.TokenReader
	if show != "" {
		payload = append(payload, element(xml.Name{Local: "show"}, nil, xmlstream.Token(xml.CharData(show))))
	}
	if status != "" {
		payload = append(payload, element(xml.Name{Local: "status"}, nil, xmlstream.Token(xml.CharData(status))))
	}
	id := stableID(p.ID)
	return id, stanza.Presence{ID: id, From: from, To: to, Type: typ}.Wrap(xmlstream.MultiReader(payload...)), nil
}

// outboundSubscription translates s into a subscription request (Active) or
// its cancellation from the watcher's ghost to an XMPP user (RFC 6121 §3.1.1,
// §3.3.1). A request carries the ghost's XEP-0172 nick when s.FromName is
// set. It returns the stanza ID and the stanza.
func (a *Adapter) outboundSubscription(s *event.Subscription) (string, xml.TokenReader, error) {
	from, to, err := a.outboundAddresses(&s.Header)
	if err != nil {
		return "", nil, err
	}
	typ := stanza.UnsubscribePresence
	var payload xml.TokenReader
	if s.Active {
		typ = stanza.SubscribePresence
		if s.FromName != "" {
			payload = element(xml.Name{Space: nsNick, Local: "nick"}, nil, xmlstream.Token(xml.CharData(s.FromName)))
		}
	}
	id := stableID(s.ID)
	return id, stanza.Presence{ID: id, From: from.Bare(), To: to.Bare(), Type: typ}.Wrap(payload), nil
}

// probeAgain sends a presence probe from each ghost to each user of pairs
// (RFC 6121 §4.3): pairs that had online resources before the connection
// was lost, and pairs whose ghost asked for the user's presence in an
// earlier run (see toProbe). Their server answers with the users' current
// presence, which may have changed meanwhile or is unknown after a restart. It returns once done, at the first write
// error, or when ctx ends.
func (a *Adapter) probeAgain(ctx context.Context, sess stanzaSender, pairs []presencePair) {
	for i, pair := range pairs {
		from, err1 := jid.Parse(pair.ghost)
		to, err2 := jid.Parse(pair.user)
		if err1 != nil || err2 != nil {
			continue // unreachable: both were parsed before
		}
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		err := sess.Send(wctx, stanza.Presence{ID: randomID(), From: from, To: to, Type: stanza.ProbePresence}.Wrap(nil))
		cancel()
		if err != nil {
			a.log.Debug("xmpp presence probes not sent", "left", len(pairs)-i, "error", err)
			return
		}
	}
}

// stanzaSender is the part of *xmpp.Session that probeAgain uses.
type stanzaSender interface {
	Send(ctx context.Context, r xml.TokenReader) error
}

// presences keeps the latest presence of each resource of the users who
// send presence to ghosts, per (user, ghost) pair, so that one resource
// going offline does not hide another. It is bounded and kept in memory
// only. Safe for concurrent use.
type presences struct {
	mu    sync.Mutex
	seq   uint64
	pairs map[presencePair]map[string]resourcePresence
	max   int
}

type presencePair struct{ user, ghost string }

type resourcePresence struct {
	state  event.PresenceState
	status string
	seq    uint64 // when it was recorded; higher is newer
}

func newPresences(max int) *presences {
	return &presences{pairs: make(map[presencePair]map[string]resourcePresence), max: max}
}

// update records that resource of user (empty for the bare JID) shows state
// and status to ghost, and returns the presence to show for user: the merge
// of all their resources, with the status of the latest resource in the
// merged state. An Offline update removes the resource (an unavailable
// presence from the bare JID removes them all) and, when none is left,
// returns Offline with its own status.
func (p *presences) update(user, ghost, resource string, state event.PresenceState, status string) (event.PresenceState, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := presencePair{user, ghost}
	res := p.pairs[key]
	if state == event.Offline {
		if resource == "" {
			res = nil
		}
		delete(res, resource)
		if len(res) == 0 {
			delete(p.pairs, key)
			return event.Offline, status
		}
	} else {
		if res == nil {
			if len(p.pairs) >= p.max {
				return state, status // full: not merged
			}
			res = make(map[string]resourcePresence)
			p.pairs[key] = res
		}
		if _, ok := res[resource]; !ok && len(res) >= maxResources {
			return state, status
		}
		p.seq++
		res[resource] = resourcePresence{state, status, p.seq}
	}
	states := make([]event.PresenceState, 0, len(res))
	for _, r := range res {
		states = append(states, r.state)
	}
	merged := event.Merge(states...)
	var best resourcePresence
	for _, r := range res {
		if r.state == merged && r.seq > best.seq {
			best = r
		}
	}
	return merged, best.status
}

// reset forgets every recorded presence and returns the pairs that had
// some: after a new connection, the server sends presence afresh, and the
// pairs may be probed.
func (p *presences) reset() []presencePair {
	p.mu.Lock()
	defer p.mu.Unlock()
	pairs := make([]presencePair, 0, len(p.pairs))
	for k := range p.pairs {
		pairs = append(pairs, k)
	}
	clear(p.pairs)
	return pairs
}
