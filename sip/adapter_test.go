package sip

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

func TestNewRejectsInvalidConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "sip.domain") {
		t.Fatalf("New(Config{}) error = %v, want a sip.domain error", err)
	}
}

func TestStartStop(t *testing.T) {
	host := newFakeHost()
	a := startAdapter(t, host, nil)
	if a.Network() != event.SIP {
		t.Errorf("Network() = %q", a.Network())
	}
	if a.udp == "" || a.tcp == "" {
		t.Fatalf("Addrs() = %v, want a UDP and a TCP address", a.Addrs())
	}
	if err := a.Start(context.Background(), host); err == nil {
		t.Error("second Start succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	host.waitState(t, bridges.Stopped)
	if err := a.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	// The sockets are closed.
	if c, err := net.Dial("tcp", a.tcp); err == nil {
		_ = c.Close()
		t.Error("the TCP listener still accepts connections after Stop")
	}
}

func TestStartNilHost(t *testing.T) {
	a, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background(), nil); err == nil {
		t.Fatal("Start with a nil host succeeded")
	}
}

// TestListenerRetriesWithBackoff: a listener whose port is taken reports
// Reconnecting with the error, and Connected once it could bind.
func TestListenerRetriesWithBackoff(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := busy.LocalAddr().String()
	cfg := testConfig()
	cfg.Listen = []string{"udp:" + addr}
	a, err := New(cfg, WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	a.backoff = bridges.Backoff{Min: 20 * time.Millisecond, Max: 50 * time.Millisecond}
	host := newFakeHost()
	if err := a.Start(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	c := host.waitState(t, bridges.Reconnecting)
	if c.Err == nil || !strings.Contains(c.Err.Error(), addr) {
		t.Errorf("Reconnecting error = %v, want one naming %s", c.Err, addr)
	}
	_ = busy.Close()
	host.waitState(t, bridges.Connected)
	if got := a.Addrs(); len(got) != 1 || got[0] != "udp:"+addr {
		t.Errorf("Addrs() = %v", got)
	}
}

// TestTLS: a phone registers over TLS and gets its messages over the same
// connection.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, certFile, keyFile)
	host := newFakeHost()
	a := startAdapter(t, host, func(c *Config) {
		c.Listen = []string{"tls:127.0.0.1:0"}
		c.TLSCert, c.TLSKey = certFile, keyFile
	})
	addr := strings.TrimPrefix(a.Addrs()[0], "tls:")
	phone := newPeerUA(t, sipgo.WithUserAgenTLSConfig(&tls.Config{InsecureSkipVerify: true})) // the adapter's certificate is self-signed
	register(t, phone, "TLS", addr, "bob", bobPassword, "<sip:bob@127.0.0.1:9;transport=tls>")
	if _, err := a.Send(context.Background(), ghostMessage("tls-1", "over TLS")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if req := phone.waitMessage(); string(req.Body()) != "over TLS" || req.Transport() != "TLS" {
		t.Errorf("got %q over %s", req.Body(), req.Transport())
	}
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key as PEM files.
func writeSelfSigned(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: testDomain},
		DNSNames:     []string{testDomain},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStopIsBounded: Stop waits for the requests being handled, but no
// longer than its context, and new requests are refused meanwhile.
func TestStopIsBounded(t *testing.T) {
	host := newFakeHost()
	a := startAdapter(t, host, trustLoopback)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	host.setDispatchErr(func(event.Event) error {
		entered <- struct{}{}
		<-release
		return nil
	})
	defer close(release)
	phone := newPeerUA(t)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = phone.client.Do(ctx, newMessage("UDP", a.udp, "sip:1001@pbx.example.org", ghost, "slow"))
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the MESSAGE was not dispatched")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := a.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop with a dispatch in progress: %v, want the context's error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Stop took %s", d)
	}
	host.waitState(t, bridges.Stopped)
}

func TestTLSListenerWithoutCertificateFiles(t *testing.T) {
	cfg := testConfig()
	cfg.Listen = []string{"tls:127.0.0.1:0"}
	cfg.TLSCert, cfg.TLSKey = "/nonexistent/cert.pem", "/nonexistent/key.pem"
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	host := newFakeHost()
	if err := a.Start(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	c := host.waitState(t, bridges.Reconnecting)
	if c.Err == nil || !strings.Contains(c.Err.Error(), "tls_cert") {
		t.Errorf("Reconnecting error = %v, want one about sip.tls_cert", c.Err)
	}
}

// register registers user with contact through p, over transport.
func register(t *testing.T, p *peerUA, transport, addr, user, password, contact string) *sip.Response {
	t.Helper()
	res := p.doAuth(newRegister(transport, addr, user, contact, 600), user, password)
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER %s: %d %s", user, res.StatusCode, res.Reason)
	}
	return res
}

func ghostMessage(id, body string) *event.Message {
	return &event.Message{
		Header: event.Header{
			ID:       id,
			From:     event.Address{Network: event.SIP, ID: "sip:alice=40example.org+xmpp@" + testDomain},
			To:       event.Address{Network: event.SIP, ID: "sip:bob@" + testDomain},
			FromName: `Alice "Ace" Liddell`,
			Time:     time.Now(),
		},
		Body: body,
	}
}

func TestSendToRegisteredContact(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	phone.listenUDP()
	register(t, phone, "UDP", a.udp, "bob", bobPassword, "<sip:bob@"+phone.addr+">")

	msg := ghostMessage("xmpp:alice@example.org/m1", "hello from XMPP ☺")
	id, err := a.Send(context.Background(), msg)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	req := phone.waitMessage()
	if got, want := req.Recipient.String(), "sip:bob@"+phone.addr; got != want {
		t.Errorf("Request-URI = %s, want %s", got, want)
	}
	if got := string(req.Body()); got != msg.Body {
		t.Errorf("body = %q, want %q", got, msg.Body)
	}
	if got := req.ContentType().Value(); got != "text/plain;charset=UTF-8" {
		t.Errorf("Content-Type = %q", got)
	}
	from := req.From()
	if from.Address.Addr() != msg.From.ID || displayName(from.DisplayName) != msg.FromName {
		t.Errorf("From = %s, want %q <%s>", from.Value(), msg.FromName, msg.From.ID)
	}
	if req.To().Address.Addr() != msg.To.ID {
		t.Errorf("To = %s, want %s", req.To().Value(), msg.To.ID)
	}
	if req.CallID().Value() != id {
		t.Errorf("Send returned %q, the Call-ID is %q", id, req.CallID().Value())
	}
	if ua := req.GetHeader("User-Agent"); ua == nil || ua.Value() != DefaultUserAgent {
		t.Errorf("User-Agent = %v", ua)
	}

	// A resend of the same event is the same request, so the phone can
	// recognise it.
	id2, err := a.Send(context.Background(), msg)
	if err != nil {
		t.Fatalf("second Send: %v", err)
	}
	req2 := phone.waitMessage()
	if id2 != id || req2.CallID().Value() != req.CallID().Value() || req2.From().Params.GetOr("tag", "") != from.Params.GetOr("tag", "x") {
		t.Errorf("resend has Call-ID %s tag %v, first had %s tag %v", req2.CallID().Value(), req2.From().Params, id, from.Params)
	}
	// Another event gets another Call-ID.
	id3, err := a.Send(context.Background(), ghostMessage("xmpp:alice@example.org/m2", "again"))
	if err != nil || id3 == id {
		t.Fatalf("Send of another event = %q, %v; first was %q", id3, err, id)
	}
	phone.waitMessage()
}

// TestSendToEveryContact: a user with two phones gets the message on both;
// one accepting is enough.
func TestSendToEveryContact(t *testing.T) {
	a := startAdapter(t, nil, nil)
	desk, mobile := newPeerUA(t), newPeerUA(t)
	desk.listenUDP()
	mobile.listenUDP()
	register(t, desk, "UDP", a.udp, "bob", bobPassword, "<sip:bob@"+desk.addr+">")
	register(t, mobile, "UDP", a.udp, "bob", bobPassword, "<sip:bob@"+mobile.addr+">")
	mobile.setStatus(486)
	if _, err := a.Send(context.Background(), ghostMessage("m1", "hi")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	desk.waitMessage()
	mobile.waitMessage()

	// Every contact refusing is permanent.
	desk.setStatus(403)
	_, err := a.Send(context.Background(), ghostMessage("m2", "hi"))
	if err == nil || !bridges.IsPermanent(err) {
		t.Fatalf("Send refused by every contact: %v, want a permanent error", err)
	}
}

// TestSendOverTheRegistrationConnection: a phone that registered over TCP
// gets its messages over that same connection, whatever its Contact says
// (it may be behind NAT, its port ephemeral).
func TestSendOverTheRegistrationConnection(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t) // no listener: only its TCP connection to the adapter
	register(t, phone, "TCP", a.tcp, "bob", bobPassword, "<sip:bob@127.0.0.1:9;transport=tcp>")
	if _, err := a.Send(context.Background(), ghostMessage("m1", "over the flow")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	req := phone.waitMessage()
	if string(req.Body()) != "over the flow" || req.Transport() != "TCP" {
		t.Errorf("got %q over %s", req.Body(), req.Transport())
	}
}

// TestSendLargeMessageOverTCP: a MESSAGE too large for a UDP datagram goes
// to the UDP contact's host and port over TCP instead (RFC 3261 §18.1.1).
func TestSendLargeMessageOverTCP(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	phone.listenUDPAndTCP()
	register(t, phone, "UDP", a.udp, "bob", bobPassword, "<sip:bob@"+phone.addr+">")
	body := strings.Repeat("long message ", 200)
	if _, err := a.Send(context.Background(), ghostMessage("big", body)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	req := phone.waitMessage()
	if string(req.Body()) != body || req.Transport() != "TCP" {
		t.Errorf("got %d bytes over %s, want %d over TCP", len(req.Body()), req.Transport(), len(body))
	}

	// A contact that does not take TCP cannot get it at all.
	udpOnly := newPeerUA(t)
	udpOnly.listenUDP()
	register(t, udpOnly, "UDP", a.udp, "alice", alicePassword, "<sip:alice@"+udpOnly.addr+">")
	msg := ghostMessage("big2", body)
	msg.To.ID = "sip:alice@" + testDomain
	if _, err := a.Send(context.Background(), msg); !bridges.IsPermanent(err) {
		t.Errorf("Send of a large message to a UDP-only contact: %v, want a permanent error", err)
	}
}

// TestSendStatus: how the answers of the phone translate for the router.
func TestSendStatus(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	phone.listenUDP()
	register(t, phone, "UDP", a.udp, "bob", bobPassword, "<sip:bob@"+phone.addr+">")
	tests := []struct {
		status    int
		ok        bool
		permanent bool
	}{
		{status: 200, ok: true},
		{status: 202, ok: true},
		{status: 404, permanent: true},
		{status: 415, permanent: true},
		{status: 603, permanent: true},
		{status: 302, permanent: true},
		{status: 408},
		{status: 480},
		{status: 500},
		{status: 503},
	}
	for i, tt := range tests {
		phone.setStatus(tt.status)
		_, err := a.Send(context.Background(), ghostMessage("status-"+strconv.Itoa(i), "hi"))
		phone.waitMessage()
		switch {
		case tt.ok && err != nil:
			t.Errorf("%d: Send error %v, want success", tt.status, err)
		case !tt.ok && err == nil:
			t.Errorf("%d: Send succeeded, want an error", tt.status)
		case !tt.ok && bridges.IsPermanent(err) != tt.permanent:
			t.Errorf("%d: Send error %v, permanent %v, want %v", tt.status, err, bridges.IsPermanent(err), tt.permanent)
		}
	}
}

func TestSendToUnregisteredUser(t *testing.T) {
	a := startAdapter(t, nil, nil)
	msg := ghostMessage("m1", "are you there?")
	_, err := a.Send(context.Background(), msg)
	if err == nil || bridges.IsPermanent(err) || !errors.Is(err, errNotRegistered) {
		t.Fatalf("Send to an unregistered user: %v, want errNotRegistered, not permanent", err)
	}
	msg.Time = time.Now().Add(-25 * time.Hour)
	_, err = a.Send(context.Background(), msg)
	if err == nil || !bridges.IsPermanent(err) {
		t.Fatalf("Send older than offline_ttl: %v, want a permanent error", err)
	}
}

func TestSendRejectsWhatItCannotSend(t *testing.T) {
	a := startAdapter(t, nil, nil)
	msg := func(edit func(*event.Message)) *event.Message {
		m := ghostMessage("m1", "hi")
		edit(m)
		return m
	}
	tests := []struct {
		name string
		evt  event.Event
	}{
		{"nil event", nil},
		{"not a user of the domain", msg(func(m *event.Message) { m.To.ID = "sip:nobody@" + testDomain })},
		{"sender outside the domain", msg(func(m *event.Message) { m.From.ID = "sip:alice@example.org" })},
		{"sender not canonical", msg(func(m *event.Message) { m.From.ID = "sip:alice@PARLEY.localhost" })},
		{"recipient not a SIP URI", msg(func(m *event.Message) { m.To.ID = "bob@" + testDomain })},
		{"another network", msg(func(m *event.Message) { m.To.Network = event.XMPP })},
		{"no body", msg(func(m *event.Message) { m.Body = "" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Send(context.Background(), tt.evt)
			if err == nil || !bridges.IsPermanent(err) {
				t.Fatalf("Send: %v, want a permanent error", err)
			}
		})
	}
}

func TestSendBeforeStart(t *testing.T) {
	a, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Send(context.Background(), ghostMessage("m1", "hi"))
	if !errors.Is(err, errNotStarted) || bridges.IsPermanent(err) {
		t.Fatalf("Send before Start: %v", err)
	}
}

func TestSendFailure(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	phone.listenUDP()
	register(t, phone, "UDP", a.udp, "bob", bobPassword, "<sip:bob@"+phone.addr+">")
	f := &event.Failure{
		Header: event.Header{
			ID:   "failure-1",
			From: event.Address{Network: event.SIP, ID: "sip:carol=40example.org+xmpp@" + testDomain},
			To:   event.Address{Network: event.SIP, ID: "sip:bob@" + testDomain},
		},
		EventID:   "sip:bob@parley.localhost/call-1/2",
		Reason:    "carol@example.org does not exist",
		Condition: event.NoRecipient,
	}
	if _, err := a.Send(context.Background(), f); err != nil {
		t.Fatalf("Send Failure: %v", err)
	}
	req := phone.waitMessage()
	if got, want := string(req.Body()), "Message not delivered: carol@example.org does not exist"; got != want {
		t.Errorf("body = %q, want %q", got, want)
	}
	if req.From().Address.Addr() != f.From.ID {
		t.Errorf("From = %s, want %s", req.From().Value(), f.From.ID)
	}
	f.Reason = ""
	f.ID = "failure-2"
	if _, err := a.Send(context.Background(), f); err != nil {
		t.Fatalf("Send Failure: %v", err)
	}
	if got := string(phone.waitMessage().Body()); got != "Message not delivered: the address maps to nobody" {
		t.Errorf("body without a reason = %q", got)
	}
}

// TestSendThroughOutboundProxy: a recipient outside the domain is reached
// through the outbound proxy, with the AOR as Request-URI and a Route.
func TestSendThroughOutboundProxy(t *testing.T) {
	pbx := newPeerUA(t)
	pbx.listenUDP()
	a := startAdapter(t, nil, func(c *Config) { c.OutboundProxy = "sip:" + pbx.addr })
	msg := ghostMessage("m1", "to the PBX")
	msg.To.ID = "sip:1001@pbx.example.org"
	if _, err := a.Send(context.Background(), msg); err != nil {
		t.Fatalf("Send: %v", err)
	}
	req := pbx.waitMessage()
	if got := req.Recipient.String(); got != "sip:1001@pbx.example.org" {
		t.Errorf("Request-URI = %s", got)
	}
	if r := req.Route(); r == nil || r.Address.HostPort() != pbx.addr || !r.Address.UriParams.Has("lr") {
		t.Errorf("Route = %v, want <sip:%s;lr>", r, pbx.addr)
	}
	pbx.setStatus(404)
	msg.ID = "m2"
	if _, err := a.Send(context.Background(), msg); !bridges.IsPermanent(err) {
		t.Errorf("Send answered 404 by the proxy: %v, want a permanent error", err)
	}
	pbx.waitMessage()
}

// TestRegistrationSurvivesRestart: bindings are kept in the links, so a new
// adapter on the same store delivers to them.
func TestRegistrationSurvivesRestart(t *testing.T) {
	host := newFakeHost()
	phone := newPeerUA(t)
	phone.listenUDP()
	first := startAdapter(t, host, nil)
	register(t, phone, "UDP", first.udp, "bob", bobPassword, "<sip:bob@"+phone.addr+">")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := host.links.Value("aor:bob"); !ok {
		t.Fatal("no aor:bob link after REGISTER")
	}

	second := startAdapter(t, host, nil)
	if _, err := second.Send(context.Background(), ghostMessage("m1", "after the restart")); err != nil {
		t.Fatalf("Send after restart: %v", err)
	}
	if got := string(phone.waitMessage().Body()); got != "after the restart" {
		t.Errorf("body = %q", got)
	}
}
