package sip

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/event"
)

// Presence subscriptions (RFC 6665, RFC 3856).
const (
	// defaultSubscribeExpires is the lifetime of a presence subscription
	// whose SUBSCRIBE has no Expires (RFC 3856 §6.4), before clamping.
	defaultSubscribeExpires = 3600 * time.Second
	// defaultNotifyInterval is the least time between two NOTIFYs of one
	// subscription carrying state changes; changes in between are
	// coalesced, the latest state wins (RFC 3856 §6.7 rate limiting).
	defaultNotifyInterval = 5 * time.Second
	// deactivateTimeout bounds the wait for the answers to the NOTIFYs
	// that end the subscriptions when the adapter stops.
	deactivateTimeout = 2 * time.Second
	// maxSubscriptions bounds the subscriptions the adapter holds; beyond
	// it, a new SUBSCRIBE is answered 503.
	maxSubscriptions = 20000
)

// Headers every NOTIFY carries the same; requests share them, and nothing
// changes them.
var (
	presenceEventHeader   = sip.NewHeader("Event", "presence")
	pidfContentTypeHeader = sip.NewHeader("Content-Type", presenceMediaType)
)

// dialogKey identifies a subscription dialog: its Call-ID, the adapter's
// tag (To of the SUBSCRIBE) and the watcher's (From).
type dialogKey struct {
	callID, localTag, remoteTag string
}

// pairKey is a presentity (a ghost or alias under the adapter's domain)
// and one of its watchers, both canonical AORs.
type pairKey struct {
	presentity, watcher string
}

// subscription is one presence subscription dialog in which the adapter is
// the notifier.
type subscription struct {
	key  dialogKey
	pair pairKey
	// eventID is the id parameter of the Event header, if any.
	eventID string
	// watcherURI is the From URI of the SUBSCRIBE, the To of NOTIFYs;
	// remote is the watcher's Contact, the Request-URI of NOTIFYs; routes
	// is the route set (the Record-Route of the SUBSCRIBE, in order). They
	// are kept as text and parsed for each NOTIFY: a subscription mostly
	// waits, and its size is what thousands of presence keys cost.
	watcherURI, remote string
	routes             []string
	// transport and source are where the SUBSCRIBE came from, and whether
	// NOTIFYs go back there, by the rule of registered contacts
	// (reachByFlow). The adapter's Contact in the dialog follows from
	// transport (localContact).
	transport, source string
	flow              bool

	// Guarded by subscriptions.mu.
	remoteCSeq uint32
	expires    time.Time
	expiry     *time.Timer // ends the subscription when it lapses
	pending    *time.Timer // a coalesced NOTIFY, waiting for its turn
	lastNotify time.Time
	ended      bool

	// sendMu serialises the NOTIFYs of the dialog, so that their CSeqs
	// arrive in order; it guards localCSeq.
	sendMu    sync.Mutex
	localCSeq uint32
}

// subscriptions holds the adapter's presence subscriptions, in memory
// only: they end when the adapter stops, with a terminating NOTIFY that
// asks the watchers to subscribe again (see deactivateSubscriptions); a
// watcher that missed it subscribes again when its refresh fails with 481
// (RFC 6665 §4.1.2.2). The core keeps its watchers durably meanwhile, and
// Send of a presence for a watcher without a subscription is a no-op.
type subscriptions struct {
	mu     sync.Mutex
	byKey  map[dialogKey]*subscription
	byPair map[pairKey][]*subscription
	// last is the last presence the core delivered for each pair, which
	// the first NOTIFY of a new subscription carries.
	last map[pairKey]presenceNote
	// interval is the least time between two state NOTIFYs of a dialog.
	interval time.Duration
	closed   bool
}

func newSubscriptions() *subscriptions {
	return &subscriptions{
		byKey:    make(map[dialogKey]*subscription),
		byPair:   make(map[pairKey][]*subscription),
		last:     make(map[pairKey]presenceNote),
		interval: defaultNotifyInterval,
	}
}

// lastNote returns the last presence delivered for pair (offline if none).
func (s *subscriptions) lastNote(pair pairKey) presenceNote {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[pair]
}

// update records n as the presence of pair.presentity for pair.watcher and
// schedules a NOTIFY in each of the watcher's dialogs.
func (s *subscriptions) update(a *Adapter, pair pairKey, n presenceNote) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last[pair] = n
	for _, sub := range s.byPair[pair] {
		s.scheduleLocked(a, sub)
	}
}

// scheduleLocked sends a NOTIFY of the current state in sub now when the
// last one is older than the interval, or else once it is; a NOTIFY
// already waiting will carry the latest state.
func (s *subscriptions) scheduleLocked(a *Adapter, sub *subscription) {
	if sub.ended || sub.pending != nil || s.closed {
		return
	}
	now := a.now()
	wait := sub.lastNotify.Add(s.interval).Sub(now)
	if wait <= 0 {
		sub.lastNotify = now
		a.async(func() { a.notifyActive(sub) })
		return
	}
	sub.pending = time.AfterFunc(wait, func() {
		s.mu.Lock()
		sub.pending = nil
		if sub.ended || s.closed {
			s.mu.Unlock()
			return
		}
		sub.lastNotify = a.now()
		s.mu.Unlock()
		a.async(func() { a.notifyActive(sub) })
	})
}

// add records sub, with its expiry timer. It returns false, and does
// nothing, once the adapter stops or when it holds maxSubscriptions.
func (s *subscriptions) add(a *Adapter, sub *subscription, d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.byKey) >= maxSubscriptions {
		return false
	}
	s.byKey[sub.key] = sub
	s.byPair[sub.pair] = append(s.byPair[sub.pair], sub)
	sub.expires = a.now().Add(d)
	sub.expiry = time.AfterFunc(d, func() {
		a.async(func() {
			if s.lapsed(a, sub) {
				a.endSubscription(sub, "timeout", true)
			}
		})
	})
	return true
}

// lapsed reports whether sub has reached its expiry: not when a refresh
// came while its timer fired.
func (s *subscriptions) lapsed(a *Adapter, sub *subscription) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !sub.ended && !a.now().Before(sub.expires)
}

// remove forgets sub and stops its timers. It reports whether sub was still
// there, and whether it was the last dialog of its pair.
func (s *subscriptions) remove(sub *subscription) (removed, lastOfPair bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sub.ended {
		return false, false
	}
	sub.ended = true
	if sub.expiry != nil {
		sub.expiry.Stop()
	}
	if sub.pending != nil {
		sub.pending.Stop()
		sub.pending = nil
	}
	delete(s.byKey, sub.key)
	list := s.byPair[sub.pair]
	for i, o := range list {
		if o == sub {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.byPair, sub.pair)
		return true, true
	}
	s.byPair[sub.pair] = list
	return true, false
}

// closeAll ends every subscription, without NOTIFY, and returns them;
// no subscription is added afterwards.
func (s *subscriptions) closeAll() []*subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	all := make([]*subscription, 0, len(s.byKey))
	for _, sub := range s.byKey {
		sub.ended = true
		if sub.expiry != nil {
			sub.expiry.Stop()
		}
		if sub.pending != nil {
			sub.pending.Stop()
		}
		all = append(all, sub)
	}
	s.byKey = map[dialogKey]*subscription{}
	s.byPair = map[pairKey][]*subscription{}
	return all
}

// deactivateSubscriptions ends every subscription as the adapter stops,
// with a NOTIFY "terminated;reason=deactivated", which tells the watchers
// to subscribe again (RFC 6665 §4.1.3): subscriptions do not outlive the
// adapter, and the watchers otherwise learn it only when their refresh
// fails. It waits for the answers until ctx is done, or deactivateTimeout.
// It must run before the listeners close: the NOTIFYs leave through them.
func (a *Adapter) deactivateSubscriptions(ctx context.Context) {
	subs := a.subs.closeAll()
	if len(subs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, deactivateTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, sub := range subs {
		wg.Add(1)
		a.async(func() {
			defer wg.Done()
			_ = a.notify(ctx, sub, "terminated;reason=deactivated", a.subs.lastNote(sub.pair)) // logged
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// async runs f in a goroutine counted as a request handler, unless the
// adapter is stopping.
func (a *Adapter) async(f func()) {
	if !a.enter() {
		return
	}
	go func() {
		defer a.inflight.Done()
		f()
	}()
}

// onSubscribe handles SUBSCRIBE to the presence event package (RFC 6665,
// RFC 3856) of an address under the adapter's domain (a ghost or an alias).
// Senders are authorised as for MESSAGE (a user of the domain with digest,
// 407; or a trusted peer). Other event packages are answered 489.
//
// A SUBSCRIBE outside a dialog creates a subscription: the watcher is
// dispatched to the core as an active event.Subscription (ErrNoRoute gives
// 404), then answered 200 with the adapter's tag, Contact and Expires
// (Config.MaxExpires at most, 3600s when absent; below Config.MinExpires,
// 423), and sent a NOTIFY with the last presence the core delivered for the
// pair. A SUBSCRIBE in the dialog refreshes it and is followed by a NOTIFY;
// with Expires 0 it ends it. Ending a subscription (Expires 0 or lapse)
// sends a terminating NOTIFY and, when the watcher has no other dialog for
// the presentity, dispatches an inactive event.Subscription.
func (a *Adapter) onSubscribe(req *sip.Request, src netip.Addr, p *peer) *reply {
	in, r := checkRequest(req)
	if r != nil {
		return r
	}
	eventID, r := presenceEvent(req)
	if r != nil {
		return r
	}
	now := a.now()
	in.source, in.peer = src, p
	if r := a.authorizeSender(req, &in, now); r != nil {
		return r
	}
	if r := acceptsPIDF(req); r != nil {
		return r
	}
	expires, r := a.subscribeExpires(req)
	if r != nil {
		return r
	}
	fromTag, _ := req.From().Params.Get("tag")
	if toTag, _ := req.To().Params.Get("tag"); toTag != "" {
		return a.refreshSubscription(dialogKey{callID: in.callID, localTag: toTag, remoteTag: fromTag}, in, expires)
	}
	if fromTag == "" {
		return newReply(400, "Missing From Tag")
	}
	presentity, r := a.recipient(req)
	if r != nil {
		return r
	}
	contact := req.Contact()
	if contact == nil || contact.Address.Wildcard || contact.Address.Host == "" {
		return newReply(400, "Missing or Malformed Contact")
	}
	// Cloned: parsed header values may share the memory of the whole
	// request, which the subscription must not keep alive.
	sub := &subscription{
		key:        dialogKey{callID: strings.Clone(in.callID), localTag: sip.GenerateTagN(16), remoteTag: strings.Clone(fromTag)},
		pair:       pairKey{presentity: presentity, watcher: in.from},
		eventID:    strings.Clone(eventID),
		watcherURI: req.From().Address.String(),
		remote:     contact.Address.String(),
		transport:  sip.NetworkToUpper(req.Transport()),
		source:     strings.Clone(req.Source()),
		remoteCSeq: in.cseq,
	}
	sub.flow = reachByFlow(flowInputOf(req, contact)) != flowNone
	for _, h := range req.Headers() {
		if !isHeader(h, "Record-Route") {
			continue
		}
		if rr, ok := h.(*sip.RecordRouteHeader); ok {
			sub.routes = append(sub.routes, rr.Address.String())
		}
	}
	ok200 := func(expires time.Duration, after func()) *reply {
		r := newReply(200, "OK",
			&sip.ContactHeader{Address: a.localContact(sub.transport, presentity)},
			sip.NewHeader("Expires", strconv.FormatInt(int64(expires/time.Second), 10)))
		r.toTag, r.after = sub.key.localTag, after
		return r
	}
	if expires == 0 {
		// A fetch (RFC 6665 §4.4.3): one NOTIFY, no subscription.
		sub.ended = true
		return ok200(0, func() { _ = a.notify(a.dispatchCtx, sub, "terminated;reason=timeout", a.subs.lastNote(sub.pair)) }) // logged
	}

	host, _, _, _ := a.stack()
	// Recorded before the dispatch: the core answers it with a Send of
	// the presentity's presence, which must find the dialog. The first
	// NOTIFY counts as sent now, so that presence waits its turn.
	sub.lastNotify = now
	if !a.subs.add(a, sub, expires) {
		return newReply(503, "Service Unavailable", sip.NewHeader("Retry-After", "5"))
	}
	ctx, cancel := context.WithTimeout(a.dispatchCtx, dispatchTimeout)
	defer cancel()
	err := host.Dispatch(ctx, a.subscriptionEvent(sub, in, true, now))
	if err != nil {
		a.subs.remove(sub)
		a.log.Info("sip subscription not accepted", "watcher", sub.pair.watcher, "presentity", sub.pair.presentity, "err", err)
		return dispatchReply(err)
	}
	a.log.Debug("sip subscription started", "watcher", sub.pair.watcher, "presentity", sub.pair.presentity, "expires", expires)
	return ok200(expires, func() { a.notifyActive(sub) })
}

// refreshSubscription handles a SUBSCRIBE in the dialog key: a refresh,
// or with expires 0 the end of the subscription.
func (a *Adapter) refreshSubscription(key dialogKey, in request, expires time.Duration) *reply {
	s := a.subs
	s.mu.Lock()
	sub := s.byKey[key]
	if sub == nil || sub.ended {
		s.mu.Unlock()
		return newReply(481, "Subscription Does Not Exist")
	}
	if in.from != sub.pair.watcher {
		s.mu.Unlock()
		return newReply(403, "Forbidden (Not The Watcher)")
	}
	if in.cseq <= sub.remoteCSeq {
		s.mu.Unlock()
		return newReply(500, "Out-of-Order CSeq", sip.NewHeader("Retry-After", "1"))
	}
	sub.remoteCSeq = in.cseq
	if expires > 0 {
		sub.expires = a.now().Add(expires)
		sub.expiry.Reset(expires)
		sub.lastNotify = a.now()
	}
	s.mu.Unlock()
	r := newReply(200, "OK",
		&sip.ContactHeader{Address: a.localContact(sub.transport, sub.pair.presentity)},
		sip.NewHeader("Expires", strconv.FormatInt(int64(expires/time.Second), 10)))
	if expires == 0 {
		r.after = func() { a.endSubscription(sub, "timeout", true) }
	} else {
		r.after = func() { a.notifyActive(sub) }
	}
	return r
}

// endSubscription ends sub: it sends a terminating NOTIFY with reason (when
// notify is set) and, if sub was the watcher's last dialog for the
// presentity, dispatches an inactive event.Subscription.
func (a *Adapter) endSubscription(sub *subscription, reason string, notify bool) {
	removed, lastOfPair := a.subs.remove(sub)
	if !removed {
		return
	}
	a.log.Debug("sip subscription ended", "watcher", sub.pair.watcher, "presentity", sub.pair.presentity, "reason", reason)
	if notify {
		_ = a.notify(a.dispatchCtx, sub, "terminated;reason="+reason, a.subs.lastNote(sub.pair)) // logged; the subscription ends anyway
	}
	if !lastOfPair {
		return
	}
	host, _, _, _ := a.stack()
	ctx, cancel := context.WithTimeout(a.dispatchCtx, dispatchTimeout)
	defer cancel()
	if err := host.Dispatch(ctx, a.subscriptionEvent(sub, request{}, false, a.now())); err != nil {
		a.log.Warn("sip subscription end not dispatched", "watcher", sub.pair.watcher, "presentity", sub.pair.presentity, "err", err)
	}
}

// subscriptionEvent returns the event.Subscription of sub. The ID of an
// active one derives from the SUBSCRIBE (a retransmission is the same
// event); an inactive one gets the dialog's and the time.
func (a *Adapter) subscriptionEvent(sub *subscription, in request, active bool, now time.Time) *event.Subscription {
	id := sub.pair.watcher + "/" + sub.key.callID + "/" + strconv.FormatUint(uint64(in.cseq), 10) + "/subscribe"
	if !active {
		id = sub.pair.watcher + "/" + sub.key.callID + "/" + strconv.FormatInt(now.UnixNano(), 10) + "/unsubscribe"
	}
	return &event.Subscription{
		Header: event.Header{
			ID:   id,
			From: event.Address{Network: event.SIP, ID: sub.pair.watcher},
			To:   event.Address{Network: event.SIP, ID: sub.pair.presentity},
			Time: now,
		},
		Active: active,
	}
}

// notifyActive sends a NOTIFY of the current state in sub, with
// Subscription-State active and the time left.
func (a *Adapter) notifyActive(sub *subscription) {
	a.subs.mu.Lock()
	if sub.ended {
		a.subs.mu.Unlock()
		return
	}
	left := int64(sub.expires.Sub(a.now()).Round(time.Second) / time.Second)
	n := a.subs.last[sub.pair]
	a.subs.mu.Unlock()
	err := a.notify(a.dispatchCtx, sub, "active;expires="+strconv.FormatInt(max(left, 0), 10), n)
	if err == nil {
		return
	}
	// RFC 6665 §4.2.2: a NOTIFY answered with a failure (481 above all)
	// or timing out ends the subscription; 5xx with Retry-After does not.
	var f *notifyFailure
	if errors.As(err, &f) && f.code >= 500 && f.code < 600 && f.retryAfter {
		return
	}
	a.endSubscription(sub, "deactivated", false)
}

// notifyFailure is a NOTIFY answered with a final non-2xx response.
type notifyFailure struct {
	code       int
	reason     string
	retryAfter bool
}

func (f *notifyFailure) Error() string {
	return fmt.Sprintf("answered %d %s", f.code, f.reason)
}

// notify sends one NOTIFY in sub with the Subscription-State state and the
// PIDF document of n, and waits for its final response.
func (a *Adapter) notify(ctx context.Context, sub *subscription, state string, n presenceNote) error {
	_, _, client, ua := a.stack()
	if client == nil {
		return errNotStarted
	}
	sub.sendMu.Lock()
	defer sub.sendMu.Unlock()
	// Each of these parsed when the SUBSCRIBE came.
	var remote, presURI, watcherURI sip.Uri
	_ = sip.ParseUri(sub.remote, &remote)
	_ = sip.ParseUri(sub.pair.presentity, &presURI)
	_ = sip.ParseUri(sub.watcherURI, &watcherURI)
	sub.localCSeq++
	req := sip.NewRequest(sip.NOTIFY, remote)
	for _, r := range sub.routes {
		var route sip.Uri
		_ = sip.ParseUri(r, &route)
		req.AppendHeader(&sip.RouteHeader{Address: route})
	}
	from := &sip.FromHeader{Address: presURI, Params: sip.NewParams()}
	from.Params.Add("tag", sub.key.localTag)
	req.AppendHeader(from)
	to := &sip.ToHeader{Address: watcherURI, Params: sip.NewParams()}
	to.Params.Add("tag", sub.key.remoteTag)
	req.AppendHeader(to)
	callID := sip.CallIDHeader(sub.key.callID)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: sub.localCSeq, MethodName: sip.NOTIFY})
	maxForwards := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxForwards)
	if sub.eventID != "" {
		req.AppendHeader(sip.NewHeader("Event", "presence;id="+sub.eventID))
	} else {
		req.AppendHeader(presenceEventHeader)
	}
	req.AppendHeader(sip.NewHeader("Subscription-State", state))
	req.AppendHeader(&sip.ContactHeader{Address: a.localContact(sub.transport, sub.pair.presentity)})
	req.AppendHeader(a.userAgentHeader)
	req.AppendHeader(pidfContentTypeHeader)
	req.SetBody(buildPIDF(sub.pair.presentity, n.state, n.status, sub.pair.presentity))
	if len(sub.routes) == 0 {
		t, err := a.contactTarget(ua, binding{Contact: sub.remote, Transport: sub.transport, Source: sub.source, Flow: sub.flow})
		if err != nil {
			return fmt.Errorf("send NOTIFY to %s: %w", sub.pair.watcher, err)
		}
		if t.transport != "" {
			req.SetTransport(t.transport)
		}
		if t.dest != "" {
			req.SetDestination(t.dest)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, a.sendTimeout)
	defer cancel()
	res, err := client.Do(ctx, req)
	if err != nil {
		a.log.Info("sip notify failed", "watcher", sub.pair.watcher, "presentity", sub.pair.presentity, "err", err)
		return fmt.Errorf("send NOTIFY to %s: %w", sub.pair.watcher, err)
	}
	if res.StatusCode < 200 || res.StatusCode >= 300 {
		a.log.Info("sip notify refused", "watcher", sub.pair.watcher, "presentity", sub.pair.presentity, "status", res.StatusCode)
		return fmt.Errorf("send NOTIFY to %s: %w", sub.pair.watcher,
			&notifyFailure{code: res.StatusCode, reason: res.Reason, retryAfter: res.GetHeader("Retry-After") != nil})
	}
	a.log.Debug("sip notify delivered", "watcher", sub.pair.watcher, "presentity", sub.pair.presentity, "state", n.state.String())
	return nil
}

// presenceEvent checks the Event header of a SUBSCRIBE: the package must
// be presence (489 with Allow-Events otherwise, RFC 6665 §8.2.2). It
// returns the id parameter.
func presenceEvent(req *sip.Request) (string, *reply) {
	bad := func() *reply { return newReply(489, "Bad Event", sip.NewHeader("Allow-Events", allowEvents)) }
	h := firstHeader(req, "Event")
	if h == nil {
		return "", bad()
	}
	pkg, params, _ := strings.Cut(h.Value(), ";")
	if !strings.EqualFold(strings.TrimSpace(pkg), "presence") {
		return "", bad()
	}
	for _, p := range strings.Split(params, ";") {
		name, value, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(name), "id") {
			if id := strings.TrimSpace(value); isToken(id) {
				return id, nil
			}
			return "", newReply(400, "Malformed Event")
		}
	}
	return "", nil
}

// acceptsPIDF answers 406 when the SUBSCRIBE has Accept headers that do not
// accept application/pidf+xml (RFC 3856 §6.6: it is the default when there
// are none).
func acceptsPIDF(req *sip.Request) *reply {
	accept := false
	for _, h := range req.Headers() {
		if !isHeader(h, "Accept") {
			continue
		}
		accept = true
		for _, t := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(t), presenceMediaType) {
				return nil // the usual case, without parsing
			}
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(t))
			if err == nil && (mt == presenceMediaType || mt == "application/*" || mt == "*/*") {
				return nil
			}
		}
	}
	if !accept {
		return nil
	}
	return newReply(406, "Not Acceptable", sip.NewHeader("Accept", presenceMediaType))
}

// subscribeExpires returns the lifetime a SUBSCRIBE asks for: its Expires,
// or 3600s, at most Config.MaxExpires. A lifetime from 1s to below
// Config.MinExpires is answered 423 with Min-Expires (RFC 6665 §4.2.1.1).
func (a *Adapter) subscribeExpires(req *sip.Request) (time.Duration, *reply) {
	d := defaultSubscribeExpires
	if h := firstHeader(req, "Expires"); h != nil {
		secs, ok := parseDeltaSeconds(strings.TrimSpace(h.Value()))
		if !ok {
			return 0, newReply(400, "Malformed Expires")
		}
		d = time.Duration(secs) * time.Second
	}
	if d > 0 && d < a.cfg.MinExpires {
		return 0, newReply(423, "Interval Too Brief",
			sip.NewHeader("Min-Expires", strconv.FormatInt(int64(a.cfg.MinExpires/time.Second), 10)))
	}
	return min(d, a.cfg.MaxExpires), nil
}

// localContact returns the adapter's Contact for a dialog with presentity
// whose requests came over transport: the presentity's user at the address
// of the listener of that transport (the domain when it listens on every
// address).
func (a *Adapter) localContact(transport, presentity string) sip.Uri {
	network := strings.ToLower(transport)
	u := sip.Uri{Scheme: "sip", Host: a.domain}
	if rest, ok := strings.CutPrefix(presentity, "sip:"); ok {
		u.User, _, _ = strings.Cut(rest, "@")
	}
	a.mu.Lock()
	for i, addr := range a.bound {
		if addr == nil || a.listeners[i].network != network {
			continue
		}
		host, port, err := net.SplitHostPort(addr.String())
		if err != nil {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil && !ip.IsUnspecified() {
			u.Host = host
			if ip.Is6() {
				u.Host = "[" + host + "]"
			}
		}
		u.Port, _ = strconv.Atoi(port)
		break
	}
	a.mu.Unlock()
	if network != "udp" {
		u.UriParams = sip.NewParams()
		u.UriParams.Add("transport", network)
	}
	return u
}

// sendSubscription implements Send for a *event.Subscription: nothing to
// do. Parley is the presence server of its own domain and does not
// subscribe to the presence of SIP users; what they publish reaches the
// core as broadcast presence.
func (*Adapter) sendSubscription(*event.Subscription) (string, error) {
	return "", nil
}
