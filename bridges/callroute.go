package bridges

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/parleygw/parley/calls"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/media"
)

// CallConfig sets the limits and timers of calls.
type CallConfig struct {
	// RingTimeout ends an unanswered call with HangupNoAnswer; 0 means 60 s.
	RingTimeout time.Duration
	// MediaTimeout ends an answered call whose legs were all silent this
	// long (no RTP or RTCP) with HangupMediaTimeout; 0 means 60 s.
	MediaTimeout time.Duration
	// MaxCalls is how many calls the gateway carries at once; 0 means no
	// limit.
	MaxCalls int
	// MaxPerUser is how many calls one person (a real address) may be in at
	// once, as caller or callee; 0 means no limit.
	MaxPerUser int
}

// WithCalls sets the limits and timers of calls.
func WithCalls(c CallConfig) Option { return func(r *Router) { r.callCfg = c } }

// CallMetrics receives the measurements of calls; a Metrics that implements
// it gets them. Its methods must not block.
type CallMetrics interface {
	// CallStarted counts a call that arrived from network n and is being
	// routed.
	CallStarted(n event.Network)
	// CallAnswered records how long a call took from its arrival to the
	// answer.
	CallAnswered(setup time.Duration)
	// CallEnded counts a call that ended with reason.
	CallEnded(reason event.HangupReason)
	// LegEnded adds the counters of a leg on network n that ended.
	LegEnded(n event.Network, s media.Stats)
}

// callTable is every live call, by its legs.
type callTable struct {
	mu    sync.Mutex
	legs  map[legKey]*liveCall
	users map[event.Address]int // calls per real address
	total int
	wg    sync.WaitGroup
}

type legKey struct {
	network event.Network
	call    string
}

// liveCall is one call and its driver's state. Only the call's goroutine
// (run) touches sm and the legs' mutable fields after Call returned.
type liveCall struct {
	r       *Router
	sm      *calls.Call
	started time.Time
	caller  *callLeg
	callees []*callLeg
	byID    map[calls.LegID]*callLeg
	users   []event.Address
	inbox   chan callMsg
	stop    chan event.HangupReason
	done    chan struct{} // closed when the call has ended
	media   *callLeg      // the callee whose media is connected with the caller's
	answer  time.Time
	onPhone []event.Address // the accounts shown on the phone during the call
	// updating is the CallUpdate under way, if any: the other leg has it.
	updating *callUpdate
	// stopUpdate ends the other leg's Update of updating.
	stopUpdate context.CancelFunc
}

// callUpdate is a leg's new offer (CallHost.Update) and where its outcome
// goes.
type callUpdate struct {
	leg   *callLeg
	upd   *event.CallUpdate
	reply chan updateResult // buffered: the call never waits for the asker
}

type updateResult struct {
	answer event.Media
	err    error
}

// callLeg is one leg of a call, on one network.
type callLeg struct {
	id     calls.LegID
	net    CallNetwork
	key    legKey
	from   event.Address // as the leg's party sees the other side (callee legs)
	to     event.Address // the leg's party
	ep     media.Endpoint
	media  event.Media // the leg's answer or early media (callee legs)
	ended  bool
	closed bool
	// inviting is set while CallNetwork.Invite runs; a hangup decided
	// meanwhile waits in pending until it returns.
	inviting bool
	pending  event.HangupReason
}

// callMsg is an event for a call's goroutine: a leg's progress (event set),
// the outcome of an invite, a leg's new offer (update) or the other leg's
// answer to it (updated).
type callMsg struct {
	leg     *callLeg
	evt     event.Event
	event   bool
	ep      media.Endpoint // an invite's endpoint
	err     error          // an invite's error
	update  *callUpdate
	updated *updateResult
}

// Call implements CallHost.
func (r *Router) Call(ctx context.Context, inv *event.CallInvite, m media.Endpoint) error {
	err := r.call(ctx, inv, m)
	if err != nil && m != nil {
		_ = m.Close()
	}
	return err
}

func (r *Router) call(_ context.Context, inv *event.CallInvite, m media.Endpoint) error {
	if r.isStopping() {
		return ErrStopping
	}
	h := inv.Head()
	if m == nil || inv.Call == "" {
		return fmt.Errorf("call from %s: no media endpoint or call ID", h.From)
	}
	if err := inv.Offer.Validate(); err != nil {
		return fmt.Errorf("call from %s: offer: %w", h.From, err)
	}
	mp := r.mapping.Load()
	targets, err := mp.CallTargets(h.From, h.To)
	switch {
	case errors.Is(err, mapping.ErrNoRoute):
		return fmt.Errorf("%w: %w", ErrNoRoute, err)
	case errors.Is(err, mapping.ErrLoop):
		return fmt.Errorf("%w: %w", ErrRefused, err)
	case err != nil:
		return err
	}
	callerNet, ok := r.networks[h.From.Network].(CallNetwork)
	if !ok {
		return fmt.Errorf("call from %s: %s does not carry calls", h.From, h.From.Network)
	}
	c := &liveCall{
		r: r, started: r.now(), byID: map[calls.LegID]*callLeg{},
		inbox: make(chan callMsg, 64), stop: make(chan event.HangupReason, 1), done: make(chan struct{}),
	}
	c.caller = &callLeg{
		id: calls.LegID("caller"), net: callerNet, key: legKey{h.From.Network, inv.Call},
		from: h.To, to: h.From, ep: m,
	}
	c.byID[c.caller.id] = c.caller
	c.users = []event.Address{h.From}
	var ids []calls.LegID
	for i, t := range targets {
		n, ok := r.networks[t.Network].(CallNetwork)
		if !ok {
			continue // a network without calls (yet): its devices do not ring
		}
		from, err := mp.CallerAppearance(h.From, t.Network)
		if err != nil {
			r.log.Info("call: caller cannot appear on the callee's network", "from", h.From, "to", t, "err", err)
			continue
		}
		l := &callLeg{
			id: calls.LegID(fmt.Sprintf("callee%d", i)), net: n,
			key: legKey{t.Network, newCallID()}, from: from, to: t,
		}
		c.callees = append(c.callees, l)
		c.byID[l.id] = l
		c.users = append(c.users, t)
		ids = append(ids, l.id)
	}
	if len(ids) == 0 {
		return fmt.Errorf("%w: call %s: no device of theirs can take calls", ErrNoRoute, h.To)
	}
	c.sm, err = calls.New(calls.Config{RingTimeout: r.callCfg.RingTimeout, Now: r.now}, c.caller.id, ids...)
	if err != nil {
		return err
	}
	if err := r.calls.add(c, r.callCfg); err != nil {
		return fmt.Errorf("call from %s to %s: %w", h.From, h.To, err)
	}
	if cm, ok := r.metrics.(CallMetrics); ok {
		cm.CallStarted(h.From.Network)
	}
	r.log.Info("call", "from", h.From, "to", h.To, "devices", len(ids), "call", inv.Call)
	inv2 := *inv
	go c.run(&inv2)
	return nil
}

// add registers c's legs, within the limits.
func (t *callTable) add(c *liveCall, cfg CallConfig) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.legs == nil {
		t.legs, t.users = map[legKey]*liveCall{}, map[event.Address]int{}
	}
	if cfg.MaxCalls > 0 && t.total >= cfg.MaxCalls {
		return fmt.Errorf("%w: the gateway carries %d calls", ErrCallLimit, t.total)
	}
	if cfg.MaxPerUser > 0 {
		for _, u := range c.users {
			if t.users[u] >= cfg.MaxPerUser {
				return fmt.Errorf("%w: %s is in %d calls", ErrCallLimit, u, t.users[u])
			}
		}
	}
	if _, dup := t.legs[c.caller.key]; dup {
		return fmt.Errorf("call %s is already in progress", c.caller.key.call)
	}
	t.total++
	for _, u := range c.users {
		t.users[u]++
	}
	for _, l := range c.byID {
		t.legs[l.key] = c
	}
	t.wg.Add(1)
	return nil
}

func (t *callTable) remove(c *liveCall) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total--
	for _, u := range c.users {
		if t.users[u]--; t.users[u] <= 0 {
			delete(t.users, u)
		}
	}
	for _, l := range c.byID {
		delete(t.legs, l.key)
	}
	t.wg.Done()
}

func (t *callTable) find(k legKey) *liveCall {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.legs[k]
}

// ActiveCalls returns how many calls the gateway carries.
func (r *Router) ActiveCalls() int {
	r.calls.mu.Lock()
	defer r.calls.mu.Unlock()
	return r.calls.total
}

// CallEvent implements CallHost.
func (r *Router) CallEvent(ctx context.Context, evt event.Event) error {
	call, ok := event.CallOf(evt)
	if !ok || evt.Kind() == event.KindCallInvite || evt.Kind() == event.KindCallUpdate {
		return fmt.Errorf("call event: %s is not a ringing, answer or hangup", evt.Kind())
	}
	c, l, err := r.calls.leg(legKey{evt.Head().From.Network, call})
	if err != nil {
		return err
	}
	// The event is queued, not awaited: an adapter may report from within
	// a Signal, which the call's own goroutine is running.
	return c.post(ctx, callMsg{leg: l, evt: evt, event: true})
}

// Update implements CallHost.
func (r *Router) Update(ctx context.Context, upd *event.CallUpdate) (event.Media, error) {
	if err := upd.Offer.Validate(); err != nil {
		return event.Media{}, fmt.Errorf("%w: %w", ErrUpdateRefused, err)
	}
	c, l, err := r.calls.leg(legKey{upd.From.Network, upd.Call})
	if err != nil {
		return event.Media{}, err
	}
	u := &callUpdate{leg: l, upd: upd, reply: make(chan updateResult, 1)}
	if err := c.post(ctx, callMsg{leg: l, update: u}); err != nil {
		return event.Media{}, err
	}
	select {
	case res := <-u.reply:
		return res.answer, res.err
	case <-c.done:
		return event.Media{}, fmt.Errorf("%w: %s %s", ErrUnknownCall, l.key.network, l.key.call)
	case <-ctx.Done():
		return event.Media{}, ctx.Err()
	}
}

// leg finds the live call of the leg k.
func (t *callTable) leg(k legKey) (*liveCall, *callLeg, error) {
	c := t.find(k)
	if c == nil {
		return nil, nil, fmt.Errorf("%w: %s %s", ErrUnknownCall, k.network, k.call)
	}
	for _, l := range c.byID {
		if l.key == k {
			return c, l, nil
		}
	}
	return nil, nil, fmt.Errorf("%w: %s %s", ErrUnknownCall, k.network, k.call)
}

// post queues m for the call's goroutine.
func (c *liveCall) post(ctx context.Context, m callMsg) error {
	select {
	case c.inbox <- m:
		return nil
	case <-c.done:
		return fmt.Errorf("%w: %s %s", ErrUnknownCall, m.leg.key.network, m.leg.key.call)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// endCalls hangs up every live call (the gateway stops) and waits for them
// to end, or for ctx.
func (r *Router) endCalls(ctx context.Context) {
	r.calls.mu.Lock()
	live := map[*liveCall]bool{}
	for _, c := range r.calls.legs {
		live[c] = true
	}
	r.calls.mu.Unlock()
	for c := range live {
		select {
		case c.stop <- event.HangupFailure:
		default:
		}
	}
	done := make(chan struct{})
	go func() { r.calls.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		r.log.Warn("stopping with calls still ending")
	}
}

func (r *Router) ringTimeout() time.Duration {
	if r.callCfg.RingTimeout > 0 {
		return r.callCfg.RingTimeout
	}
	return 60 * time.Second
}

func newCallID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// run drives the call from its start to its end: the state machine decides,
// run acts.
func (c *liveCall) run(inv *event.CallInvite) {
	r := c.r
	defer r.calls.remove(c)
	defer close(c.done)
	c.do(c.sm.Start(), inv)
	ring := time.NewTimer(time.Hour)
	defer ring.Stop()
	mediaTimeout := r.callCfg.MediaTimeout
	if mediaTimeout <= 0 {
		mediaTimeout = 60 * time.Second
	}
	check := time.NewTicker(min(mediaTimeout/4, time.Second))
	defer check.Stop()
	for c.sm.State() != calls.StateEnded {
		if d, ok := c.sm.Deadline(); ok {
			ring.Reset(max(d.Sub(r.now()), 0))
		} else {
			ring.Stop()
		}
		select {
		case m := <-c.inbox:
			c.handle(m, inv)
		case <-ring.C:
			c.do(c.sm.Expire(), inv)
		case <-check.C:
			if c.sm.State() == calls.StateAnswered && c.media != nil &&
				media.Idle(time.Now(), c.answer, c.caller.ep, c.media.ep) >= mediaTimeout {
				r.log.Info("call: no media", "call", c.caller.key.call, "for", mediaTimeout)
				c.do(c.sm.MediaTimeout(), inv)
			}
		case reason := <-c.stop:
			c.do(c.sm.End(reason), inv)
		}
	}
	// Invites still under way report to the inbox: take their endpoints and
	// close them.
	for _, l := range c.callees {
		for l.inviting {
			c.handle(<-c.inbox, inv)
		}
	}
	if c.stopUpdate != nil {
		c.stopUpdate()
	}
	for _, l := range c.byID {
		c.closeLeg(l)
	}
	if c.onPhone != nil {
		r.setOnPhone(r.runCtx, -1, c.onPhone...)
	}
	if cm, ok := r.metrics.(CallMetrics); ok {
		cm.CallEnded(c.sm.Reason())
	}
	r.log.Info("call ended", "call", c.caller.key.call, "reason", c.sm.Reason(), "after", r.now().Sub(c.started).Round(time.Millisecond))
}

// handle applies one message to the call.
func (c *liveCall) handle(m callMsg, inv *event.CallInvite) {
	switch {
	case m.update != nil:
		c.startUpdate(m.update)
		return
	case m.updated != nil:
		c.finishUpdate(*m.updated)
		return
	}
	if !m.event { // an invite's outcome
		l := m.leg
		l.inviting = false
		if m.err != nil {
			reason := event.HangupFailure
			if IsPermanent(m.err) {
				reason = event.HangupUnavailable
			}
			c.r.log.Info("call: device not invited", "to", l.to, "err", m.err)
			l.ended, l.closed = true, true
			acts, _ := c.sm.Handle(l.id, &event.CallHangup{Call: l.key.call, Reason: reason})
			c.do(acts, inv)
			return
		}
		l.ep = m.ep
		if l.pending != 0 {
			c.signal(c.r.runCtx, l, &event.CallHangup{Header: c.header(l), Call: l.key.call, Reason: l.pending})
			c.closeLeg(l)
			return
		}
		if l.ended {
			c.closeLeg(l)
			return
		}
		if c.media == l {
			media.Connect(c.caller.ep, l.ep)
		}
		return
	}
	if m.leg == nil {
		return
	}
	switch e := m.evt.(type) {
	case *event.CallRinging:
		if e.EarlyMedia {
			m.leg.media = e.Media
		}
	case *event.CallAnswer:
		m.leg.media = e.Answer
	case *event.CallHangup:
		m.leg.ended = true
	}
	acts, err := c.sm.Handle(m.leg.id, m.evt)
	if err != nil {
		c.r.log.Info("call: event not applied", "call", c.caller.key.call, "leg", m.leg.key.call, "event", m.evt.Kind(), "err", err)
	}
	if _, hangup := m.evt.(*event.CallHangup); hangup && m.leg.ep != nil {
		c.closeLeg(m.leg)
	}
	c.do(acts, inv)
}

// do carries out the state machine's actions in order.
func (c *liveCall) do(acts []calls.Action, inv *event.CallInvite) {
	ctx := c.r.runCtx
	for _, a := range acts {
		l := c.byID[a.Leg]
		switch a.Op {
		case calls.OpInvite:
			l.inviting = true
			go c.invite(l, inv)
		case calls.OpRinging:
			c.signal(ctx, l, &event.CallRinging{Header: c.header(l), Call: l.key.call})
		case calls.OpEarlyMedia:
			from := c.byID[a.From]
			c.connect(from)
			c.signal(ctx, l, &event.CallRinging{Header: c.header(l), Call: l.key.call, EarlyMedia: true, Media: from.media})
		case calls.OpAnswer:
			from := c.byID[a.From]
			c.connect(from)
			c.answer = time.Now()
			if cm, ok := c.r.metrics.(CallMetrics); ok {
				cm.CallAnswered(c.r.now().Sub(c.started))
			}
			c.signal(ctx, l, &event.CallAnswer{Header: c.header(l), Call: l.key.call, Answer: from.media})
			c.onPhone = []event.Address{c.caller.to, from.to}
			c.r.setOnPhone(ctx, 1, c.onPhone...)
		case calls.OpHangup:
			if c.media == l {
				media.Connect(c.caller.ep, nil)
				c.media = nil
			}
			if l.closed {
				continue
			}
			l.ended = true
			if l.inviting {
				l.pending = a.Reason
				continue
			}
			c.signal(ctx, l, &event.CallHangup{Header: c.header(l), Call: l.key.call, Reason: a.Reason})
			c.closeLeg(l)
		}
	}
}

// updateTimeout bounds the other leg's Update: a SIP re-INVITE's
// transaction (64·T1).
const updateTimeout = 32 * time.Second

// startUpdate offers u's new offer to the other leg of the answered call, in
// a goroutine of its own that reports to the inbox (finishUpdate). Only
// the two legs whose media are connected may update, one offer at a time.
func (c *liveCall) startUpdate(u *callUpdate) {
	var other *callLeg
	switch {
	case c.sm.State() != calls.StateAnswered || c.media == nil:
	case u.leg == c.caller:
		other = c.media
	case u.leg == c.media:
		other = c.caller
	}
	switch {
	case u.leg.ended:
		u.reply <- updateResult{err: fmt.Errorf("%w: %s %s ended", ErrUnknownCall, u.leg.key.network, u.leg.key.call)}
		return
	case other == nil:
		u.reply <- updateResult{err: fmt.Errorf("%w: the leg is not in an answered call", ErrUpdateRefused)}
		return
	}
	if c.updating != nil {
		u.reply <- updateResult{err: fmt.Errorf("%w: an update of the call is under way", ErrUpdatePending)}
		return
	}
	up, ok := other.net.(CallUpdater)
	if !ok {
		u.reply <- updateResult{err: fmt.Errorf("%w: %s legs cannot change codec during a call", ErrUpdateRefused, other.key.network)}
		return
	}
	ctx, cancel := context.WithTimeout(c.r.runCtx, updateTimeout)
	c.updating, c.stopUpdate = u, cancel
	out := &event.CallUpdate{Header: c.header(other), Call: other.key.call, Offer: u.upd.Offer}
	go func() {
		defer cancel()
		answer, err := up.Update(ctx, out)
		select {
		case c.inbox <- callMsg{leg: other, updated: &updateResult{answer, err}}:
		case <-c.done:
		}
	}()
}

// finishUpdate gives the leg that asked for the update under way the other
// leg's answer: its codecs, numbered as the offer numbered them, or why it
// did not take the offer.
func (c *liveCall) finishUpdate(res updateResult) {
	u := c.updating
	c.updating, c.stopUpdate = nil, nil
	if u == nil {
		return
	}
	if res.err == nil {
		if err := res.answer.Validate(); err != nil {
			res.err = fmt.Errorf("the answer: %w", err)
		}
	}
	switch {
	case res.err == nil:
		c.r.log.Info("call: codec changed", "call", c.caller.key.call, "by", u.leg.key.network, "codecs", res.answer.String())
	case errors.Is(res.err, ErrUpdatePending):
	default:
		c.r.log.Info("call: update refused", "call", c.caller.key.call, "by", u.leg.key.network, "err", res.err)
		res.err = fmt.Errorf("%w: %w", ErrUpdateRefused, res.err)
	}
	u.reply <- res
}

// header is the header of an event the core sends to leg l: from the other
// side, to the leg's party.
func (c *liveCall) header(l *callLeg) event.Header {
	return event.Header{ID: "call/" + newCallID(), From: l.from, To: l.to, Time: c.r.now()}
}

// invite places a callee leg and reports the outcome to the call.
func (c *liveCall) invite(l *callLeg, inv *event.CallInvite) {
	out := &event.CallInvite{Header: c.header(l), Call: l.key.call, Offer: inv.Offer}
	// A network that does not answer within the ring time holds up the
	// call's end no longer than that.
	ctx, cancel := context.WithTimeout(c.r.runCtx, c.r.ringTimeout())
	defer cancel()
	ep, err := l.net.Invite(ctx, out)
	c.inbox <- callMsg{leg: l, ep: ep, err: err}
}

func (c *liveCall) signal(ctx context.Context, l *callLeg, evt event.Event) {
	if err := l.net.Signal(ctx, evt); err != nil {
		c.r.log.Warn("call: signal leg", "network", l.key.network, "call", l.key.call, "event", evt.Kind(), "err", err)
	}
}

// connect joins the media of the caller and callee l (early media or the
// answer), once l's endpoint is there.
func (c *liveCall) connect(l *callLeg) {
	if c.media != nil && c.media != l {
		media.Connect(c.media.ep, nil)
	}
	c.media = l
	if l.ep != nil {
		media.Connect(c.caller.ep, l.ep)
	}
}

// closeLeg closes l's endpoint once, counting its media.
func (c *liveCall) closeLeg(l *callLeg) {
	if l.closed || l.ep == nil {
		return
	}
	l.closed = true
	if c.media == l {
		media.Connect(c.caller.ep, nil)
	}
	if cm, ok := c.r.metrics.(CallMetrics); ok {
		cm.LegEnded(l.key.network, l.ep.Stats())
	}
	if err := l.ep.Close(); err != nil {
		c.r.log.Debug("call: close media", "call", l.key.call, "err", err)
	}
}
