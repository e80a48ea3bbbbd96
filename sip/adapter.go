// Package sip is Parley's SIP adapter: a registrar and SIP/SIMPLE messaging
// endpoint (RFC 3428 MESSAGE) for one SIP domain, built on sipgo.
//
// Phones register with it (REGISTER with digest authentication, RFC 3261
// §10 and §22); their bindings are kept in the adapter's durable links, so
// they survive a restart. A registered user's MESSAGE to a ghost or alias
// address of the domain becomes an event.Message for the routing core, and
// is answered 202 only once the core has stored it. Beside a PBX, the
// adapter is its peer: requests from trusted peers (by address or digest
// credentials) are accepted for any sender of their domains, and requests to
// addresses outside the domain go through the outbound proxy.
//
// Outbound, Send delivers the core's events as MESSAGE requests from the
// ghost addresses: to every registered contact of a user of the domain, or
// through the outbound proxy (or the recipient's domain) for anyone else.
// Parley is also the presence server of its domain (RFC 3856): a watcher
// SUBSCRIBEs to a ghost or alias, the subscription goes to the core as an
// event.Subscription, and the presence the core Sends for the pair goes to
// the watcher in NOTIFYs with PIDF bodies. Subscriptions are kept in memory
// only (see subscriptions). Users of the domain PUBLISH their own presence
// (RFC 3903), which goes to the core as broadcast event.Presence.
//
// Calls (call.go, callee.go, dialog.go): Parley is a back-to-back user
// agent. An INVITE, authenticated as a MESSAGE is, becomes a caller leg
// handed to the core (bridges.CallHost); Invite places a callee leg,
// forking to every registered contact. Media is plain RTP through
// media.Leg, from the port range given by WithCalls.
package sip

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/calls"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/keylock"
	"github.com/parleygw/parley/internal/ratelimit"
	"github.com/parleygw/parley/media"
)

var _ bridges.Network = (*Adapter)(nil)

// Timeouts of the adapter.
const (
	// dispatchTimeout bounds one Host.Dispatch of an inbound MESSAGE; the
	// client retransmits meanwhile, and the transaction absorbs that.
	dispatchTimeout = 10 * time.Second
	// sendTimeout bounds one outbound MESSAGE transaction: Timer F (64·T1,
	// RFC 3261 §17.1.2.2) and a little.
	sendTimeout = 34 * time.Second
	// linksTimeout bounds the links reads and writes of a REGISTER.
	linksTimeout = 5 * time.Second
)

// defaultBackoff paces the attempts to bind a listener that failed.
var defaultBackoff = bridges.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}

// maxBuckets bounds the source addresses the rate limiter remembers.
const maxBuckets = 16384

// Option configures an Adapter.
type Option func(*Adapter)

// WithCalls lets the adapter carry calls, with the RTP legs of their media
// from ports. Without it INVITEs are refused with 503, and Invite fails.
func WithCalls(ports *media.Ports) Option {
	return func(a *Adapter) {
		if ports != nil {
			a.newLeg = func() (rtpLeg, error) { return ports.NewLeg() }
		}
	}
}

// WithLogger makes the adapter, and sipgo through its options, log to l
// instead of discarding its logs. sipgo's own records are logged at debug
// level with component=sipgo: they are per-packet, and a remote party
// controls them (an unparsable datagram is one).
func WithLogger(l *slog.Logger) Option {
	return func(a *Adapter) {
		if l != nil {
			a.log = l
		}
	}
}

// Adapter is Parley's SIP adapter. It implements bridges.Network. Create it
// with New; it can be started once. It is safe for concurrent use.
type Adapter struct {
	cfg        Config // with defaults
	domain     string // cfg.Domain, canonical
	log        *slog.Logger
	auth       *digestAuth
	users      map[string]bool // usernames of Config.Users
	peers      []*peer
	peerByUser map[string]*peer
	proxy      *sip.Uri // Config.OutboundProxy with lr; nil when none
	limiter    *ratelimit.Limiter[netip.Addr]
	listeners  []listenSpec
	aors       keylock.Set // one REGISTER per AOR at a time
	subs       *subscriptions
	pubs       *publications
	parser     *sip.Parser // sipgo's, with stricter address headers
	udp        udpConns    // the UDP sockets being served
	// handlers are the request handlers by method, "" for the others;
	// set by Start.
	handlers map[sip.RequestMethod]sipgo.RequestHandler
	answers  *answers // final responses kept for retransmissions
	// serverHeader is the Server header of every response; responses
	// share it, and nothing changes it.
	serverHeader sip.Header
	// userAgentHeader is the User-Agent header of the adapter's requests,
	// shared likewise.
	userAgentHeader sip.Header

	// authBackoff slows password guessing (see authenticate).
	authBackoff *authBackoff

	// Calls (see call.go): the live legs, the maker of their media legs
	// (nil without WithCalls: INVITEs are refused), a limit of
	// INVITEs per source on top of the limit of all requests, and the
	// warning that calls are not configured, logged once.
	calls         *callTable
	newLeg        func() (rtpLeg, error)
	inviteLimiter *ratelimit.Limiter[netip.Addr]
	noCalls       sync.Once

	// Set by New; tests replace them.
	now         func() time.Time
	backoff     bridges.Backoff
	sendTimeout time.Duration

	mu     sync.Mutex
	host   bridges.Host
	links  bridges.Links
	ua     *sipgo.UserAgent
	client *sipgo.Client
	cancel context.CancelFunc // ends the listener goroutines
	// dispatchCtx is the parent of the handlers' dispatches; Stop cancels
	// it when its own context ends before they are done.
	dispatchCtx    context.Context
	dispatchCancel context.CancelFunc
	loops          sync.WaitGroup // listener goroutines
	inflight       sync.WaitGroup // request handlers
	open           []io.Closer    // bound sockets, by listener index
	bound          []net.Addr     // their addresses
	started        bool
	stopping       bool

	stateMu      sync.Mutex
	up           []bool
	connected    bool
	stateStopped bool
}

// peer is a TrustedPeer, parsed.
type peer struct {
	name     string
	prefixes []netip.Prefix
	domains  map[string]bool
	username string
}

// allows reports whether the peer may send from domain; own is Parley's.
func (p *peer) allows(domain, own string) bool {
	if len(p.domains) == 0 {
		return domain != own
	}
	return p.domains[domain]
}

// New checks cfg and returns an adapter that is not started. It does no I/O.
func New(cfg Config, opts ...Option) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	a := &Adapter{
		cfg:         cfg,
		domain:      cfg.Domain,
		log:         slog.New(slog.DiscardHandler),
		users:       make(map[string]bool, len(cfg.Users)),
		peerByUser:  make(map[string]*peer),
		limiter:     ratelimit.New[netip.Addr](cfg.RateLimit.PerSecond, float64(cfg.RateLimit.Burst), maxBuckets),
		now:         time.Now,
		backoff:     defaultBackoff,
		sendTimeout: sendTimeout,
		subs:        newSubscriptions(),
		pubs:        newPublications(),
		parser:      newParser(),
		answers:     newAnswers(sip.Timer_J),
		calls:       newCallTable(),
		// A phone places a few calls a minute; a scanner hundreds.
		inviteLimiter: ratelimit.New[netip.Addr](calls.InvitesPerSecond, calls.InviteBurst, maxBuckets),
	}
	a.serverHeader = sip.NewHeader("Server", cfg.UserAgent)
	a.userAgentHeader = sip.NewHeader("User-Agent", cfg.UserAgent)
	secrets := make(map[string]digestSecrets, len(cfg.Users))
	for name, u := range cfg.Users {
		a.users[name] = true
		if u.Password != "" {
			secrets[name] = newDigestSecrets(name, cfg.Realm, u.Password)
		} else {
			secrets[name] = digestSecrets{md5: toLowerASCII(u.HA1), sha256: toLowerASCII(u.HA1SHA256)}
		}
	}
	for _, tp := range cfg.TrustedPeers {
		p := &peer{name: tp.Name, username: tp.Username, domains: map[string]bool{}}
		for _, s := range tp.Addresses {
			pr, _ := parsePrefix(s) // valid after Validate
			p.prefixes = append(p.prefixes, pr)
		}
		for _, d := range tp.Domains {
			p.domains[d] = true
		}
		if tp.Username != "" {
			secrets[tp.Username] = newDigestSecrets(tp.Username, cfg.Realm, tp.Password)
			a.peerByUser[tp.Username] = p
		}
		a.peers = append(a.peers, p)
	}
	a.auth = newDigestAuth(cfg.Realm, cfg.DigestAlgorithms, secrets)
	a.authBackoff = newAuthBackoff()
	if cfg.OutboundProxy != "" {
		proxy, err := parseProxy(cfg.OutboundProxy)
		if err != nil {
			return nil, fmt.Errorf("sip.outbound_proxy: %w", err) // unreachable after Validate
		}
		a.proxy = proxy
	}
	for _, s := range cfg.Listen {
		l, _ := parseListen(s) // valid after Validate
		a.listeners = append(a.listeners, l)
	}
	for _, o := range opts {
		o(a)
	}
	return a, nil
}

// Network implements bridges.Network.
func (*Adapter) Network() event.Network { return event.SIP }

// Start implements bridges.Network. It builds the SIP stack, reports
// bridges.Starting and returns at once. One goroutine per listener binds
// its socket and serves it; once every listener is up the adapter reports
// Connected. A listener that cannot bind (or stops) is reported as
// Reconnecting with the error and bound again with backoff. The goroutines
// run until Stop, whatever becomes of ctx.
func (a *Adapter) Start(ctx context.Context, host bridges.Host) error {
	if host == nil {
		return errors.New("start SIP adapter: host is nil")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return errors.New("start SIP adapter: already started")
	}
	sl := slog.New(demote{a.log.Handler()}).With("component", "sipgo")
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent(a.cfg.UserAgent),
		sipgo.WithUserAgentHostname(a.domain),
		sipgo.WithUserAgentParser(a.parser),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(sl),
			sip.WithTransactionLayerUnhandledResponseHandler(func(r *sip.Response) {
				a.log.Debug("sip response matches no transaction", "status", r.StatusCode, "source", r.Source())
				a.ackStray(r)
			}),
		),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(sl)),
	)
	if err != nil {
		return fmt.Errorf("start SIP adapter: %w", err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(sl))
	if err != nil {
		_ = ua.Close()
		return fmt.Errorf("start SIP adapter: %w", err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientLogger(sl))
	if err != nil {
		_ = ua.Close()
		return fmt.Errorf("start SIP adapter: %w", err)
	}
	a.handlers = map[sip.RequestMethod]sipgo.RequestHandler{
		sip.REGISTER:  a.handle(a.onRegister),
		sip.MESSAGE:   a.handle(a.onMessage),
		sip.OPTIONS:   a.handle(a.onOptions),
		sip.SUBSCRIBE: a.handle(a.onSubscribe),
		sip.PUBLISH:   a.handle(a.onPublish),
		sip.INVITE:    a.handleTx(a.onInvite),
		sip.BYE:       a.handle(a.onBye),
		sip.ACK:       a.onAck, // never answered
		"":            a.handle(a.onOther),
	}
	for method, h := range a.handlers {
		if method != "" {
			srv.OnRequest(method, h)
		}
	}
	srv.OnNoRoute(a.handlers[""])
	// Sees every message sipgo could parse: see udpConn.
	ua.TransportLayer().OnMessage(a.onTransportMessage)

	a.started = true
	a.host, a.links = host, host.Links(event.SIP)
	a.ua, a.client = ua, client
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	a.dispatchCtx, a.dispatchCancel = context.WithCancel(context.WithoutCancel(ctx))
	a.open = make([]io.Closer, len(a.listeners))
	a.bound = make([]net.Addr, len(a.listeners))
	a.up = make([]bool, len(a.listeners))
	a.setState(bridges.Starting, nil)
	for i := range a.listeners {
		a.loops.Add(1)
		go a.listen(runCtx, i, srv)
	}
	a.loops.Add(1)
	go func() {
		defer a.loops.Done()
		a.waitListening(runCtx)
		ctx, cancel := context.WithTimeout(runCtx, 30*time.Second)
		defer cancel()
		a.endLeftoverCalls(ctx)
	}()
	return nil
}

// waitListening returns once every listener is bound, or ctx ends, or
// ten seconds passed.
func (a *Adapter) waitListening(ctx context.Context) {
	for range 100 {
		a.stateMu.Lock()
		up := a.connected
		a.stateMu.Unlock()
		if up || ctx.Err() != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop implements bridges.Network. Presence subscriptions are ended with
// a NOTIFY (see deactivateSubscriptions). New requests are answered 503
// from then on; the listeners are closed, the requests being handled are
// given until ctx is done to finish, then sipgo's transactions and
// connections are closed. It reports bridges.Stopped. It returns ctx's
// error when ctx ended first.
func (a *Adapter) Stop(ctx context.Context) error {
	a.mu.Lock()
	if !a.started || a.stopping {
		a.mu.Unlock()
		return nil
	}
	a.mu.Unlock()
	a.deactivateSubscriptions(ctx)
	a.endAllCalls(ctx)
	a.mu.Lock()
	if a.stopping {
		a.mu.Unlock()
		return nil
	}
	a.stopping = true
	a.cancel()
	for _, c := range a.open {
		if c != nil {
			_ = c.Close()
		}
	}
	ua, dispatchCancel := a.ua, a.dispatchCancel
	a.mu.Unlock()
	a.pubs.close()
	defer a.setState(bridges.Stopped, nil)
	defer dispatchCancel()

	done := make(chan struct{})
	go func() {
		a.loops.Wait()
		a.inflight.Wait()
		_ = ua.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop SIP adapter: %w", ctx.Err())
	}
}

// Send implements bridges.Network. It delivers evt as a SIP MESSAGE and
// returns its Call-ID, which derives from evt's source ID (as does the From
// tag), so that a repeated Send is the same request and the recipient can
// recognise it. It is safe for concurrent use.
//
// From must be an address under Config.Domain (a ghost or an alias), To any
// SIP AOR. A *event.Message becomes a text/plain MESSAGE from evt.From,
// with evt.FromName as display name. A *event.Failure becomes a MESSAGE to
// the original sender, "Message not delivered: <reason>". A
// *event.Presence becomes NOTIFYs in the watcher's subscription dialogs
// (see sendPresence); a *event.Subscription is accepted and ignored. A
// post in a room (Room set) goes to the phone To from the room's address
// From, with the speaker's name, and a *event.Member tells the phone To of
// its own membership change in the room From (see room.go).
//
// To a user of the domain, the MESSAGE goes to each registered contact at
// once; one 2xx is success. Without a contact, Send fails with an error that
// is not permanent (the router retries, and the user's next REGISTER wakes
// it), unless evt.Time is older than Config.OfflineTTL. To anyone else, it
// goes to their AOR through Config.OutboundProxy, or their domain. Answers
// that retrying cannot change (3xx, 4xx but 408 and 480, 6xx, an unknown
// domain) from every target give a permanent error; timeouts and 5xx do not.
func (a *Adapter) Send(ctx context.Context, evt event.Event) (string, error) {
	if evt == nil {
		return "", bridges.Permanent(errors.New("send SIP event: event is nil"))
	}
	switch evt.Kind() {
	case event.KindMessage:
		m, ok := evt.(*event.Message)
		if !ok {
			return "", bridges.Permanent(fmt.Errorf("send SIP event: kind %s with type %T", evt.Kind(), evt))
		}
		if m.Body == "" {
			return "", bridges.Permanent(fmt.Errorf("send MESSAGE to %s: message has no body", m.To.ID))
		}
		if m.Room {
			return a.deliver(ctx, &m.Header, roomMessage(m))
		}
		return a.deliver(ctx, &m.Header, outboundMessage{
			from: m.From.ID, to: m.To.ID, fromName: m.FromName, body: m.Body, sourceID: m.ID,
		})
	case event.KindFailure:
		f, ok := evt.(*event.Failure)
		if !ok {
			return "", bridges.Permanent(fmt.Errorf("send SIP event: kind %s with type %T", evt.Kind(), evt))
		}
		sourceID := ""
		if f.EventID != "" || f.ID != "" {
			sourceID = "failure|" + f.EventID + "|" + f.ID
		}
		return a.deliver(ctx, &f.Header, outboundMessage{
			from: f.From.ID, to: f.To.ID, fromName: f.FromName, body: failureText(f), sourceID: sourceID,
		})
	case event.KindMember:
		mb, ok := evt.(*event.Member)
		if !ok || !mb.Room || !mb.Change.Valid() {
			return "", bridges.Permanent(fmt.Errorf("send SIP event: kind %s with type %T outside a room or without a change", evt.Kind(), evt))
		}
		return a.deliver(ctx, &mb.Header, memberMessage(mb))
	case event.KindPresence:
		p, ok := evt.(*event.Presence)
		if !ok {
			return "", bridges.Permanent(fmt.Errorf("send SIP event: kind %s with type %T", evt.Kind(), evt))
		}
		return a.sendPresence(ctx, p)
	case event.KindSubscription:
		s, ok := evt.(*event.Subscription)
		if !ok {
			return "", bridges.Permanent(fmt.Errorf("send SIP event: kind %s with type %T", evt.Kind(), evt))
		}
		return a.sendSubscription(s)
	default:
		return "", bridges.Permanent(fmt.Errorf("send %s event: not supported by the SIP adapter", evt.Kind()))
	}
}

// Addrs returns the addresses the listeners are bound to, as
// "transport:host:port", in the order of Config.Listen; a listener that is
// not bound has an empty entry. With port 0 in the configuration, this is
// where to find the port.
func (a *Adapter) Addrs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, len(a.bound))
	for i, addr := range a.bound {
		if addr != nil {
			out[i] = a.listeners[i].network + ":" + addr.String()
		}
	}
	return out
}

// listen binds listener i and serves it until ctx ends, binding it again
// with backoff whenever binding fails or serving stops.
func (a *Adapter) listen(ctx context.Context, i int, srv *sipgo.Server) {
	defer a.loops.Done()
	l := a.listeners[i]
	attempt := 0
	for {
		closer, addr, serve, err := a.bind(ctx, l, srv)
		if err == nil {
			a.mu.Lock()
			if a.stopping {
				a.mu.Unlock()
				_ = closer.Close()
				return
			}
			a.open[i], a.bound[i] = closer, addr
			a.mu.Unlock()
			a.log.Info("sip listening", "transport", l.network, "addr", addr.String())
			a.listenerUp(i, true, nil)
			attempt = 0
			err = serve()
			a.mu.Lock()
			a.open[i], a.bound[i] = nil, nil
			a.mu.Unlock()
			_ = closer.Close()
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				err = errors.New("listener closed")
			}
			err = fmt.Errorf("serve %s: %w", l, err)
		}
		delay := a.backoff.Delay(attempt)
		attempt++
		a.log.Warn("sip listener down", "listener", l.String(), "err", err, "retry_in", delay)
		a.listenerUp(i, false, err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// bind opens the socket of l and returns it, its address and the function
// that serves it until it is closed.
func (a *Adapter) bind(ctx context.Context, l listenSpec, srv *sipgo.Server) (io.Closer, net.Addr, func() error, error) {
	var lc net.ListenConfig
	switch l.network {
	case "udp":
		pc, err := lc.ListenPacket(ctx, "udp", l.addr)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("listen on %s: %w", l, err)
		}
		uc := &udpConn{PacketConn: pc, a: a}
		a.udp.add(uc)
		return pc, pc.LocalAddr(), func() error {
			defer a.udp.remove(uc)
			return srv.ServeUDP(uc)
		}, nil
	case "tcp":
		ln, err := lc.Listen(ctx, "tcp", l.addr)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("listen on %s: %w", l, err)
		}
		return ln, ln.Addr(), func() error { return ignoreClosed(srv.ServeTCP(ln)) }, nil
	default: // tls
		cert, err := tls.LoadX509KeyPair(a.cfg.TLSCert, a.cfg.TLSKey)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("load sip.tls_cert and sip.tls_key: %w", err)
		}
		ln, err := lc.Listen(ctx, "tcp", l.addr)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("listen on %s: %w", l, err)
		}
		tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		return tln, ln.Addr(), func() error { return ignoreClosed(srv.ServeTLS(tln)) }, nil
	}
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// listenerUp records whether listener i is up and reports the state:
// Connected once all are, Reconnecting with err when one goes down.
func (a *Adapter) listenerUp(i int, up bool, err error) {
	a.stateMu.Lock()
	a.up[i] = up
	all := true
	for _, u := range a.up {
		all = all && u
	}
	was := a.connected
	a.connected = all
	a.stateMu.Unlock()
	switch {
	case !up:
		a.setState(bridges.Reconnecting, err)
	case all && !was:
		a.setState(bridges.Connected, nil)
	}
}

// setState reports s to the host, unless Stopped was reported already.
func (a *Adapter) setState(s bridges.State, err error) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	if a.stateStopped {
		return
	}
	a.stateStopped = s == bridges.Stopped
	a.host.SetState(event.SIP, s, err)
}

// enter admits one request handler, unless the adapter is stopping. A
// handler that was admitted calls a.inflight.Done when it returns.
func (a *Adapter) enter() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopping {
		return false
	}
	a.inflight.Add(1)
	return true
}

// stack returns what Start set, or nils before Start.
func (a *Adapter) stack() (bridges.Host, bridges.Links, *sipgo.Client, *sipgo.UserAgent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.host, a.links, a.client, a.ua
}

// demote is a slog.Handler that logs every record at debug level: the
// handler given to sipgo.
type demote struct{ h slog.Handler }

func (d demote) Enabled(ctx context.Context, _ slog.Level) bool {
	return d.h.Enabled(ctx, slog.LevelDebug)
}

func (d demote) Handle(ctx context.Context, r slog.Record) error {
	if r.Level > slog.LevelDebug {
		r.AddAttrs(slog.String("sipgo_level", r.Level.String()))
		r.Level = slog.LevelDebug
	}
	return d.h.Handle(ctx, r)
}

func (d demote) WithAttrs(attrs []slog.Attr) slog.Handler { return demote{d.h.WithAttrs(attrs)} }
func (d demote) WithGroup(name string) slog.Handler       { return demote{d.h.WithGroup(name)} }

func toLowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
