package sip

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
)

// errStorage stands for a failing store.
var errStorage = bridgestest.ErrStorage

// fakeHost is a bridges.Host that records what the adapter asks of it.
type fakeHost struct {
	links *bridgestest.Links

	mu         sync.Mutex
	dispatched []event.Event
	// dispatchErr, when set, decides what Dispatch returns for evt (the
	// event is recorded only when it returns nil).
	dispatchErr func(evt event.Event) error
	states      []stateChange
	reachable   []event.Address
	// rooms are the portals' SIP addresses Rooms returns, members what
	// RoomMembers returns for any of them.
	rooms   []event.Address
	members []bridges.RoomMember

	stateCh     chan stateChange
	dispatchCh  chan event.Event
	reachableCh chan event.Address
}

type stateChange struct {
	State bridges.State
	Err   error
}

func newFakeHost() *fakeHost {
	return &fakeHost{
		links:       bridgestest.NewLinks(),
		stateCh:     make(chan stateChange, 100),
		dispatchCh:  make(chan event.Event, 100),
		reachableCh: make(chan event.Address, 100),
	}
}

func (h *fakeHost) Dispatch(_ context.Context, evt event.Event) error {
	h.mu.Lock()
	f := h.dispatchErr
	h.mu.Unlock()
	if f != nil {
		if err := f(evt); err != nil {
			return err
		}
	}
	h.mu.Lock()
	h.dispatched = append(h.dispatched, evt)
	h.mu.Unlock()
	h.dispatchCh <- evt
	return nil
}

func (h *fakeHost) SetState(n event.Network, s bridges.State, err error) {
	if n != event.SIP {
		panic("state of " + string(n))
	}
	h.mu.Lock()
	h.states = append(h.states, stateChange{s, err})
	h.mu.Unlock()
	select {
	case h.stateCh <- stateChange{s, err}:
	default:
	}
}

func (h *fakeHost) Links(n event.Network) bridges.Links {
	if n != event.SIP {
		panic("links of " + string(n))
	}
	return h.links
}

func (h *fakeHost) Profile(event.Address) string { return "" }

// RoomMembers implements bridges.RosterHost.
func (h *fakeHost) RoomMembers(_ context.Context, room event.Address) ([]bridges.RoomMember, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.rooms {
		if r == room {
			return h.members, nil
		}
	}
	return nil, bridges.ErrNoRoute
}

// Rooms implements bridges.RoomHost.
func (h *fakeHost) Rooms(n event.Network) []event.Address {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n != event.SIP {
		return nil
	}
	return h.rooms
}

func (h *fakeHost) Reachable(addr event.Address) {
	h.mu.Lock()
	h.reachable = append(h.reachable, addr)
	h.mu.Unlock()
	select {
	case h.reachableCh <- addr:
	default:
	}
}

func (h *fakeHost) events() []event.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]event.Event(nil), h.dispatched...)
}

func (h *fakeHost) setDispatchErr(f func(event.Event) error) {
	h.mu.Lock()
	h.dispatchErr = f
	h.mu.Unlock()
}

// waitDispatch waits for the next dispatched event.
func (h *fakeHost) waitDispatch(t *testing.T) *event.Message {
	t.Helper()
	select {
	case evt := <-h.dispatchCh:
		m, ok := evt.(*event.Message)
		if !ok {
			t.Fatalf("dispatched %T, want *event.Message", evt)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("nothing dispatched")
		return nil
	}
}

// waitState waits for the adapter to report s.
func (h *fakeHost) waitState(t *testing.T, s bridges.State) stateChange {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case c := <-h.stateCh:
			if c.State == s {
				return c
			}
		case <-timeout:
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("state %s not reported; got %v", s, h.states)
		}
	}
}

// Test accounts.
const (
	testDomain    = "parley.localhost"
	alicePassword = "alice-secret"
	bobPassword   = "bob-secret"
	peerUsername  = "pbx-trunk"
	peerPassword  = "trunk-secret"
)

// testConfig returns a configuration for tests: users alice (password) and
// bob (HA1), a trusted peer "pbx" by address (192.0.2.10, not loopback),
// and a peer "trunk" with credentials for the domain pbx.example.org.
func testConfig() Config {
	return Config{
		Domain: testDomain,
		Listen: []string{"udp:127.0.0.1:0", "tcp:127.0.0.1:0"},
		Users: map[string]User{
			"alice": {Password: alicePassword},
			"bob":   {HA1: ha1("bob", testDomain, bobPassword)},
		},
		TrustedPeers: []TrustedPeer{
			{Name: "pbx", Addresses: []string{"192.0.2.10", "198.51.100.0/24"}},
			{Name: "trunk", Username: peerUsername, Password: peerPassword, Domains: []string{"pbx.example.org"}},
		},
	}
}

// testLogger logs to the test output when -v and PARLEY_SIP_LOG are set.
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("PARLEY_SIP_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testAdapter is a started adapter with its fake host.
type testAdapter struct {
	*Adapter
	host *fakeHost
	udp  string // host:port of the UDP listener
	tcp  string // host:port of the TCP listener
}

// startAdapter starts an adapter for cfg (testConfig when nil is passed to
// edit) on fresh loopback ports, with host (a new one when nil), and stops
// it at the end of the test.
func startAdapter(t *testing.T, host *fakeHost, edit func(*Config)) *testAdapter {
	t.Helper()
	cfg := testConfig()
	if edit != nil {
		edit(&cfg)
	}
	if host == nil {
		host = newFakeHost()
	}
	a, err := New(cfg, WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	a.sendTimeout = 5 * time.Second
	if err := a.Start(context.Background(), host); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	host.waitState(t, bridges.Connected)
	ta := &testAdapter{Adapter: a, host: host}
	for _, s := range a.Addrs() {
		network, addr, _ := strings.Cut(s, ":")
		switch network {
		case "udp":
			ta.udp = addr
		case "tcp":
			ta.tcp = addr
		}
	}
	return ta
}

// peerUA is a SIP user agent for tests: a sipgo client, and a server that
// records the MESSAGEs it receives and answers them with status.
type peerUA struct {
	t      *testing.T
	ua     *sipgo.UserAgent
	client *sipgo.Client
	srv    *sipgo.Server
	addr   string // host:port of its UDP listener, when listening

	mu       sync.Mutex
	status   int
	received chan *sip.Request
}

func newPeerUA(t *testing.T, opts ...sipgo.UserAgentOption) *peerUA {
	t.Helper()
	opts = append([]sipgo.UserAgentOption{sipgo.WithUserAgent("test-ua"), sipgo.WithUserAgentHostname("127.0.0.1"),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(testLogger(t))),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(testLogger(t)))}, opts...)
	ua, err := sipgo.NewUA(opts...)
	if err != nil {
		t.Fatal(err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	p := &peerUA{t: t, ua: ua, client: client, srv: srv, status: 200, received: make(chan *sip.Request, 100)}
	srv.OnMessage(func(req *sip.Request, tx sip.ServerTransaction) {
		p.mu.Lock()
		status := p.status
		p.mu.Unlock()
		p.received <- req
		_ = tx.Respond(sip.NewResponseFromRequest(req, status, "Test", nil))
	})
	t.Cleanup(func() { _ = ua.Close() })
	return p
}

// listenUDP makes the peer listen on a loopback UDP port.
func (p *peerUA) listenUDP() {
	p.t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		p.t.Fatal(err)
	}
	p.addr = pc.LocalAddr().String()
	go func() { _ = p.srv.ServeUDP(pc) }()
	p.t.Cleanup(func() { _ = pc.Close() })
}

// listenUDPAndTCP makes the peer listen on a loopback port over both UDP
// and TCP.
func (p *peerUA) listenUDPAndTCP() {
	p.t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			p.t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			_ = pc.Close()
			continue
		}
		p.addr = pc.LocalAddr().String()
		go func() { _ = p.srv.ServeUDP(pc) }()
		go func() { _ = p.srv.ServeTCP(ln) }()
		p.t.Cleanup(func() { _ = pc.Close(); _ = ln.Close() })
		return
	}
	p.t.Fatal("no port free over both UDP and TCP")
}

func (p *peerUA) setStatus(code int) {
	p.mu.Lock()
	p.status = code
	p.mu.Unlock()
}

// waitMessage waits for the next MESSAGE the peer receives.
func (p *peerUA) waitMessage() *sip.Request {
	p.t.Helper()
	select {
	case req := <-p.received:
		return req
	case <-time.After(10 * time.Second):
		p.t.Fatal("the peer received no MESSAGE")
		return nil
	}
}

// do sends req and returns the final response.
func (p *peerUA) do(req *sip.Request) *sip.Response {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.client.Do(ctx, req)
	if err != nil {
		p.t.Fatalf("%s: %v", req.Method, err)
	}
	return res
}

// doAuth sends req, answers a 401 or 407 with the credentials, and returns
// the final response.
func (p *peerUA) doAuth(req *sip.Request, user, password string) *sip.Response {
	p.t.Helper()
	res := p.do(req)
	if res.StatusCode != 401 && res.StatusCode != 407 {
		return res
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: user, Password: password})
	if err != nil {
		p.t.Fatalf("%s with credentials: %v", req.Method, err)
	}
	return res
}

// newRequest builds a request to the adapter at addr over transport, with
// the given Request-URI, From and To.
func newRequest(method sip.RequestMethod, transport, addr, ruri, from, to string) *sip.Request {
	var u sip.Uri
	if err := sip.ParseUri(ruri, &u); err != nil {
		panic(err)
	}
	req := sip.NewRequest(method, u)
	var fu, tu sip.Uri
	if err := sip.ParseUri(from, &fu); err != nil {
		panic(err)
	}
	if err := sip.ParseUri(to, &tu); err != nil {
		panic(err)
	}
	fh := &sip.FromHeader{Address: fu, Params: sip.NewParams()}
	fh.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(fh)
	req.AppendHeader(&sip.ToHeader{Address: tu})
	req.SetTransport(transport)
	req.SetDestination(addr)
	return req
}

// newMessage builds a text/plain MESSAGE.
func newMessage(transport, addr, from, to, body string) *sip.Request {
	req := newRequest(sip.MESSAGE, transport, addr, to, from, to)
	req.AppendHeader(sip.NewHeader("Content-Type", "text/plain;charset=UTF-8"))
	req.SetBody([]byte(body))
	return req
}

// newRegister builds a REGISTER of user's AOR with contact.
func newRegister(transport, addr, user, contact string, expires int) *sip.Request {
	aor := "sip:" + user + "@" + testDomain
	req := newRequest(sip.REGISTER, transport, addr, "sip:"+testDomain, aor, aor)
	if contact != "" {
		req.AppendHeader(sip.NewHeader("Contact", contact))
	}
	if expires >= 0 {
		req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	}
	return req
}
