package xmpp

import (
	"context"
	"encoding/xml"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/peertest"
)

// These tests connect the adapter to a real Prosody (started by peertest)
// and exchange messages with real XMPP clients: a minimal mellium client
// (c2sClient, which sees every message stanza) and slixmpp (peertest). They
// are skipped in short mode, and when Prosody or slixmpp is missing (failed
// under $CI).

const integrationGhost = "bob@matrix.localhost"

// startProsody starts Prosody with the component domain of validConfig.
func startProsody(t *testing.T) *peertest.Prosody {
	t.Helper()
	if testing.Short() {
		t.Skip("short mode: integration tests need a real Prosody")
	}
	return peertest.StartProsody(t, peertest.ProsodyOptions{ComponentDomain: "matrix.localhost", ComponentSecret: "component-secret"})
}

// waitFor returns the first state reported that is want, failing on any
// state that is not in allowed.
func waitFor(t *testing.T, h *fakeHost, want bridges.State, allowed ...bridges.State) stateChange {
	t.Helper()
	for {
		s := nextState(t, h)
		if s.state == want {
			return s
		}
		ok := false
		for _, a := range allowed {
			ok = ok || s.state == a
		}
		if !ok {
			t.Fatalf("state %s (%v) while waiting for %s", s.state, s.err, want)
		}
	}
}

func nextDispatch(t *testing.T, h *fakeHost) *event.Message {
	t.Helper()
	select {
	case evt := <-h.dispatched:
		m, ok := evt.(*event.Message)
		if !ok {
			t.Fatalf("dispatched %T", evt)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("nothing dispatched")
		return nil
	}
}

// c2sClient is a minimal XMPP client logged in to Prosody over plain c2s
// (SASL PLAIN, no TLS: Prosody allows it on loopback in peertest).
type c2sClient struct {
	jid  jid.JID // full JID, after binding
	sess *xmpp.Session
	msgs chan c2sMessage
	pres chan c2sPresence
}

// c2sPresence is what the tests read of a presence a c2sClient got.
type c2sPresence struct {
	From   string `xml:"from,attr"`
	Type   string `xml:"type,attr"`
	Show   string `xml:"show"`
	Status string `xml:"status"`
}

// c2sMessage is what the tests read of a message a c2sClient got.
type c2sMessage struct {
	ID       string `xml:"id,attr"`
	From     string `xml:"from,attr"`
	To       string `xml:"to,attr"`
	Type     string `xml:"type,attr"`
	Body     string `xml:"body"`
	Received *struct {
		ID string `xml:"id,attr"`
	} `xml:"urn:xmpp:receipts received"`
	Error *stanza.Error `xml:"error"`
}

func dialC2S(t *testing.T, p *peertest.Prosody, user, password string) *c2sClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	addr := jid.MustParse(user + "@" + p.Domain)
	conn, err := net.Dial("tcp", p.C2SAddr)
	if err != nil {
		t.Fatal(err)
	}
	// Claim a secure stream so that mellium offers PLAIN without TLS.
	sess, err := xmpp.NewSession(ctx, addr.Domain(), addr, conn, xmpp.Secure, xmpp.NewNegotiator(
		func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
			return xmpp.StreamConfig{Features: []xmpp.StreamFeature{
				xmpp.SASL("", password, sasl.Plain),
				xmpp.BindResource(),
			}}
		}))
	if err != nil {
		_ = conn.Close()
		t.Fatalf("log in %s: %v", addr, err)
	}
	c := &c2sClient{jid: sess.LocalAddr(), sess: sess, msgs: make(chan c2sMessage, 64), pres: make(chan c2sPresence, 64)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = sess.Serve(xmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			if start.Name.Local == "presence" {
				var p c2sPresence
				if err := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), r)).Decode(&p); err == nil {
					select {
					case c.pres <- p:
					default: // nobody reads presence: drop it
					}
				}
				return nil
			}
			if start.Name.Local != "message" {
				return nil
			}
			var m c2sMessage
			if err := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), r)).Decode(&m); err == nil {
				c.msgs <- m
			}
			return nil
		}))
	}()
	t.Cleanup(func() {
		_ = sess.Close()
		_ = conn.Close()
		<-served
	})
	if err := sess.Send(ctx, stanza.Presence{}.Wrap(nil)); err != nil {
		t.Fatalf("send presence: %v", err)
	}
	return c
}

// send sends a chat message, asking for a receipt when receipt is set.
func (c *c2sClient) send(t *testing.T, to, id, body string, receipt bool) {
	t.Helper()
	payload := []xml.TokenReader{element(xml.Name{Local: "body"}, nil, xmlstream.Token(xml.CharData(body)))}
	if receipt {
		payload = append(payload, element(xml.Name{Space: nsReceipts, Local: "request"}, nil))
	}
	m := stanza.Message{ID: id, To: jid.MustParse(to), Type: stanza.ChatMessage}
	if err := c.sess.Send(t.Context(), m.Wrap(xmlstream.MultiReader(payload...))); err != nil {
		t.Fatalf("send message: %v", err)
	}
}

// next returns the next message stanza the client got.
func (c *c2sClient) next(t *testing.T) c2sMessage {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("%s got no message", c.jid)
		return c2sMessage{}
	}
}

func TestProsodyInbound(t *testing.T) {
	p := startProsody(t)
	p.Register(t, "alice", "alicepass")
	_, h := startAdapter(t, p.ComponentAddr, p.ComponentSecret)
	waitFor(t, h, bridges.Connected, bridges.Starting, bridges.Reconnecting)
	alice := dialC2S(t, p, "alice", "alicepass")

	// XMPP → Parley, acknowledged with a receipt once dispatched.
	alice.send(t, integrationGhost, "m1", "hello bob", true)
	m := nextDispatch(t, h)
	if m.ID != "alice@localhost/m1" || m.From != xmppAddr("alice@localhost") || m.To != xmppAddr(integrationGhost) || m.Body != "hello bob" {
		t.Fatalf("dispatched %+v", m)
	}
	r := alice.next(t)
	if r.From != integrationGhost || r.Received == nil || r.Received.ID != "m1" {
		t.Errorf("want a receipt, got %+v", r)
	}

	// A message the core cannot route is answered with an error.
	h.setDispatch(func(event.Event) error { return fmt.Errorf("route: %w", bridges.ErrNoRoute) })
	alice.send(t, integrationGhost, "m2", "anyone?", true)
	nextDispatch(t, h)
	r = alice.next(t)
	if r.Type != "error" || r.ID != "m2" || r.From != integrationGhost || r.Error == nil || r.Error.Condition != stanza.ItemNotFound {
		t.Errorf("want an item-not-found error, got %+v", r)
	}
}

func TestProsodyOutbound(t *testing.T) {
	p := startProsody(t)
	p.Register(t, "alice", "alicepass")
	p.Register(t, "carol", "carolpass")
	a, h := startAdapter(t, p.ComponentAddr, p.ComponentSecret)
	waitFor(t, h, bridges.Connected, bridges.Starting, bridges.Reconnecting)

	// Parley → XMPP, to a third-party client.
	carol := peertest.ConnectXMPP(t, p, "carol", "carolpass")
	msg := &event.Message{
		Header: event.Header{ID: "$ev1:matrix.org", From: xmppAddr(integrationGhost), To: xmppAddr("carol@localhost"), FromName: "Bob (Matrix)"},
		Body:   "hi carol",
	}
	id, err := a.Send(t.Context(), msg)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, ok := carol.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "message" })
	if !ok || got.From != integrationGhost || got.Body != "hi carol" || got.Nick != "Bob (Matrix)" || got.ID != id {
		t.Errorf("carol got %+v, %t", got, ok)
	}

	// A delivery failure reported later reaches the client that sent the
	// message, though Parley addresses it to the bare JID (to which the
	// server would not deliver an error).
	alice := dialC2S(t, p, "alice", "alicepass")
	alice.send(t, integrationGhost, "m3", "this will fail", false)
	m := nextDispatch(t, h)
	f := &event.Failure{
		Header:    event.Header{ID: "f1", From: xmppAddr(integrationGhost), To: xmppAddr("alice@localhost")},
		EventID:   m.ID,
		Reason:    "the Matrix homeserver refused the message",
		Condition: event.Undeliverable,
	}
	if _, err := a.Send(t.Context(), f); err != nil {
		t.Fatalf("Send(failure): %v", err)
	}
	r := alice.next(t)
	if r.Type != "error" || r.ID != "m3" || r.To != alice.jid.String() || r.Error == nil ||
		r.Error.Condition != stanza.RecipientUnavailable || r.Error.Type != stanza.Cancel || r.Error.Text[""] != f.Reason {
		t.Errorf("want a recipient-unavailable error, got %+v (%+v)", r, r.Error)
	}
}

func TestProsodyBadSecret(t *testing.T) {
	p := startProsody(t)
	_, h := startAdapter(t, p.ComponentAddr, "not-the-secret")
	s := waitFor(t, h, bridges.BadCredentials, bridges.Starting)
	if !strings.Contains(s.err.Error(), "refused the component secret") {
		t.Errorf("BadCredentials with %v", s.err)
	}
	// Still retrying, still refused.
	waitFor(t, h, bridges.BadCredentials)
}

func TestProsodyRestart(t *testing.T) {
	p := startProsody(t)
	_, h := startAdapter(t, p.ComponentAddr, p.ComponentSecret)
	waitFor(t, h, bridges.Connected, bridges.Starting, bridges.Reconnecting)

	p.Stop(t)
	waitFor(t, h, bridges.Reconnecting)
	p.Start(t)
	waitFor(t, h, bridges.Connected, bridges.Reconnecting)
}

// nextPresence returns the next presence the client got that ok accepts.
func (c *c2sClient) nextPresence(t *testing.T, ok func(c2sPresence) bool) c2sPresence {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case p := <-c.pres:
			if ok(p) {
				return p
			}
		case <-timeout:
			t.Fatalf("%s got no such presence", c.jid)
			return c2sPresence{}
		}
	}
}

// sendPresence sends a presence of type typ (with show, when set) to to
// (broadcast when empty).
func (c *c2sClient) sendPresence(t *testing.T, to string, typ stanza.PresenceType, show string) {
	t.Helper()
	p := stanza.Presence{Type: typ}
	if to != "" {
		p.To = jid.MustParse(to)
	}
	var payload xml.TokenReader
	if show != "" {
		payload = element(xml.Name{Local: "show"}, nil, xmlstream.Token(xml.CharData(show)))
	}
	if err := c.sess.Send(t.Context(), p.Wrap(payload)); err != nil {
		t.Fatalf("send presence: %v", err)
	}
}

// nextEvent returns the next event dispatched that ok accepts, skipping
// others.
func nextEvent(t *testing.T, h *fakeHost, ok func(event.Event) bool) event.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case evt := <-h.dispatched:
			if ok(evt) {
				return evt
			}
		case <-timeout:
			t.Fatal("no such event dispatched")
			return nil
		}
	}
}

// TestProsodyPresence subscribes a real client to a ghost: the gateway
// approves and asks back, the ghost's presence reaches the client, and the
// client's presence reaches the core as directed presence.
func TestProsodyPresence(t *testing.T) {
	p := startProsody(t)
	p.Register(t, "alice", "alicepass")
	a, h := startAdapter(t, p.ComponentAddr, p.ComponentSecret)
	waitFor(t, h, bridges.Connected, bridges.Starting, bridges.Reconnecting)
	alice := dialC2S(t, p, "alice", "alicepass")
	// Ask for the roster: only "interested" resources get subscription
	// requests (RFC 6121 §2.1.6).
	roster := stanza.IQ{ID: "r1", Type: stanza.GetIQ}.Wrap(element(xml.Name{Space: "jabber:iq:roster", Local: "query"}, nil))
	if err := alice.sess.Send(t.Context(), roster); err != nil {
		t.Fatal(err)
	}

	alice.sendPresence(t, integrationGhost, stanza.SubscribePresence, "")
	evt := nextEvent(t, h, func(e event.Event) bool { _, ok := e.(*event.Subscription); return ok })
	if s := evt.(*event.Subscription); !s.Active || s.From != xmppAddr("alice@localhost") || s.To != xmppAddr(integrationGhost) {
		t.Fatalf("dispatched %+v", s)
	}
	alice.nextPresence(t, func(p c2sPresence) bool { return p.From == integrationGhost && p.Type == "subscribed" })
	// The gateway asks back; alice approves and her presence flows.
	alice.nextPresence(t, func(p c2sPresence) bool { return p.From == integrationGhost && p.Type == "subscribe" })
	// (Prosody may first tell the ghost that alice is unavailable, from her
	// bare JID, while the request is pending.)
	alice.sendPresence(t, integrationGhost, stanza.SubscribedPresence, "")
	evt = nextEvent(t, h, func(e event.Event) bool { p, ok := e.(*event.Presence); return ok && p.State != event.Offline })
	if pr := evt.(*event.Presence); pr.State != event.Available || pr.From != xmppAddr("alice@localhost") || pr.To != xmppAddr(integrationGhost) {
		t.Fatalf("dispatched %+v", pr)
	}

	// Parley → XMPP: the ghost's presence.
	_, err := a.Send(t.Context(), &event.Presence{
		Header: event.Header{ID: "pr1", From: xmppAddr(integrationGhost), To: xmppAddr("alice@localhost")},
		State:  event.Away, Status: "lunch",
	})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := alice.nextPresence(t, func(p c2sPresence) bool { return p.From == integrationGhost && p.Type == "" })
	if got.Show != "away" || got.Status != "lunch" {
		t.Errorf("alice got %+v", got)
	}

	// XMPP → Parley: alice's broadcast presence reaches the ghost.
	alice.sendPresence(t, "", "", "dnd")
	evt = nextEvent(t, h, func(e event.Event) bool { _, ok := e.(*event.Presence); return ok })
	if pr := evt.(*event.Presence); pr.State != event.DoNotDisturb || pr.From != xmppAddr("alice@localhost") || pr.To != xmppAddr(integrationGhost) {
		t.Fatalf("dispatched %+v", pr)
	}

	// A second resource: the most available one is shown, and it going
	// offline leaves the first one's.
	phone := dialC2S(t, p, "alice", "alicepass")
	wantPresence := func(want event.PresenceState) {
		t.Helper()
		evt := nextEvent(t, h, func(e event.Event) bool { _, ok := e.(*event.Presence); return ok })
		if pr := evt.(*event.Presence); pr.State != want || pr.From != xmppAddr("alice@localhost") || pr.To != xmppAddr(integrationGhost) {
			t.Fatalf("dispatched %+v, want %s", pr, want)
		}
	}
	wantPresence(event.Available)
	phone.sendPresence(t, "", "", "away")
	wantPresence(event.Away)
	if err := phone.sess.Close(); err != nil {
		t.Fatal(err)
	}
	wantPresence(event.DoNotDisturb)
}
