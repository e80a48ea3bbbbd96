package xmpp

import (
	"context"
	"crypto/sha1" // #nosec G505 -- XEP-0114 prescribes SHA-1
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

const testTimeout = 5 * time.Second

// fakeServer is the component listener of an XMPP server: it speaks the
// XEP-0114 handshake and then exchanges raw stanzas with the test.
type fakeServer struct {
	t      *testing.T
	ln     net.Listener
	domain string

	mu     sync.Mutex
	secret string
	silent bool // accept TCP but never answer
	// readDelay is how long each connection waits after reading a
	// stanza: a slow server.
	readDelay time.Duration
	nextID    int
	conns     chan *fakeConn // authenticated connections
	refused   chan struct{}  // one per refused handshake
	wg        sync.WaitGroup
}

func newFakeServer(t *testing.T, secret string) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{
		t: t, ln: ln, domain: "matrix.localhost", secret: secret,
		conns: make(chan *fakeConn, 16), refused: make(chan struct{}, 64),
	}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) setSecret(secret string) {
	s.mu.Lock()
	s.secret = secret
	s.mu.Unlock()
}

func (s *fakeServer) accept() {
	defer s.wg.Done()
	var open []net.Conn
	defer func() {
		for _, c := range open {
			_ = c.Close()
		}
	}()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		open = append(open, c)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
		}()
	}
}

func (s *fakeServer) serve(c net.Conn) {
	s.mu.Lock()
	secret, silent, readDelay := s.secret, s.silent, s.readDelay
	s.nextID++
	streamID := fmt.Sprintf("stream-%d", s.nextID)
	s.mu.Unlock()

	d := xml.NewDecoder(c)
	start, err := nextStart(d)
	if err != nil || start.Name.Local != "stream" {
		_ = c.Close()
		return
	}
	if silent {
		_, _ = io.Copy(io.Discard, c)
		return
	}
	var to string
	for _, a := range start.Attr {
		if a.Name.Local == "to" {
			to = a.Value
		}
	}
	if to != s.domain {
		s.t.Errorf("stream header to %q, want %q", to, s.domain)
	}
	_, _ = fmt.Fprintf(c, `<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='%s' from='%s'>`, streamID, s.domain)

	var hs struct {
		XMLName xml.Name `xml:"handshake"`
		Digest  string   `xml:",chardata"`
	}
	if start, err = nextStart(d); err != nil {
		_ = c.Close()
		return
	}
	if err := d.DecodeElement(&hs, &start); err != nil {
		_ = c.Close()
		return
	}
	sum := sha1.Sum([]byte(streamID + secret)) // #nosec G401
	if hs.Digest != hex.EncodeToString(sum[:]) {
		_, _ = io.WriteString(c, `<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Given token does not match calculated token</text></stream:error></stream:stream>`)
		_ = c.Close()
		s.refused <- struct{}{}
		return
	}
	_, _ = io.WriteString(c, `<handshake/>`)

	fc := &fakeConn{conn: c, stanzas: make(chan rawStanza, 256), ended: make(chan struct{}), readDelay: readDelay}
	s.conns <- fc
	fc.read(d)
}

func nextStart(d *xml.Decoder) (xml.StartElement, error) {
	for {
		tok, err := d.Token()
		if err != nil {
			return xml.StartElement{}, err
		}
		if s, ok := tok.(xml.StartElement); ok {
			return s, nil
		}
	}
}

// next returns the next authenticated connection.
func (s *fakeServer) next(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(testTimeout):
		t.Fatal("no component connection")
		return nil
	}
}

// fakeConn is one authenticated component stream, server side.
type fakeConn struct {
	conn       net.Conn
	mu         sync.Mutex
	stanzas    chan rawStanza
	ended      chan struct{} // closed when the component closed its stream
	noCloseAck bool          // do not answer the component's </stream:stream>
	pings      atomic.Int32  // delivery-barrier pings answered
	noPong     atomic.Bool   // leave the pings unanswered
	readDelay  time.Duration // see fakeServer.readDelay
}

// rawStanza is a stanza the component sent.
type rawStanza struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Inner   string     `xml:",innerxml"`
}

func (r rawStanza) attr(name string) string {
	for _, a := range r.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func (c *fakeConn) read(d *xml.Decoder) {
	defer close(c.stanzas)
	for {
		tok, err := d.Token()
		if err != nil {
			_ = c.conn.Close()
			return
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			var r rawStanza
			if err := d.DecodeElement(&r, &tok); err != nil {
				_ = c.conn.Close()
				return
			}
			time.Sleep(c.readDelay)
			if r.XMLName.Local == "iq" && r.attr("type") == "get" && strings.Contains(r.Inner, "urn:xmpp:ping") && !strings.Contains(r.attr("to"), "/") {
				// Like a real server, answer the adapter's delivery
				// barrier (a ping to the server, not a self-ping of an
				// occupant); tests see only the other stanzas.
				if c.noPong.Load() {
					continue
				}
				c.pings.Add(1)
				c.write(fmt.Sprintf(`<iq type="result" id=%q from=%q to=%q/>`, r.attr("id"), r.attr("to"), r.attr("from")))
				continue
			}
			c.stanzas <- r
		case xml.EndElement: // </stream:stream>
			close(c.ended)
			c.mu.Lock()
			ack := !c.noCloseAck
			c.mu.Unlock()
			if ack {
				c.write("</stream:stream>")
				_ = c.conn.Close()
			}
			return
		}
	}
}

func (c *fakeConn) write(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = io.WriteString(c.conn, s)
}

// recv returns the next stanza the component sent.
func (c *fakeConn) recv(t *testing.T) rawStanza {
	t.Helper()
	select {
	case r, ok := <-c.stanzas:
		if !ok {
			t.Fatal("connection ended before a stanza came")
		}
		return r
	case <-time.After(testTimeout):
		t.Fatal("no stanza from the component")
		return rawStanza{}
	}
}

// startAdapter starts an adapter against addr with a fast backoff.
func startAdapter(t *testing.T, addr, secret string) (*Adapter, *fakeHost) {
	t.Helper()
	h := newFakeHost()
	return startAdapterWith(t, addr, secret, h), h
}

// startAdapterWith is startAdapter with the host h.
func startAdapterWith(t *testing.T, addr, secret string, h bridges.Host) *Adapter {
	t.Helper()
	cfg := validConfig()
	cfg.Server, cfg.Secret = addr, secret
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.backoff = backoff{Backoff: bridges.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}, reset: time.Hour}
	if err := a.Start(t.Context(), h); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = a.Stop(ctx)
	})
	return a
}

// nextState returns the next state the adapter reported.
func nextState(t *testing.T, h *fakeHost) stateChange {
	t.Helper()
	select {
	case s := <-h.states:
		return s
	case <-time.After(testTimeout):
		t.Fatal("no state reported")
		return stateChange{}
	}
}

// wantState fails unless the next state reported is want.
func wantState(t *testing.T, h *fakeHost, want bridges.State) stateChange {
	t.Helper()
	s := nextState(t, h)
	if s.state != want {
		t.Fatalf("state %s (%v), want %s", s.state, s.err, want)
	}
	return s
}

func TestAdapterExchange(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	a, h := startAdapter(t, srv.addr(), "s3cret")
	wantState(t, h, bridges.Starting)
	c := srv.next(t)
	wantState(t, h, bridges.Connected)

	// Inbound: a message with a receipt request is dispatched, then
	// acknowledged.
	c.write(`<message type="chat" id="m1" from="alice@localhost/phone" to="` + ghost + `"><body>hello</body><request xmlns="urn:xmpp:receipts"/></message>`)
	select {
	case evt := <-h.dispatched:
		m, ok := evt.(*event.Message)
		if !ok || m.ID != "alice@localhost/m1" || m.Body != "hello" || m.From.ID != "alice@localhost" || m.To.ID != ghost {
			t.Fatalf("dispatched %+v", evt)
		}
	case <-time.After(testTimeout):
		t.Fatal("nothing dispatched")
	}
	r := c.recv(t)
	if r.XMLName.Local != "message" || r.attr("to") != "alice@localhost/phone" || r.attr("from") != ghost ||
		!strings.Contains(r.Inner, `<received xmlns="urn:xmpp:receipts" id="m1">`) {
		t.Fatalf("want a receipt, got %+v", r)
	}

	// Inbound IQ: answered.
	c.write(`<iq type="get" id="q1" from="alice@localhost/phone" to="matrix.localhost"><query xmlns="http://jabber.org/protocol/disco#info"/></iq>`)
	r = c.recv(t)
	if r.XMLName.Local != "iq" || r.attr("type") != "result" || r.attr("id") != "q1" || !strings.Contains(r.Inner, `category="gateway"`) {
		t.Fatalf("want a disco#info result, got %+v", r)
	}

	// Outbound.
	m := &event.Message{
		Header: event.Header{ID: "$ev:matrix.org", From: xmppAddr(ghost), To: xmppAddr("alice@localhost"), FromName: "Bob"},
		Body:   "hi there",
	}
	id, err := a.Send(t.Context(), m)
	if err != nil || id != stableID(m.ID) {
		t.Fatalf("Send = %q, %v; want %q", id, err, stableID(m.ID))
	}
	if c.pings.Load() == 0 {
		t.Error("Send returned before the server answered the delivery barrier")
	}
	r = c.recv(t)
	if r.XMLName.Space != "jabber:component:accept" || r.attr("id") != id || r.attr("from") != ghost || r.attr("to") != "alice@localhost" || r.attr("type") != "chat" ||
		!strings.Contains(r.Inner, "<body>hi there</body>") || !strings.Contains(r.Inner, "Bob</nick>") {
		t.Fatalf("sent %+v", r)
	}

	// A failure goes to the resource that sent the message.
	f := &event.Failure{
		Header:    event.Header{ID: "f1", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")},
		EventID:   "alice@localhost/m1",
		Reason:    "no such Matrix user",
		Condition: event.NoRecipient,
	}
	if _, err := a.Send(t.Context(), f); err != nil {
		t.Fatalf("Send(failure): %v", err)
	}
	r = c.recv(t)
	if r.attr("type") != "error" || r.attr("id") != "m1" || r.attr("to") != "alice@localhost/phone" || !strings.Contains(r.Inner, "item-not-found") {
		t.Fatalf("sent %+v", r)
	}

	// Stop closes the stream and reports Stopped.
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-c.ended:
	default:
		t.Error("stream not closed by Stop")
	}
	wantState(t, h, bridges.Stopped)
	if _, err := a.Send(t.Context(), m); !errors.Is(err, errNotConnected) {
		t.Errorf("Send after Stop = %v, want errNotConnected", err)
	}
	select {
	case s := <-h.states:
		t.Errorf("state %s reported after Stopped", s.state)
	default:
	}
}

// TestAdapterBarrierOnWritingSession: the delivery barrier must be answered
// on the connection the stanza was written to. When that connection ends
// before it answers, and a new one is up, an answer on the new one would say
// nothing of the stanza: Send must fail, so that the router sends it again.
func TestAdapterBarrierOnWritingSession(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	a, h := startAdapter(t, srv.addr(), "s3cret")
	wantState(t, h, bridges.Starting)
	first := srv.next(t)
	wantState(t, h, bridges.Connected)
	var second *fakeConn
	first.noPong.Store(true) // the connection ends before it answers
	a.afterWrite = func() {
		a.afterWrite = nil
		// The connection ends with the stanza unanswered; a new one
		// comes up, and would answer a barrier.
		_ = first.conn.Close()
		wantState(t, h, bridges.Reconnecting)
		second = srv.next(t)
		wantState(t, h, bridges.Connected)
	}
	m := &event.Message{
		Header: event.Header{ID: "$ev:matrix.org", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")},
		Body:   "lost?",
	}
	if _, err := a.Send(t.Context(), m); err == nil {
		t.Fatal("Send reported delivered a stanza written into a connection that ended, on a barrier answered by the next one")
	}
	if n := second.pings.Load(); n != 0 {
		t.Errorf("the new connection answered %d barrier pings for a stanza it never carried", n)
	}
	// Sent again, it goes through the new connection.
	if _, err := a.Send(t.Context(), m); err != nil {
		t.Fatalf("Send again: %v", err)
	}
	if r := second.recv(t); r.attr("id") != stableID(m.ID) {
		t.Errorf("the new connection got %+v", r)
	}
}

func TestAdapterReconnects(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	_, h := startAdapter(t, srv.addr(), "s3cret")
	wantState(t, h, bridges.Starting)
	c := srv.next(t)
	wantState(t, h, bridges.Connected)

	// The server goes away abruptly.
	_ = c.conn.Close()
	s := wantState(t, h, bridges.Reconnecting)
	if s.err == nil {
		t.Error("Reconnecting without a reason")
	}
	c = srv.next(t)
	wantState(t, h, bridges.Connected)

	// The server closes the stream cleanly.
	c.write("</stream:stream>")
	wantState(t, h, bridges.Reconnecting)
	srv.next(t)
	wantState(t, h, bridges.Connected)
}

func TestAdapterServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now

	a, h := startAdapter(t, addr, "s3cret")
	wantState(t, h, bridges.Starting)
	for range 3 {
		s := wantState(t, h, bridges.Reconnecting)
		if s.err == nil || !strings.Contains(s.err.Error(), addr) {
			t.Errorf("Reconnecting with %v, want the address in the reason", s.err)
		}
	}

	m := &event.Message{Header: event.Header{ID: "1", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")}, Body: "x"}
	begin := time.Now()
	_, err = a.Send(t.Context(), m)
	if !errors.Is(err, errNotConnected) || bridges.IsPermanent(err) {
		t.Errorf("Send = %v, want a non-permanent errNotConnected", err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("Send took %v while disconnected", d)
	}
}

func TestAdapterBadCredentials(t *testing.T) {
	srv := newFakeServer(t, "right")
	_, h := startAdapter(t, srv.addr(), "wrong")
	wantState(t, h, bridges.Starting)
	for range 2 {
		s := wantState(t, h, bridges.BadCredentials)
		if !errors.Is(s.err, errSecretRefused) || !strings.Contains(s.err.Error(), "refused the component secret") {
			t.Fatalf("BadCredentials with %v", s.err)
		}
	}
	// The admin fixes the server: the adapter, still retrying, gets in.
	srv.setSecret("wrong")
	for {
		s := nextState(t, h)
		if s.state == bridges.Connected {
			break
		}
		if s.state != bridges.BadCredentials {
			t.Fatalf("state %s (%v) while retrying", s.state, s.err)
		}
	}
	srv.next(t)
}

func TestAdapterStopWhileHandshaking(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	srv.mu.Lock()
	srv.silent = true
	srv.mu.Unlock()
	a, h := startAdapter(t, srv.addr(), "s3cret")
	wantState(t, h, bridges.Starting)
	time.Sleep(50 * time.Millisecond) // let it connect and wait for the server
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	begin := time.Now()
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("Stop took %v", d)
	}
	wantState(t, h, bridges.Stopped)
}

func TestAdapterStopDeadline(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	a, h := startAdapter(t, srv.addr(), "s3cret")
	wantState(t, h, bridges.Starting)
	c := srv.next(t)
	c.mu.Lock()
	c.noCloseAck = true // the server never closes its side
	c.mu.Unlock()
	wantState(t, h, bridges.Connected)

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := a.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want the context's deadline", err)
	}
	wantState(t, h, bridges.Stopped)
	select {
	case <-a.done:
	case <-time.After(testTimeout):
		t.Fatal("connection goroutine still running")
	}
}

func TestAdapterConcurrentSend(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	a, h := startAdapter(t, srv.addr(), "s3cret")
	wantState(t, h, bridges.Starting)
	c := srv.next(t)
	wantState(t, h, bridges.Connected)

	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			m := &event.Message{
				Header: event.Header{ID: fmt.Sprint("ev", i), From: xmppAddr(ghost), To: xmppAddr("alice@localhost")},
				Body:   strings.Repeat("x", 1+1000*i),
			}
			if _, err := a.Send(t.Context(), m); err != nil {
				t.Errorf("Send %d: %v", i, err)
			}
		})
	}
	// Meanwhile, inbound traffic with replies.
	for i := range 10 {
		c.write(fmt.Sprintf(`<iq type="get" id="q%d" from="alice@localhost/phone" to="matrix.localhost"><query xmlns="http://jabber.org/protocol/disco#items"/></iq>`, i))
	}
	seen := map[string]bool{}
	for range n + 10 {
		r := c.recv(t)
		seen[r.attr("id")] = true
	}
	wg.Wait()
	for i := range n {
		if id := stableID(fmt.Sprint("ev", i)); !seen[id] {
			t.Errorf("message %d (%s) not received", i, id)
		}
	}
}

func TestAdapterLifecycleErrors(t *testing.T) {
	a := newTestAdapter(t)
	if err := a.Stop(t.Context()); err != nil {
		t.Errorf("Stop before Start = %v", err)
	}
	if err := a.Start(t.Context(), nil); err == nil {
		t.Error("Start(nil host) = nil")
	}
	if err := a.Start(t.Context(), newFakeHost()); err == nil {
		t.Error("Start after Stop = nil, want an error")
	}

	srv := newFakeServer(t, "s3cret")
	b, h := startAdapter(t, srv.addr(), "s3cret")
	if err := b.Start(t.Context(), h); err == nil {
		t.Error("second Start = nil, want an error")
	}
	if b.Network() != event.XMPP {
		t.Errorf("Network() = %q", b.Network())
	}
}

func TestAdapterStartContextDoesNotStop(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	cfg := validConfig()
	cfg.Server = srv.addr()
	cfg.Secret = "s3cret"
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := newFakeHost()
	ctx, cancel := context.WithCancel(t.Context())
	if err := a.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	cancel()
	defer func() { _ = a.Stop(context.Background()) }()
	wantState(t, h, bridges.Starting)
	srv.next(t)
	wantState(t, h, bridges.Connected)
}

// TestAdapterBurstOnSlowServer: when many Sends queue behind a server that
// reads slowly, each one's write timeout starts only with its turn. Before,
// the late ones timed out while queueing, and each timeout dropped the
// connection.
func TestAdapterBurstOnSlowServer(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	srv.mu.Lock()
	srv.readDelay = 5 * time.Millisecond
	srv.mu.Unlock()
	a, h := startAdapter(t, srv.addr(), "s3cret")
	a.writeTimeout = time.Second
	wantState(t, h, bridges.Starting)
	c := srv.next(t)
	wantState(t, h, bridges.Connected)

	const n = 400
	status := strings.Repeat("x", 40000) // 16 MB in all: more than the socket buffers hold
	errs := make(chan error, n)
	for i := range n {
		go func() {
			p := &event.Presence{Header: event.Header{ID: fmt.Sprint("p", i), From: xmppAddr(ghost), To: xmppAddr(fmt.Sprintf("u%d@localhost", i))},
				State: event.Away, Status: status}
			_, err := a.Send(t.Context(), p)
			errs <- err
		}()
	}
	// The server takes a stanza every 5 ms: 2 s in all, well past the
	// write timeout of the last writer counted from its Send.
	for range n {
		c.recv(t)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	select {
	case s := <-h.states:
		t.Errorf("state changed to %s (%v) during the burst", s.state, s.err)
	default:
	}
}

// TestAdapterProbesAfterRestart: a ghost that asked a user for their
// presence probes them when a new adapter (Parley restarted) connects, as
// Parley keeps no presence across a restart; once the subscription is
// cancelled, it no longer does.
func TestAdapterProbesAfterRestart(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	a, h := startAdapter(t, srv.addr(), "s3cret")
	wantState(t, h, bridges.Starting)
	c := srv.next(t)
	wantState(t, h, bridges.Connected)
	sub := &event.Subscription{Header: event.Header{ID: "s1", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")}, Active: true}
	if _, err := a.Send(t.Context(), sub); err != nil {
		t.Fatal(err)
	}
	if r := c.recv(t); r.attr("type") != "subscribe" {
		t.Fatalf("sent %+v, want a subscription request", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	restart := func() (*Adapter, *fakeConn) {
		t.Helper()
		h2 := newFakeHost()
		h2.links = h.links // the same store
		b := startAdapterWith(t, srv.addr(), "s3cret", h2)
		return b, srv.next(t)
	}
	b, c2 := restart()
	r := c2.recv(t)
	if r.XMLName.Local != "presence" || r.attr("type") != "probe" || r.attr("from") != ghost || r.attr("to") != "alice@localhost" {
		t.Fatalf("after the restart the server got %+v, want a probe of alice@localhost from %s", r, ghost)
	}

	sub.ID, sub.Active = "s2", false
	if _, err := b.Send(t.Context(), sub); err != nil {
		t.Fatal(err)
	}
	if r := c2.recv(t); r.attr("type") != "unsubscribe" {
		t.Fatalf("sent %+v, want unsubscribe", r)
	}
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	_, c3 := restart()
	select {
	case r, ok := <-c3.stanzas:
		if ok {
			t.Errorf("after the cancellation and a restart the server got %+v", r)
		}
	case <-time.After(300 * time.Millisecond):
	}
}
