// Package matrix is Parley's Matrix adapter: an application service that
// owns a namespace of ghost users on one homeserver.
//
// The homeserver pushes room events to the adapter's HTTP listener
// (transaction.go); DMs between a Matrix user and a ghost are dispatched to
// the routing core as event.Message. Events from the core are sent into
// Matrix as the ghost, in a DM room the adapter creates or learned
// (room.go). Portal rooms (group chats that the YAML joins with a room of
// another network) are joined by the bot; users' posts there are dispatched
// with Header.Room set, and posts from the other side are sent as the
// poster's ghost (portal.go). Presence goes both ways: a ghost's presence is
// set from the core's, and users' presence pushed by the homeserver is dispatched
// (presence.go, which also says what Synapse and Dendrite deliver).
// mautrix-go provides the client-server calls and the Matrix
// types; the appservice HTTP API is served here, so that the hs_token check,
// the error answers and the durable transaction de-duplication are Parley's.
package matrix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/keylock"
	"github.com/parleygw/parley/internal/names"
)

var _ bridges.Network = (*Adapter)(nil)

// Timeouts of the adapter's own requests.
const (
	requestTimeout = 30 * time.Second
	probeTimeout   = 30 * time.Second
)

// defaultBackoff paces the checks of an unreachable or refusing homeserver.
var defaultBackoff = bridges.Backoff{Min: time.Second, Max: time.Minute}

// Adapter is the Matrix network adapter. Create it with New; it is safe for
// concurrent use once started.
type Adapter struct {
	cfg        Config
	log        *slog.Logger
	zlog       zerolog.Logger
	hsURL      *url.URL
	httpClient *http.Client
	namespaces []*regexp.Regexp
	bot        id.UserID
	backoff    bridges.Backoff

	mu         sync.Mutex
	host       bridges.Host
	links      bridges.Links
	srv        *http.Server
	addr       net.Addr
	cancel     context.CancelFunc
	done       chan struct{} // closed when the connect, presence refresh and presence poll loops have returned
	clients    map[id.UserID]*mautrix.Client
	registered map[id.UserID]bool
	presence   map[id.UserID]presenceOf // what each ghost's presence was set to
	// settled holds the DMs (dmKey) and portal rooms (portalKey) where an
	// entry resumed from an earlier run was looked for and not found
	// (sentBefore): that run sent nothing after it there, so the entries
	// resumed behind it need no look.
	settled    map[string]bool
	refreshing time.Duration // how often ghosts' presence is set again
	poll       *presencePoll // users' presence: polling and de-duplication
	portals    *portalState  // portal rooms (portal.go)
	portalWait time.Duration // how often the bot tries again to join portal rooms

	kick  chan struct{} // asks the connect loop to check the homeserver again
	txnMu sync.Mutex    // one transaction at a time, in the order they come
	pairs keylock.Set   // one DM room operation per (ghost, user) at a time
	calls callState     // live calls (call.go)
}

// Option configures an Adapter.
type Option func(*Adapter)

// WithLogger makes the adapter (and mautrix, through a zerolog bridge) log to
// log. Without it the adapter logs nothing.
func WithLogger(log *slog.Logger) Option {
	return func(a *Adapter) {
		if log != nil {
			a.log = log
		}
	}
}

// WithHTTPClient sets the HTTP client used for the homeserver's
// client-server API (default: one with a 30 s timeout).
func WithHTTPClient(c *http.Client) Option {
	return func(a *Adapter) {
		if c != nil {
			a.httpClient = c
		}
	}
}

// New checks cfg and returns an Adapter that is not started. It does no I/O.
func New(cfg Config, opts ...Option) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	hsURL, err := mautrix.ParseAndNormalizeBaseURL(cfg.HomeserverURL)
	if err != nil {
		return nil, fmt.Errorf("matrix.homeserver_url: %w", err)
	}
	nss, err := compileNamespaces(cfg.Namespaces)
	if err != nil {
		return nil, err
	}
	a := &Adapter{
		cfg:        cfg,
		log:        slog.New(slog.DiscardHandler),
		hsURL:      hsURL,
		httpClient: &http.Client{Timeout: requestTimeout},
		namespaces: nss,
		bot:        botID(cfg),
		backoff:    defaultBackoff,
		clients:    make(map[id.UserID]*mautrix.Client),
		registered: make(map[id.UserID]bool),
		presence:   make(map[id.UserID]presenceOf),
		settled:    make(map[string]bool),
		refreshing: presenceRefresh,
		poll:       newPresencePoll(cfg),
		portals:    newPortalState(),
		portalWait: portalRetry,
		kick:       make(chan struct{}, 1),
	}
	for _, o := range opts {
		o(a)
	}
	a.zlog = zerologFor(a.log)
	return a, nil
}

// Network implements bridges.Network.
func (a *Adapter) Network() event.Network { return event.Matrix }

// Start listens on Config.Listen and serves the application service API to
// the homeserver. It returns once the listener is open; whether the
// homeserver accepts the as_token is found out in the background and
// reported through host.SetState (Connected, BadCredentials or Reconnecting,
// retried with backoff). An error means the listener could not be opened.
func (a *Adapter) Start(ctx context.Context, host bridges.Host) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.srv != nil {
		return errors.New("start matrix adapter: already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("start matrix adapter: listen on %s: %w", a.cfg.Listen, err)
	}
	a.host = host
	a.links = host.Links(event.Matrix)
	a.addr = ln.Addr()
	a.loadPortals(ctx, a.links)
	a.srv = &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	host.SetState(event.Matrix, bridges.Starting, nil)
	srv := a.srv
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("appservice listener failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	done := make(chan struct{})
	a.done = done
	connectDone, refreshDone, pollDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go a.connect(loopCtx, host, connectDone)
	go a.refreshPresence(loopCtx, refreshDone)
	go a.pollPresence(loopCtx, pollDone)
	if a.calls.on {
		if left := a.leftoverCalls(ctx, a.links); len(left) > 0 {
			go a.endLeftoverCalls(loopCtx, left)
		}
	}
	go func() {
		<-connectDone
		<-refreshDone
		<-pollDone
		close(done)
	}()
	a.log.Info("appservice listening", "addr", ln.Addr().String(), "homeserver", a.hsURL.String())
	return nil
}

// Stop stops the connect loop and shuts the HTTP server down gracefully,
// letting a transaction in progress finish until ctx is done.
func (a *Adapter) Stop(ctx context.Context) error {
	a.mu.Lock()
	srv, cancel, done, host := a.srv, a.cancel, a.done, a.host
	a.srv, a.cancel = nil, nil
	a.mu.Unlock()
	if srv == nil {
		return nil
	}
	cancel()
	err := srv.Shutdown(ctx)
	select {
	case <-done:
	case <-ctx.Done():
	}
	host.SetState(event.Matrix, bridges.Stopped, nil)
	if err != nil {
		return fmt.Errorf("stop matrix adapter: %w", err)
	}
	return nil
}

// Send delivers evt, whose addresses are Matrix user IDs: From a ghost, To a
// real user. A Message is sent as the ghost into their DM room (created on
// first use); a Failure becomes an m.notice there. A Message with
// Header.Room set is a post for a portal room (To, as the YAML names it),
// sent as the ghost, which joins the room first (portal.go); a Failure
// from a portal room becomes the bot's m.notice in it. It returns the Matrix
// event ID. A Member joins a ghost to a portal room, names it there or has
// it leave (member.go), a Topic sets a portal room's topic (topic.go). A Presence sets the ghost's own presence (presence.go); a
// Subscription does nothing, as Matrix has no subscription handshake.
// Errors that retrying cannot fix are marked bridges.Permanent.
func (a *Adapter) Send(ctx context.Context, evt event.Event) (string, error) {
	if _, links := a.started(); links == nil {
		return "", errors.New("send to matrix: adapter not started")
	}
	switch evt.Kind() {
	case event.KindMessage:
		msg, ok := evt.(*event.Message)
		if !ok {
			return "", bridges.Permanent(fmt.Errorf("send to matrix: kind %s with type %T", evt.Kind(), evt))
		}
		return a.sendMessage(ctx, msg)
	case event.KindTopic:
		t, ok := evt.(*event.Topic)
		if !ok {
			return "", bridges.Permanent(fmt.Errorf("send to matrix: kind %s with type %T", evt.Kind(), evt))
		}
		return a.sendTopic(ctx, t)
	case event.KindFailure:
		f, ok := evt.(*event.Failure)
		if !ok {
			return "", bridges.Permanent(fmt.Errorf("send to matrix: kind %s with type %T", evt.Kind(), evt))
		}
		return a.sendFailure(ctx, f)
	case event.KindPresence:
		p, ok := evt.(*event.Presence)
		if !ok {
			return "", bridges.Permanent(fmt.Errorf("send to matrix: kind %s with type %T", evt.Kind(), evt))
		}
		return a.sendPresence(ctx, p)
	case event.KindSubscription:
		return "", nil
	case event.KindMember:
		m, ok := evt.(*event.Member)
		if !ok {
			return "", bridges.Permanent(fmt.Errorf("send to matrix: kind %s with type %T", evt.Kind(), evt))
		}
		return a.sendMember(ctx, m)
	default:
		return "", bridges.Permanent(fmt.Errorf("send to matrix: unsupported event kind %s", evt.Kind()))
	}
}

func (a *Adapter) sendMessage(ctx context.Context, msg *event.Message) (string, error) {
	if msg.Room {
		return a.sendToPortal(ctx, msg)
	}
	ghost, user, err := a.pair(msg.Header)
	if err != nil {
		return "", err
	}
	if err := a.ensureRegistered(ctx, ghost); err != nil {
		return "", a.classify(fmt.Errorf("register ghost %s: %w", ghost, err))
	}
	a.ensureDisplayName(ctx, ghost, msg.FromName)
	eventID, err := a.sendInDM(ctx, ghost, user, messageContent(msg), txnID(msg.ID))
	if err != nil {
		return "", err
	}
	return eventID.String(), nil
}

func (a *Adapter) sendFailure(ctx context.Context, f *event.Failure) (string, error) {
	if f.From.Network == event.Matrix && a.isPortal(f.From.ID) {
		return a.portalFailure(ctx, f, f.From.ID)
	}
	ghost, user, err := a.pair(f.Header)
	if err != nil {
		return "", err
	}
	if err := a.ensureRegistered(ctx, ghost); err != nil {
		return "", a.classify(fmt.Errorf("register ghost %s: %w", ghost, err))
	}
	txn := ""
	if f.EventID != "" || f.ID != "" {
		txn = txnID("failure|" + f.EventID + "|" + f.ID)
	}
	eventID, err := a.sendInDM(ctx, ghost, user, noticeContent(failureText(f)), txn)
	if err != nil {
		return "", err
	}
	return eventID.String(), nil
}

// failureText is the notice that tells a Matrix user about f.
func failureText(f *event.Failure) string {
	return "Your message could not be delivered: " + f.Explanation()
}

// pair checks the addresses of an outgoing event: From must be one of our
// ghosts, To a real Matrix user.
func (a *Adapter) pair(h event.Header) (ghost, user id.UserID, err error) {
	if h.From.Network != event.Matrix || h.To.Network != event.Matrix {
		return "", "", bridges.Permanent(fmt.Errorf("send to matrix: addresses %s → %s are not on matrix", h.From, h.To))
	}
	ghost, user = id.UserID(h.From.ID), id.UserID(h.To.ID)
	if !a.owns(ghost) || !validUserID(ghost.String()) {
		return "", "", bridges.Permanent(fmt.Errorf("send to matrix: sender %s is not a ghost of the appservice", ghost))
	}
	if !validUserID(user.String()) {
		return "", "", bridges.Permanent(fmt.Errorf("send to matrix: recipient %q is not a user ID", user))
	}
	if a.owns(user) {
		return "", "", bridges.Permanent(fmt.Errorf("send to matrix: recipient %s is a ghost of the appservice", user))
	}
	return ghost, user, nil
}

// owns reports whether u is the bot or in one of the ghost namespaces.
func (a *Adapter) owns(u id.UserID) bool {
	if u == a.bot {
		return true
	}
	for _, re := range a.namespaces {
		if re.MatchString(string(u)) {
			return true
		}
	}
	return false
}

// started returns what Start set, or nils before Start.
func (a *Adapter) started() (bridges.Host, bridges.Links) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.host, a.links
}

// listenAddr returns the address the listener is bound to (for tests).
func (a *Adapter) listenAddr() net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.addr
}

// client returns the client that acts as user through the as_token and
// ?user_id= (Matrix spec, Application Service API, "Identity assertion").
// mautrix does no retries of its own: the router retries.
func (a *Adapter) client(user id.UserID) *mautrix.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.clients[user]; ok {
		return c
	}
	c := a.newClient(user)
	a.clients[user] = c
	return c
}

func (a *Adapter) newClient(user id.UserID) *mautrix.Client {
	return &mautrix.Client{
		HomeserverURL:       a.hsURL,
		UserID:              user,
		AccessToken:         a.cfg.ASToken,
		SetAppServiceUserID: user != "",
		UserAgent:           "parley (" + mautrix.DefaultUserAgent + ")",
		Client:              a.httpClient,
		Log:                 a.zlog.With().Str("as_user_id", user.String()).Logger(),
		DefaultHTTPRetries:  0,
		IgnoreRateLimit:     true,
	}
}

// ensureRegistered registers user on the homeserver unless it is known to
// be registered (in memory, or from an earlier run in Links "ghost:"+mxid).
func (a *Adapter) ensureRegistered(ctx context.Context, user id.UserID) error {
	if done, err := a.isRegistered(ctx, user); err != nil || done {
		return err
	}
	if err := a.register(ctx, user); err != nil {
		return err
	}
	_, links := a.started()
	key := "ghost:" + user.String()
	if links != nil {
		if err := links.Put(ctx, key, time.Now().UTC().Format(time.RFC3339)); err != nil {
			return fmt.Errorf("write link %s: %w", key, err)
		}
	}
	a.markRegistered(user)
	return nil
}

// isRegistered reports whether the adapter has registered user, in this
// run or an earlier one (its link says so).
func (a *Adapter) isRegistered(ctx context.Context, user id.UserID) (bool, error) {
	a.mu.Lock()
	done := a.registered[user]
	a.mu.Unlock()
	if done {
		return true, nil
	}
	_, links := a.started()
	if links == nil {
		return false, nil
	}
	key := "ghost:" + user.String()
	if _, ok, err := links.Get(ctx, key); err != nil {
		return false, fmt.Errorf("read link %s: %w", key, err)
	} else if !ok {
		return false, nil
	}
	a.markRegistered(user)
	return true, nil
}

func (a *Adapter) markRegistered(user id.UserID) {
	a.mu.Lock()
	a.registered[user] = true
	a.mu.Unlock()
}

// register registers user with the appservice login type (Matrix spec,
// Application Service API, "Server admin style permissions"). A user that
// already exists is not an error.
func (a *Adapter) register(ctx context.Context, user id.UserID) error {
	local, _, err := AddressCodec{}.Split(user.String())
	if err != nil {
		return bridges.Permanent(err)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	c := a.newClient("")
	_, err = c.MakeRequest(ctx, http.MethodPost, c.BuildClientURL("v3", "register"), &mautrix.ReqRegister[any]{
		Username:     local,
		Type:         mautrix.AuthTypeAppservice,
		InhibitLogin: true,
	}, nil)
	if err != nil && !errors.Is(err, mautrix.MUserInUse) {
		return err
	}
	return nil
}

// ensureDisplayName sets ghost's display name to name when it is not empty
// and differs from the one last set (Links "name:"+mxid). Failures are
// logged, not returned: a stale name must not hold a message back.
func (a *Adapter) ensureDisplayName(ctx context.Context, ghost id.UserID, name string) {
	name = displayName(name)
	if name == "" {
		return
	}
	_, links := a.started()
	key := "name:" + ghost.String()
	if cur, ok, err := links.Get(ctx, key); err == nil && ok && cur == name {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if err := a.client(ghost).SetDisplayName(ctx, name); err != nil {
		a.log.Warn("set ghost display name", "ghost", ghost.String(), "err", err)
		return
	}
	if err := links.Put(ctx, key, name); err != nil {
		a.log.Warn("store ghost display name", "ghost", ghost.String(), "err", err)
	}
}

// maxDisplayName bounds a ghost's display name, in characters: Synapse
// refuses longer ones.
const maxDisplayName = 256

// displayName returns name as a ghost shows it: without control and
// formatting characters, and at most maxDisplayName characters.
func displayName(name string) string { return names.Clean(name, maxDisplayName) }

// connect checks that the homeserver accepts the as_token (registering the
// bot, then whoami as the bot) and reports the result as state, retrying
// with backoff until it succeeds; then the bot joins the portal rooms
// (joinPortals), again every portalWait while some are left out, and the
// loop waits for a kick (a Send that found the homeserver unreachable) to
// check again. It returns when ctx is done, closing done.
func (a *Adapter) connect(ctx context.Context, host bridges.Host, done chan struct{}) {
	defer close(done)
	attempt := 0
	for {
		err := a.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			host.SetState(event.Matrix, bridges.Connected, nil)
			a.log.Info("homeserver connected", "bot", a.bot.String())
			attempt = 0
			if !a.joinLoop(ctx) {
				return
			}
			continue
		}
		delay := a.backoff.Delay(attempt)
		attempt++
		switch {
		case isRefused(err):
			host.SetState(event.Matrix, bridges.BadCredentials, err)
			a.log.Error("homeserver refused the as_token", "err", err, "retry_in", delay)
		default:
			host.SetState(event.Matrix, bridges.Reconnecting, err)
			a.log.Warn("homeserver unreachable", "err", err, "retry_in", delay)
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

// joinLoop has the bot join the portal rooms, again every portalWait while
// some are left out, until a kick (it returns true) or the end of ctx
// (false).
func (a *Adapter) joinLoop(ctx context.Context) bool {
	t := time.NewTimer(a.portalWait)
	defer t.Stop()
	for {
		var retry <-chan time.Time
		if a.joinPortals(ctx) {
			t.Reset(a.portalWait)
			retry = t.C
		}
		select {
		case <-ctx.Done():
			return false
		case <-a.kick:
			return true
		case <-retry:
		}
	}
}

// probe registers the bot (if needed) and asks whoami as the bot.
func (a *Adapter) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if err := a.ensureRegistered(ctx, a.bot); err != nil {
		if isRefused(err) || isTransient(err) {
			return fmt.Errorf("register bot %s: %w", a.bot, err)
		}
		// Some homeservers create the sender user themselves and answer
		// oddly; whoami below says whether the bot works.
		a.log.Warn("register bot", "bot", a.bot.String(), "err", err)
	}
	resp, err := a.client(a.bot).Whoami(ctx)
	if err != nil {
		return fmt.Errorf("whoami as %s: %w", a.bot, err)
	}
	if resp.UserID != a.bot {
		a.log.Warn("homeserver says the bot is someone else", "bot", a.bot.String(), "whoami", resp.UserID.String())
	}
	return nil
}

// checkAgain asks the connect loop to probe the homeserver again.
func (a *Adapter) checkAgain() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// classify marks err, from a client-server call, for the router: 4xx
// answers other than 429 and token errors are permanent; 429, 5xx, token
// errors (the as_token may be fixed) and network errors are retried. A
// network or token error also asks the connect loop to check the
// homeserver, so that the state shows it.
func (a *Adapter) classify(err error) error {
	if err == nil {
		return nil
	}
	if bridges.IsPermanent(err) {
		return err
	}
	if isTokenError(err) || !hasResponse(err) {
		a.checkAgain()
		return err
	}
	if isTransient(err) {
		return err
	}
	return bridges.Permanent(err)
}

// status returns the HTTP status of a homeserver answer in err, or 0.
func status(err error) int {
	var herr mautrix.HTTPError
	if errors.As(err, &herr) && herr.Response != nil {
		return herr.Response.StatusCode
	}
	var rerr mautrix.RespError
	if errors.As(err, &rerr) {
		return rerr.StatusCode
	}
	return 0
}

func hasResponse(err error) bool { return status(err) != 0 }

// isTransient reports whether retrying the call that failed with err may
// succeed: no answer at all, 429 or 5xx.
func isTransient(err error) bool {
	s := status(err)
	return s == 0 || s == http.StatusTooManyRequests || s >= 500
}

// isTokenError reports whether the homeserver refused the as_token.
func isTokenError(err error) bool {
	return errors.Is(err, mautrix.MUnknownToken) || errors.Is(err, mautrix.MMissingToken) ||
		status(err) == http.StatusUnauthorized
}

// isRefused reports whether the homeserver refused the bot's requests in
// the probe: a token error, or 403 (the bot is not the appservice's).
func isRefused(err error) bool {
	return isTokenError(err) || status(err) == http.StatusForbidden
}
