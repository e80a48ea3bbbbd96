// Package xmpp is Parley's XMPP adapter: an XEP-0114 external component of
// an XMPP server (Prosody, ejabberd) that serves the ghost JIDs under its
// domain.
//
// Inbound, it turns chat messages that the server's own users write to a
// ghost JID into event.Message and hands them to the routing core; it answers
// with an XEP-0184 receipt once the core has stored the message, or with a
// stanza error when the core refuses it. Outbound, it sends the core's
// events as stanzas from the ghost JIDs. It answers XEP-0030 disco#info for
// the gateway and its ghosts.
//
// Presence (RFC 6121 §3–4): the presence users send to ghosts becomes
// directed event.Presence, merged over the user's resources; their
// subscription requests and probes become event.Subscription, approved on
// the ghost's behalf. Outbound, event.Presence and event.Subscription become
// presence stanzas from the ghost JIDs.
//
// Rooms (XEP-0045 multi-user chats) in a portal: the component's domain JID
// joins each as a listener, whose copy of a post is dispatched with
// Header.Room set, like the comings and goings of its occupants
// (event.Member); a ghost joins a room when it first posts there or when
// the core sends its event.Member, which also changes its nick or takes it
// out (see room.go, member.go). The listener catches up with a room's
// history after a restart, and a resumed room post is looked for in the
// room before it is posted again (catchup.go).
//
// The adapter never trusts a 'from' it has not checked: only users of
// Config.ServerDomains may use the gateway.
package xmpp

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/component"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/ratelimit"
)

var _ bridges.Network = (*Adapter)(nil)

// Timeouts of the connection.
const (
	// connectTimeout bounds the TCP connection and the XEP-0114 handshake.
	connectTimeout = 15 * time.Second
	// writeTimeout bounds the writing of one stanza by Send, once it is
	// its turn (see Adapter.turn): a server that takes no bytes for that
	// long is stuck, and the connection is dropped. A busy server is not
	// stuck: Prosody handling 5,000 subscription requests at once was
	// seen taking no bytes from the component for over 10 s.
	writeTimeout = 30 * time.Second
	// closeTimeout is how long Stop waits for the server to close its side
	// of the stream.
	closeTimeout = 2 * time.Second
	// sendersSize bounds how many senders' full JIDs the adapter remembers.
	sendersSize = 4096
)

// Option configures an Adapter.
type Option func(*Adapter)

// WithLogger makes the adapter log to l instead of discarding its logs.
func WithLogger(l *slog.Logger) Option {
	return func(a *Adapter) {
		if l != nil {
			a.log = l
		}
	}
}

// Adapter connects Parley to an XMPP server as an external component. It
// implements bridges.Network. Create it with New; it can be started once.
type Adapter struct {
	cfg           Config
	domain        jid.JID             // the component domain, normalised
	serverDomains map[string]struct{} // Config.ServerDomains, normalised
	server        jid.JID             // the first server domain, which answers barrier pings
	log           *slog.Logger
	senders       *senders
	presences     *presences
	rooms         *rooms       // the rooms Parley's occupants are in (see room.go)
	served        *servedRooms // the rooms Parley serves (see mucservice.go)
	// subscribeLimiter and probeLimiter bound the subscription requests
	// and probes of each sender.
	subscribeLimiter *ratelimit.Limiter[string]
	probeLimiter     *ratelimit.Limiter[string]

	// Set by New; tests replace them.
	dial    func(ctx context.Context, addr string) (net.Conn, error)
	backoff backoff
	now     func() time.Time
	// afterWrite, when set (by tests), runs in Send between the write of
	// a stanza with its barrier ping and the wait for the ping's answer.
	afterWrite func()

	// host is set by Start, before the connection goroutine begins.
	host bridges.Host

	mu   sync.Mutex
	sess *xmpp.Session // the live session; nil while not connected
	conn net.Conn      // its connection
	// turn is held (a token in it) by the one Send writing: the others
	// queue for it under their own context, and the writer's
	// writeTimeout starts only once it has it. The session serialises
	// writers too, but the deadline of a write it gives from the caller's
	// context would count the time spent queueing: under a burst (a
	// presence change to thousands of watchers) late writers timed out
	// before writing a byte, and each timeout dropped the connection.
	turn chan struct{}
	// writeTimeout is writeTimeout, but for tests.
	writeTimeout time.Duration

	// pings are the delivery barriers waiting for the server's answer,
	// by the id of their ping (see barrier).
	pingsMu sync.Mutex
	pings   map[string]*pingWait
	cancel  context.CancelFunc
	done    chan struct{} // closed when the connection goroutine ends
	stopped bool

	stateMu      sync.Mutex
	stateStopped bool // Stopped was reported; report nothing more
}

// New returns an adapter for cfg. It validates cfg and does no I/O.
func New(cfg Config, opts ...Option) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	domain, err := jid.Parse(cfg.Domain)
	if err != nil {
		return nil, fmt.Errorf("xmpp.domain: %w", err) // unreachable after Validate
	}
	a := &Adapter{
		cfg:              cfg,
		domain:           domain,
		serverDomains:    make(map[string]struct{}, len(cfg.ServerDomains)),
		log:              slog.New(slog.DiscardHandler),
		senders:          newSenders(sendersSize),
		presences:        newPresences(presencePairs),
		rooms:            newRooms(),
		served:           newServedRooms(),
		subscribeLimiter: ratelimit.New[string](subscribeRate, subscribeBurst, limitersSize),
		probeLimiter:     ratelimit.New[string](probeRate, probeBurst, limitersSize),
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		backoff:      defaultBackoff,
		now:          time.Now,
		turn:         make(chan struct{}, 1),
		writeTimeout: writeTimeout,
		pings:        make(map[string]*pingWait),
	}
	for i, s := range cfg.ServerDomains {
		d, _ := parseDomain(s) // valid after Validate
		a.serverDomains[d] = struct{}{}
		if i == 0 {
			a.server = jid.MustParse(d)
		}
	}
	for _, o := range opts {
		o(a)
	}
	return a, nil
}

// Network implements bridges.Network.
func (*Adapter) Network() event.Network { return event.XMPP }

// Start implements bridges.Network. It reports bridges.Starting and returns
// at once; a goroutine connects to Config.Server, reports Connected once the
// server accepted the handshake, and reconnects with backoff whenever the
// connection fails or ends, reporting Reconnecting (or BadCredentials when
// the server refused the secret) meanwhile. The goroutine runs until Stop,
// whatever becomes of ctx.
func (a *Adapter) Start(ctx context.Context, host bridges.Host) error {
	if host == nil {
		return errors.New("start XMPP adapter: host is nil")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cancel != nil || a.stopped {
		return errors.New("start XMPP adapter: already started")
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.host, a.cancel, a.done = host, cancel, make(chan struct{})
	a.setState(bridges.Starting, nil)
	go a.run(runCtx)
	return nil
}

// Stop implements bridges.Network. It ends the connection goroutine: the
// stream is closed, and the server given closeTimeout to close its side. It
// reports bridges.Stopped and returns once the goroutine has ended, or when
// ctx is done (then the connection is closed at once and ctx's error is
// returned).
func (a *Adapter) Stop(ctx context.Context) error {
	a.mu.Lock()
	cancel, done := a.cancel, a.done
	a.stopped = true
	a.mu.Unlock()
	if cancel == nil {
		return nil // never started
	}
	cancel()
	defer a.setState(bridges.Stopped, nil)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		a.mu.Lock()
		if a.conn != nil {
			_ = a.conn.Close()
		}
		a.mu.Unlock()
		return fmt.Errorf("stop XMPP adapter: %w", ctx.Err())
	}
}

// Send implements bridges.Network. It writes evt as one stanza and returns
// its stanza ID, which is derived from evt's source ID so that a repeated
// Send gives the same ID. It is safe for concurrent use.
//
// A *event.Message becomes a chat message from the ghost JID evt.From, with
// an XEP-0172 nick when evt.FromName is set. A *event.Failure becomes an
// error message answering the stanza named by its EventID, with the error
// condition of its Condition. A *event.Presence becomes a presence from the
// ghost JID evt.From (unavailable for Offline, <show/> and <status/>
// otherwise), a *event.Subscription a subscription request (Active) or its
// cancellation from the ghost JID evt.From. A *event.Message with Room set
// is a post in a room, and a *event.Member moves the ghost evt.From in the
// room evt.To (see room.go and member.go).
//
// While the component is not connected, Send fails at once; the error is
// not permanent, nor are write errors. Events the adapter cannot express
// get a permanent error.
func (a *Adapter) Send(ctx context.Context, evt event.Event) (string, error) {
	var (
		id, to string
		r      xml.TokenReader
		err    error
	)
	if evt != nil && evt.Head().Room && evt.Kind() != event.KindFailure {
		if room, alias, ok := a.servedRoom(evt.Head().To.ID); ok {
			return a.sendServed(ctx, evt, room, alias)
		}
	}
	switch e := evt.(type) {
	case *event.Message:
		to = e.To.ID
		if e.Room {
			id, r, err = a.outboundRoomMessage(ctx, e)
		} else {
			id, r, err = a.outboundMessage(e)
		}
	case *event.Topic:
		to = e.To.ID
		id, r, err = a.outboundTopic(ctx, e)
	case *event.Member:
		id, err := a.sendMember(ctx, e)
		if err != nil {
			return "", fmt.Errorf("send %s to %s: %w", evt.Kind(), e.To.ID, err)
		}
		return id, nil
	case *event.Failure:
		to = e.To.ID
		if room, ok := a.fromRoom(e.From.ID); ok && e.From.ID == room.String() {
			id, r, err = a.roomFailure(e, room)
		} else {
			id, r, err = a.outboundFailure(e)
		}
	case *event.Presence:
		to = e.To.ID
		id, r, err = a.outboundPresence(e)
	case *event.Subscription:
		to = e.To.ID
		id, r, err = a.outboundSubscription(e)
	case nil:
		return "", bridges.Permanent(errors.New("send XMPP event: event is nil"))
	default:
		return "", bridges.Permanent(fmt.Errorf("send %s event: not supported by the XMPP adapter", evt.Kind()))
	}
	switch {
	case err != nil:
	case r == nil:
		// Nothing to write: an earlier attempt delivered it.
	case evt.Kind() == event.KindPresence:
		// Presence is not durable: written, it is done.
		_, err = a.write(ctx, r)
	default:
		// Everything else leaves the outbox when Send returns, so make
		// sure the server has it.
		err = a.writeWithBarrier(ctx, r)
	}
	if s, ok := evt.(*event.Subscription); ok && err == nil {
		a.rememberProbe(ctx, s)
	}
	if err != nil {
		return "", fmt.Errorf("send %s to %s: %w", evt.Kind(), to, err)
	}
	return id, nil
}

// writeWithBarrier writes the stanza r and returns once the server has it.
// XEP-0114 has no acknowledgements, and a stanza written to the socket is
// not yet the server's: if Parley dies then, the kernel may reset the
// connection and drop it. So a ping (XEP-0199) goes out after the stanza,
// in the same flush (one system call), and writeWithBarrier waits for its
// answer: the stream is ordered, so the answer means the server has the
// stanza. Any answer
// counts, an error too. The end of the connection they were written to, or
// no answer within writeTimeout, is an error, and the router sends the
// event again (with the same stanza id); the answer of a newer session
// (after a reconnection) says nothing of a stanza written into the
// connection that ended.
//
// The answer comes through the handler (answerPing), so that waiting for it
// holds up no other writer.
func (a *Adapter) writeWithBarrier(ctx context.Context, r xml.TokenReader) error {
	id := randomID()
	live, w, release, err := a.expectAnswer(id)
	if err != nil {
		return err
	}
	defer release()
	iq := ping.IQ{IQ: stanza.IQ{ID: id, Type: stanza.GetIQ, From: a.domain, To: a.server}}
	if _, err := a.writeOn(ctx, live, r, iq.TokenReader()); err != nil {
		return err
	}
	if a.afterWrite != nil {
		a.afterWrite()
	}
	timeout := time.NewTimer(a.writeTimeout)
	defer timeout.Stop()
	select {
	case <-w.done:
		if w.err != nil {
			return fmt.Errorf("wait for the server to take the stanza: %w", w.err)
		}
		return nil
	case <-timeout.C:
		return fmt.Errorf("wait for the server to take the stanza: no answer to ping %s within %s", id, a.writeTimeout)
	case <-ctx.Done():
		return fmt.Errorf("wait for the server to take the stanza: %w", ctx.Err())
	}
}

// expectAnswer registers a wait for the answer to the iq id that the caller
// is about to write on the live session, which it returns; release forgets
// the wait.
func (a *Adapter) expectAnswer(id string) (live *xmpp.Session, w *pingWait, release func(), err error) {
	a.mu.Lock()
	live = a.sess
	a.mu.Unlock()
	if live == nil {
		return nil, nil, nil, errNotConnected
	}
	w = &pingWait{sess: live, done: make(chan struct{})}
	a.pingsMu.Lock()
	a.pings[id] = w
	a.pingsMu.Unlock()
	return live, w, func() {
		a.pingsMu.Lock()
		delete(a.pings, id)
		a.pingsMu.Unlock()
	}, nil
}

// pingWait is a delivery barrier waiting for the answer to its ping, on the
// session the ping went out on. done is closed with err nil on the answer,
// or with the reason it cannot come.
type pingWait struct {
	sess *xmpp.Session
	done chan struct{}
	err  error
	// answer is the answer, once done is closed with err nil.
	answer iqStanza
}

// endPings fails the barriers still waiting on sess, which ended: their
// answers cannot come.
func (a *Adapter) endPings(sess *xmpp.Session) {
	a.pingsMu.Lock()
	defer a.pingsMu.Unlock()
	for id, w := range a.pings {
		if w.sess == sess {
			w.err = errSessionEnded
			close(w.done)
			delete(a.pings, id)
		}
	}
}

// answerPing ends the barrier (or the request, see request) waiting for
// the answer iq, if any, and reports whether there was one. Any answer
// counts, an error too.
func (a *Adapter) answerPing(iq iqStanza) bool {
	a.pingsMu.Lock()
	defer a.pingsMu.Unlock()
	w, ok := a.pings[iq.ID]
	if ok {
		w.answer = iq
		close(w.done)
		delete(a.pings, iq.ID)
	}
	return ok
}

// write sends one stanza on the live session and returns that session, for
// the delivery barrier.
func (a *Adapter) write(ctx context.Context, r xml.TokenReader) (*xmpp.Session, error) {
	return a.writeOn(ctx, nil, r)
}

// writeOn sends one stanza on sess, or on the live session when sess is
// nil, once it is this writer's turn, and returns the session. It fails
// when sess is no longer the live session. A failed write may have left
// part of a stanza on the stream, so it closes the connection: the
// connection goroutine reconnects.
func (a *Adapter) writeOn(ctx context.Context, sess *xmpp.Session, rs ...xml.TokenReader) (*xmpp.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case a.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-a.turn }()
	a.mu.Lock()
	live, conn := a.sess, a.conn
	a.mu.Unlock()
	switch {
	case live == nil:
		return nil, errNotConnected
	case sess != nil && sess != live:
		return nil, errSessionEnded
	}
	// The write's own deadline, set on the connection while this writer
	// holds the turn: not the caller's (the time spent waiting for the
	// turn does not count), and not through the session's context, which
	// never ends here. The session watches a context's end from another
	// goroutine and then sets a past write deadline on the connection;
	// when the context ends just as the write completes (as a deferred
	// cancel does), that can come after the write, and fail the next
	// writer's: seen as "i/o timeout" on a healthy connection under load.
	_ = conn.SetWriteDeadline(time.Now().Add(a.writeTimeout))
	var err error
	if len(rs) == 1 {
		err = live.Send(context.WithoutCancel(ctx), rs[0])
	} else {
		err = writeFlushed(live, rs...)
	}
	_ = conn.SetWriteDeadline(time.Time{})
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return live, nil
}

// writeFlushed writes several stanzas on sess and flushes them once.
func writeFlushed(sess *xmpp.Session, rs ...xml.TokenReader) error {
	w := sess.TokenWriter()
	for _, r := range rs {
		if _, err := xmlstream.Copy(w, r); err != nil {
			_ = w.Close()
			return err
		}
	}
	return w.Close() // flushes
}

// sessionWriter writes stanzas on one session through the adapter
// (Adapter.writeOn), taking turns with Send.
type sessionWriter struct {
	a    *Adapter
	sess *xmpp.Session
}

func (w sessionWriter) Send(ctx context.Context, r xml.TokenReader) error {
	_, err := w.a.writeOn(ctx, w.sess, r)
	return err
}

// setState reports s to the host, unless Stopped was reported already.
func (a *Adapter) setState(s bridges.State, err error) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	if a.stateStopped {
		return
	}
	a.stateStopped = s == bridges.Stopped
	a.host.SetState(event.XMPP, s, err)
}

// run connects and serves until ctx ends, reconnecting with backoff. It is
// the adapter's connection goroutine.
func (a *Adapter) run(ctx context.Context) {
	defer close(a.done)
	attempt := 0
	for {
		up, err := a.connectAndServe(ctx)
		if ctx.Err() != nil {
			return
		}
		if up >= a.backoff.reset {
			attempt = 0
		}
		delay := a.backoff.Delay(attempt)
		attempt++
		if errors.Is(err, errSecretRefused) {
			a.log.Error("xmpp component secret refused", "server", a.cfg.Server, "domain", a.domain.String(), "error", err, "retry_in", delay)
			a.setState(bridges.BadCredentials, err)
		} else {
			a.log.Warn("xmpp connection failed", "server", a.cfg.Server, "domain", a.domain.String(), "error", err, "connected_for", up, "retry_in", delay)
			a.setState(bridges.Reconnecting, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// connectAndServe connects, performs the XEP-0114 handshake and serves the
// session until it ends or ctx does. It returns how long the session was up
// and why it ended (never nil unless ctx ended).
func (a *Adapter) connectAndServe(ctx context.Context) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := a.dial(cctx, a.cfg.Server)
	if err != nil {
		return 0, fmt.Errorf("connect to %s: %w", a.cfg.Server, err)
	}
	// The session honours cctx only racily (it sets and at once clears a
	// past deadline), so closing the connection is what ends a handshake
	// when cctx does.
	abort := context.AfterFunc(cctx, func() { _ = conn.Close() })
	sess, err := component.NewSession(cctx, a.domain, []byte(a.cfg.Secret), conn)
	if !abort() && err == nil {
		err = cctx.Err()
	}
	cancel()
	if err != nil {
		_ = conn.Close()
		if errors.Is(err, stream.NotAuthorized) {
			return 0, fmt.Errorf("%w (component %s at %s): %w", errSecretRefused, a.domain, a.cfg.Server, err)
		}
		return 0, fmt.Errorf("handshake as component %s with %s: %w", a.domain, a.cfg.Server, err)
	}

	// What the last session learnt of the users' resources may be stale:
	// forget it, and probe those users again. The prober ends with the
	// session (the deferred call runs after the connection is closed).
	a.mu.Lock()
	a.sess, a.conn = sess, conn
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.sess, a.conn = nil, nil
		a.mu.Unlock()
		_ = conn.Close()
		a.endPings(sess)
		// The rooms' occupants of this session are gone with it.
		a.rooms.reset()
	}()
	probed := make(chan struct{})
	pctx, stopProbes := context.WithCancel(ctx)
	defer func() { stopProbes(); <-probed }()
	stale := a.presences.reset()
	go func() { defer close(probed); a.probeAgain(pctx, sessionWriter{a, sess}, a.toProbe(pctx, stale)) }()
	// The listener joins the portal rooms; it needs the session served
	// (the rooms' answers come through the handler), so it runs apart.
	listening := make(chan struct{})
	defer func() { stopProbes(); <-listening }()
	go func() { defer close(listening); a.joinListeners(pctx) }()
	// Parley's occupants check that they are still in the rooms.
	pinging := make(chan struct{})
	defer func() { stopProbes(); <-pinging }()
	go func() { defer close(pinging); a.selfPings(pctx) }()
	a.log.Info("xmpp component connected", "server", a.cfg.Server, "domain", a.domain.String())
	a.setState(bridges.Connected, nil)
	connected := time.Now()

	served := make(chan error, 1)
	rctx, stopReplies := context.WithCancel(ctx)
	out := a.startReplies(rctx, sess)
	defer func() { stopReplies(); <-out.done }()
	go func() { served <- sess.Serve(a.handler(ctx, out)) }()
	select {
	case err = <-served:
	case <-ctx.Done():
		// Stop: new Sends fail from now on; close our stream and give the
		// server a moment to close its own.
		a.mu.Lock()
		a.sess = nil
		a.mu.Unlock()
		_ = conn.SetDeadline(time.Now().Add(closeTimeout))
		_ = sess.Close()
		err = <-served
	}
	up := time.Since(connected)
	if err == nil {
		err = errors.New("the server closed the stream")
	}
	return up, fmt.Errorf("session with %s: %w", a.cfg.Server, err)
}
