package bridges

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/store"
)

// ErrStopping is returned by Dispatch while the router shuts down; adapters
// answer with a temporary error so that the sender's server retries later.
var ErrStopping = errors.New("gateway is stopping")

// duplicateRetention is how long the source IDs of accepted events are kept
// to recognise retransmissions.
const duplicateRetention = 7 * 24 * time.Hour

// Router is the routing core and implements Host for every adapter.
//
// Dispatch resolves an inbound event through the mapping, stores it in the
// outbox and appends it to the queue of its conversation (the pair of
// translated addresses). Each queue with events has one worker goroutine
// that delivers them in order, retrying transient failures with backoff, so
// one slow conversation never delays another.
type Router struct {
	store    store.Store
	mapping  atomic.Pointer[mapping.Map]
	networks map[event.Network]Network
	links    map[event.Network]Links
	log      *slog.Logger
	metrics  Metrics
	now      func() time.Time

	retry  Backoff
	maxAge time.Duration
	// resumedThrough is the highest Seq of the entries Start took back
	// from the outbox: the outbox orders entries by Seq, so an entry at
	// or below it was accepted by an earlier run (see Attempt.Resumed).
	resumedThrough int64

	mu       sync.Mutex
	queues   map[conversation]*queue
	presence map[conversation]*presenceSlot
	// lastPresence is the latest state each real account reported, for
	// merging an identity's presence.
	lastPresence map[event.Address]presenceOf
	// onPhone counts the answered calls each real account is in.
	onPhone   map[event.Address]int
	watchers  *watchers
	addressed *addressed
	phones    *roomPhones
	people    *roomPeople
	states    map[event.Network]Status
	stopping  bool
	drained   chan struct{} // closed when stopping and no queue is left

	// runCtx lives from Start to the end of Stop: it bounds the workers'
	// Sends and backoff waits. Cancelling it is how Stop interrupts them.
	runCtx    context.Context
	cancelRun context.CancelFunc
	workers   sync.WaitGroup

	callCfg CallConfig
	calls   callTable

	// opened are the portals opened at run time (portals.go).
	opened openedPortals
}

var _ Host = (*Router)(nil)

// Status is an adapter's last reported state.
type Status struct {
	State State
	Err   error
	Since time.Time
}

type conversation struct{ from, to event.Address }

type queue struct {
	entries []store.Entry
	// wake cuts a retry wait short (Reachable); it holds at most one signal.
	wake chan struct{}
}

// NewRouter returns a router over st with the mapping m. Add the networks,
// then Start.
func NewRouter(st store.Store, m *mapping.Map, opts ...Option) *Router {
	r := &Router{
		store:        st,
		networks:     map[event.Network]Network{},
		links:        map[event.Network]Links{},
		log:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		metrics:      nopMetrics{},
		now:          time.Now,
		retry:        Backoff{Min: 500 * time.Millisecond, Max: time.Minute},
		maxAge:       24 * time.Hour,
		queues:       map[conversation]*queue{},
		presence:     map[conversation]*presenceSlot{},
		lastPresence: map[event.Address]presenceOf{},
		onPhone:      map[event.Address]int{},
		states:       map[event.Network]Status{},
	}
	r.watchers = newWatchers(st)
	r.addressed = newAddressed(st)
	r.phones = newRoomPhones(st)
	r.people = newRoomPeople(st)
	r.mapping.Store(m)
	for _, o := range opts {
		o(r)
	}
	return r
}

// Add registers an adapter. Call it before Start.
func (r *Router) Add(n Network) {
	name := n.Network()
	r.networks[name] = n
	r.links[name] = scopedLinks{st: r.store, ns: string(name)}
	r.states[name] = Status{State: Starting, Since: r.now()}
}

// SetMapping replaces the mapping (on a configuration reload). Events
// already queued keep the addresses they were resolved to.
func (r *Router) SetMapping(m *mapping.Map) { r.mapping.Store(m) }

// Start queues what the outbox still holds from an earlier run, then starts
// every adapter.
func (r *Router) Start(ctx context.Context) error {
	r.runCtx, r.cancelRun = context.WithCancel(context.WithoutCancel(ctx))
	pending, err := r.store.Pending(ctx)
	if err != nil {
		return fmt.Errorf("start router: %w", err)
	}
	if len(pending) > 0 {
		r.log.Info("resuming outbox", "events", len(pending))
	}
	if err := r.loadPortals(ctx); err != nil {
		return fmt.Errorf("start router: %w", err)
	}
	// resumedThrough is read by the workers that push starts: set it first.
	for _, e := range pending {
		r.resumedThrough = max(r.resumedThrough, e.Seq)
	}
	for _, e := range pending {
		r.push(e)
	}
	for name, n := range r.networks {
		if err := n.Start(ctx, r); err != nil {
			return fmt.Errorf("start %s adapter: %w", name, err)
		}
	}
	r.workers.Add(1)
	go r.forgetOldDuplicates()
	return nil
}

// Stop refuses new events, waits until the queues are empty or ctx is done,
// then interrupts delivery and stops the adapters. What was not delivered
// stays in the outbox for the next Start.
func (r *Router) Stop(ctx context.Context) error {
	r.mu.Lock()
	r.stopping = true
	r.drained = make(chan struct{})
	drained := r.drained
	r.closeDrainedLocked()
	r.mu.Unlock()

	select {
	case <-drained:
	case <-ctx.Done():
		r.log.Warn("stopping with undelivered events in the outbox", "conversations", r.conversations())
	}
	r.endCalls(ctx)
	r.cancelRun()
	r.workers.Wait()

	var errs []error
	for name, n := range r.networks {
		if err := n.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s adapter: %w", name, err))
		}
		r.SetState(name, Stopped, nil)
	}
	return errors.Join(errs...)
}

// closeDrainedLocked signals Stop once no queue is left. r.mu is held.
func (r *Router) closeDrainedLocked() {
	if r.stopping && len(r.queues) == 0 && r.drained != nil {
		close(r.drained)
		r.drained = nil
	}
}

func (r *Router) conversations() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queues)
}

// Dispatch implements Host. The router takes ownership of evt.
func (r *Router) Dispatch(ctx context.Context, evt event.Event) error {
	h := evt.Head()
	origin := *h
	if r.isStopping() {
		return ErrStopping
	}
	switch e := evt.(type) {
	case *event.Message:
	case *event.Member:
		if !h.Room {
			return fmt.Errorf("dispatch from %s: a membership change is for a room", h.From)
		}
		if !e.Change.Valid() {
			return fmt.Errorf("dispatch from %s: membership change %d", h.From, e.Change)
		}
	case *event.Topic:
		if !h.Room {
			return fmt.Errorf("dispatch from %s: a topic is a room's", h.From)
		}
	case *event.Presence:
		return r.dispatchPresence(ctx, e, r.mapping.Load())
	case *event.Subscription:
		return r.dispatchSubscription(ctx, e, r.mapping.Load())
	case *event.Failure:
		return fmt.Errorf("dispatch from %s: failure events are not accepted from adapters", h.From)
	default:
		return fmt.Errorf("dispatch from %s: unknown event kind %s", h.From, evt.Kind())
	}
	m := r.mapping.Load()
	if h.Room {
		return r.dispatchRoom(ctx, evt, m)
	}
	from, to, err := resolve(m, h.From, h.To)
	if err != nil {
		return err
	}
	if err := r.addressed.note(ctx, m, chatUse, origin.From, origin.To, to); err != nil {
		return err
	}
	if from, err = r.addressed.as(ctx, m, origin.From, to, from, chatUse); err != nil {
		return err
	}
	h.From, h.To = from, to
	if name := m.DisplayName(origin.From); name != "" {
		h.FromName = name
	} else if h.FromName == "" {
		h.FromName = origin.From.ID
	}
	if h.Time.IsZero() {
		h.Time = r.now()
	}
	return r.accept(ctx, origin, evt)
}

// dispatchRoom accepts a post, a membership change or a topic in a room:
// it goes to each other room of the portal, from the participant's
// appearance there. When the portal has a SIP room, a post also goes to
// each phone in it (see roomPhones) but the poster, each its own outbox
// entry and queue, from the SIP room and with the speaker's name in
// FromName. A phone that posts without being in the room joins it first;
// a phone's membership change is also sent to the phone itself, as a
// confirmation. An event from an address Parley serves is a ghost's own
// coming back (the adapter should not have dispatched it) and is refused.
func (r *Router) dispatchRoom(ctx context.Context, evt event.Event, m *mapping.Map) error {
	h := evt.Head()
	origin := *h
	others, ok := r.portal(m, h.To)
	if !ok {
		return fmt.Errorf("%w: %s is in no portal", ErrNoRoute, h.To)
	}
	if m.Serves(h.From) {
		return fmt.Errorf("%w: %s: %w", ErrRefused, h.From, mapping.ErrLoop)
	}
	if name := m.DisplayName(origin.From); name != "" {
		h.FromName = name
	} else if h.FromName == "" {
		h.FromName = origin.From.ID
	}
	mb, isMember := evt.(*event.Member)
	if isMember && mb.Change != event.MemberLeft {
		// A YAML identity shows its own name everywhere; anyone else the
		// name they chose in the room.
		if name := m.DisplayName(origin.From); name != "" {
			mb.Name = name
		} else if mb.Name == "" {
			mb.Name = h.FromName
		}
	}
	if h.Time.IsZero() {
		h.Time = r.now()
	}

	_, isPost := evt.(*event.Message)
	sipRoom := origin.To
	if sipRoom.Network != event.SIP {
		sipRoom = event.Address{}
		for _, other := range others {
			if other.Network == event.SIP {
				sipRoom = other
			}
		}
	}
	// A phone's membership: change is what it becomes, fanOut whether the
	// other rooms see that.
	var change event.MemberChange
	fanOut := true
	if origin.To.Network == event.SIP {
		in, err := r.phones.isMember(ctx, m, sipRoom, origin.From)
		if err != nil {
			return err
		}
		switch {
		case isPost:
			if !in {
				change = event.MemberJoined
			}
		case !isMember || mb.Change == event.MemberRenamed:
			return fmt.Errorf("%w: a phone may post, join or leave in %s, not send a %s", ErrRefused, sipRoom.ID, evt.Kind())
		default:
			change = mb.Change
			fanOut = in != (change == event.MemberJoined)
		}
	}

	var out []event.Event
	add := func(e event.Event, from, to event.Address) {
		e = cloneRoomEvent(e)
		eh := e.Head()
		eh.From, eh.To, eh.Room = from, to, true
		out = append(out, e)
	}
	var joined *event.Member
	if change == event.MemberJoined && isPost {
		joined = &event.Member{Header: *h, Change: event.MemberJoined, Name: h.FromName}
		joined.ID = origin.ID + "/joined"
	}
	if fanOut {
		for _, other := range others {
			if other.Network == event.SIP {
				continue // its phones follow
			}
			from, err := m.Appearance(origin.From, other.Network)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrNoRoute, err)
			}
			if joined != nil {
				add(joined, from, other)
			}
			add(evt, from, other)
		}
	}
	if isPost && !sipRoom.IsZero() {
		phones, err := r.phones.members(ctx, m, sipRoom)
		if err != nil {
			return err
		}
		for _, phone := range phones {
			if phone != origin.From {
				add(evt, sipRoom, phone)
			}
		}
	}
	if change != 0 {
		// The phone hears of its own change: it is how it learns of
		// /leave and /join.
		self := &event.Member{Header: *h, Change: change, Name: h.FromName}
		self.ID = origin.ID + "/" + change.String()
		add(self, sipRoom, origin.From)
	}
	if len(out) == 0 {
		return nil
	}
	if err := r.accept(ctx, origin, out...); err != nil {
		return err
	}
	if change != 0 {
		if err := r.phones.set(ctx, sipRoom, origin.From, change == event.MemberJoined); err != nil {
			return err
		}
	}
	r.notePresent(ctx, sipRoom, origin.From, evt)
	return nil
}

// cloneRoomEvent returns a copy of e, an event in a room, that can be
// addressed on its own.
func cloneRoomEvent(e event.Event) event.Event {
	switch e := e.(type) {
	case *event.Message:
		c := *e
		return &c
	case *event.Member:
		c := *e
		return &c
	case *event.Topic:
		c := *e
		return &c
	}
	return e
}

// accept stores evts, the translations of one event for each of its
// destinations, in the outbox under one duplicate record and queues them;
// a duplicate of an event accepted before is counted and dropped.
func (r *Router) accept(ctx context.Context, origin event.Header, evts ...event.Event) error {
	now := r.now()
	entries := make([]store.Entry, len(evts))
	ptrs := make([]*store.Entry, len(evts))
	for i, evt := range evts {
		entries[i] = store.Entry{Origin: origin, Event: evt, Accepted: now}
		ptrs[i] = &entries[i]
	}
	dup, err := r.store.Enqueue(ctx, ptrs...)
	if err != nil {
		return fmt.Errorf("accept event %s from %s: %w", origin.ID, origin.From, err)
	}
	if dup {
		r.metrics.Duplicate(origin.From.Network)
		return nil
	}
	r.metrics.Received(origin.From.Network, evts[0].Kind())
	for _, e := range entries {
		r.push(e)
	}
	return nil
}

// Rooms implements RoomHost.
func (r *Router) Rooms(n event.Network) []event.Address { return r.rooms(r.mapping.Load(), n) }

func (r *Router) isStopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopping
}

// push appends e to its conversation's queue, starting a worker when the
// queue was idle.
func (r *Router) push(e store.Entry) {
	h := e.Event.Head()
	key := conversation{h.From, h.To}
	if h.Room {
		// A room is one conversation: its posts keep their order across
		// senders.
		key.from = event.Address{}
	}
	r.mu.Lock()
	q, busy := r.queues[key]
	if !busy {
		q = &queue{wake: make(chan struct{}, 1)}
		r.queues[key] = q
	}
	q.entries = append(q.entries, e)
	r.mu.Unlock()
	r.metrics.Queued(1)
	if !busy {
		r.workers.Add(1)
		go r.work(key, q)
	}
}

// work delivers the entries of one conversation in order, and ends when the
// queue is empty.
func (r *Router) work(key conversation, q *queue) {
	defer r.workers.Done()
	for {
		r.mu.Lock()
		if len(q.entries) == 0 {
			delete(r.queues, key)
			r.closeDrainedLocked()
			r.mu.Unlock()
			return
		}
		e := q.entries[0]
		r.mu.Unlock()

		if !r.deliver(e, q.wake) {
			return // interrupted by Stop: the entry stays in the outbox
		}
		r.mu.Lock()
		q.entries[0] = store.Entry{}
		q.entries = q.entries[1:]
		r.mu.Unlock()
		r.metrics.Queued(-1)
	}
}

// deliver sends e until it is delivered or fails for good; a signal on wake
// ends a retry wait early. It returns false when Stop interrupted it.
func (r *Router) deliver(e store.Entry, wake <-chan struct{}) bool {
	ctx := r.runCtx
	h := e.Event.Head()
	dst, ok := r.networks[h.To.Network]
	if !ok {
		r.fail(ctx, e, fmt.Errorf("network %s is not enabled", h.To.Network))
		return true
	}
	resumed := r.resumedThrough > 0 && e.Seq <= r.resumedThrough
	for attempt := 0; ; attempt++ {
		id, err := dst.Send(WithAttempt(ctx, Attempt{Retry: attempt, Resumed: resumed}), e.Event)
		if err == nil {
			r.metrics.Delivered(h.To.Network, e.Event.Kind(), r.now().Sub(e.Accepted))
			r.done(ctx, e, deliveredAs(e, id)...)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if IsPermanent(err) {
			r.fail(ctx, e, err)
			return true
		}
		if age := r.now().Sub(e.Accepted); age > r.maxAge {
			r.fail(ctx, e, fmt.Errorf("not delivered within %s: %w", r.maxAge, err))
			return true
		}
		r.metrics.Retried(h.To.Network)
		wait := r.retry.Delay(attempt)
		r.log.Debug("send failed, will retry", "network", h.To.Network, "to", h.To.ID, "event", h.ID, "wait", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-wake:
		case <-ctx.Done():
			return false
		}
	}
}

// deliveredAs returns the link between the source ID of e, a message, and
// the ID its destination gave its copy, when both are known: the
// durable map of message IDs (see MessageIDHost).
func deliveredAs(e store.Entry, id string) []store.Same {
	if _, ok := e.Event.(*event.Message); !ok || id == "" || e.Origin.ID == "" {
		return nil
	}
	src := store.MessageRef{Network: e.Origin.From.Network, ID: e.Origin.ID}
	dst := store.MessageRef{Network: e.Event.Head().To.Network, ID: id}
	if src == dst {
		return nil
	}
	return []store.Same{{A: src, B: dst}}
}

// done removes a delivered or failed entry from the outbox, and records the
// message IDs same links.
func (r *Router) done(ctx context.Context, e store.Entry, same ...store.Same) {
	if err := r.store.Done(ctx, e.Seq, same...); err != nil {
		// The event was delivered; it will be sent again after a restart,
		// which adapters make idempotent where their protocol allows.
		r.log.Error("remove delivered event from outbox", "seq", e.Seq, "err", err)
	}
}

// fail ends e and tells its sender, on the sender's network, that it could
// not be delivered. A failure report that itself fails is only logged.
func (r *Router) fail(ctx context.Context, e store.Entry, cause error) {
	h := e.Event.Head()
	r.metrics.Failed(h.To.Network, e.Event.Kind())
	r.log.Warn("event not delivered", "network", h.To.Network, "to", h.To.ID, "event", e.Origin.ID, "err", cause)
	r.done(ctx, e)
	if _, isMessage := e.Event.(*event.Message); !isMessage {
		return // only a message has a sender waiting to hear of it
	}
	if h.Room && h.To.Network == event.SIP {
		// A post for one phone of a portal's SIP room: the post reached
		// the room, and its author is not told of each phone that is
		// unreachable.
		return
	}
	f := &event.Failure{
		Header: event.Header{
			ID:   "failure/" + e.Origin.ID,
			From: e.Origin.To,
			To:   e.Origin.From,
			Time: r.now(),
		},
		EventID:   e.Origin.ID,
		Reason:    cause.Error(),
		Condition: event.Undeliverable,
	}
	report := store.Entry{Origin: f.Header, Event: f, Accepted: r.now()}
	dup, err := r.store.Enqueue(ctx, &report)
	if err != nil {
		r.log.Error("store failure report", "event", e.Origin.ID, "err", err)
		return
	}
	if !dup {
		r.push(report)
	}
}

// forgetOldDuplicates prunes duplicate records hourly until Stop.
func (r *Router) forgetOldDuplicates() {
	defer r.workers.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if err := r.store.ForgetBefore(r.runCtx, r.now().Add(-duplicateRetention)); err != nil && r.runCtx.Err() == nil {
			r.log.Warn("prune duplicate records", "err", err)
		}
		select {
		case <-t.C:
		case <-r.runCtx.Done():
			return
		}
	}
}

// SetState implements Host.
func (r *Router) SetState(n event.Network, s State, err error) {
	r.mu.Lock()
	prev := r.states[n]
	if prev.State != s || (err != nil) != (prev.Err != nil) {
		r.states[n] = Status{State: s, Err: err, Since: r.now()}
	}
	r.mu.Unlock()
	if prev.State != s {
		if err != nil {
			r.log.Warn("adapter state", "network", n, "state", s, "err", err)
		} else {
			r.log.Info("adapter state", "network", n, "state", s)
		}
	}
}

// States returns the last state each adapter reported.
func (r *Router) States() map[event.Network]Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[event.Network]Status, len(r.states))
	for n, s := range r.states {
		out[n] = s
	}
	return out
}

// Links implements Host.
func (r *Router) Links(n event.Network) Links { return r.links[n] }

// Reachable implements Host: it wakes the conversations waiting to retry a
// delivery to a.
func (r *Router) Reachable(a event.Address) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, q := range r.queues {
		if key.to == a {
			select {
			case q.wake <- struct{}{}:
			default:
			}
		}
	}
}

// Profile implements Host.
func (r *Router) Profile(a event.Address) string { return r.mapping.Load().DisplayName(a) }

// scopedLinks gives one adapter its own namespace of the store's links.
type scopedLinks struct {
	st store.Links
	ns string
}

func (l scopedLinks) Get(ctx context.Context, key string) (string, bool, error) {
	return l.st.GetLink(ctx, l.ns, key)
}

func (l scopedLinks) Put(ctx context.Context, key, value string) error {
	return l.st.PutLink(ctx, l.ns, key, value)
}

func (l scopedLinks) Delete(ctx context.Context, key string) error {
	return l.st.DeleteLink(ctx, l.ns, key)
}

func (l scopedLinks) List(ctx context.Context, prefix string) (map[string]string, error) {
	return l.st.ListLinks(ctx, l.ns, prefix)
}

// resolve is mapping.Map.Resolve with its errors as Dispatch reports them:
// ErrNoRoute for an address that maps to nobody, ErrRefused for a loop.
func resolve(m *mapping.Map, from, to event.Address) (event.Address, event.Address, error) {
	f, t, err := m.Resolve(from, to)
	switch {
	case errors.Is(err, mapping.ErrNoRoute):
		return f, t, fmt.Errorf("%w: %w", ErrNoRoute, err)
	case errors.Is(err, mapping.ErrLoop):
		return f, t, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return f, t, err
}

var _ RoomHost = (*Router)(nil)
