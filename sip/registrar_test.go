package sip

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/event"
)

// contacts returns the Contact header values of res.
func contacts(res *sip.Response) []string {
	var out []string
	for _, h := range res.GetHeaders("Contact") {
		out = append(out, h.Value())
	}
	return out
}

func storedBindings(t *testing.T, host *fakeHost, user string) []binding {
	t.Helper()
	v, ok := host.links.Value("aor:" + user)
	if !ok {
		return nil
	}
	var reg registration
	if err := json.Unmarshal([]byte(v), &reg); err != nil {
		t.Fatalf("aor:%s = %s: %v", user, v, err)
	}
	return reg.Bindings
}

func TestRegisterChallengeThenAccept(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	res := phone.do(newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:5999>", 600))
	if res.StatusCode != 401 {
		t.Fatalf("REGISTER without credentials: %d %s, want 401", res.StatusCode, res.Reason)
	}
	www := res.GetHeader("WWW-Authenticate")
	if www == nil {
		t.Fatal("401 without WWW-Authenticate")
	}
	c := www.Value()
	for _, want := range []string{`Digest realm="parley.localhost"`, `nonce="`, "algorithm=MD5", `qop="auth"`} {
		if !strings.Contains(c, want) {
			t.Errorf("challenge %q lacks %s", c, want)
		}
	}
	if strings.Contains(c, "stale") {
		t.Errorf("first challenge %q says stale", c)
	}

	res = phone.doAuth(newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:5999>", 600), "alice", alicePassword)
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER with credentials: %d %s", res.StatusCode, res.Reason)
	}
	got := contacts(res)
	if len(got) != 1 || !strings.HasPrefix(got[0], "<sip:alice@127.0.0.1:5999>;expires=") {
		t.Errorf("200 contacts = %q", got)
	}
	if res.GetHeader("Date") == nil {
		t.Error("200 without Date")
	}
	select {
	case addr := <-a.host.reachableCh:
		if addr != (event.Address{Network: event.SIP, ID: "sip:alice@parley.localhost"}) {
			t.Errorf("Reachable(%v)", addr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Reachable was not called after REGISTER")
	}
	bs := storedBindings(t, a.host, "alice")
	if len(bs) != 1 || bs[0].Contact != "sip:alice@127.0.0.1:5999" || bs[0].Transport != "UDP" {
		t.Errorf("stored bindings = %+v", bs)
	}
}

// TestRegisterHA1: a user configured with HA1 instead of a password.
func TestRegisterHA1(t *testing.T) {
	a := startAdapter(t, nil, nil)
	register(t, newPeerUA(t), "TCP", a.tcp, "bob", bobPassword, "<sip:bob@127.0.0.1:5999;transport=tcp>")
}

func TestRegisterRefused(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	tests := []struct {
		name           string
		req            *sip.Request
		user, password string
		status         int
	}{
		{"wrong password", newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:5999>", 600), "alice", "guess", 401},
		{"unknown user", newRegister("UDP", a.udp, "mallory", "<sip:m@127.0.0.1:5999>", 600), "mallory", "x", 401},
		{"someone else's AOR", newRegister("UDP", a.udp, "bob", "<sip:alice@127.0.0.1:5999>", 600), "alice", alicePassword, 403},
		{"a peer's credentials", newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:5999>", 600), peerUsername, peerPassword, 403},
		{"another domain", func() *sip.Request {
			r := newRequest(sip.REGISTER, "UDP", a.udp, "sip:example.org", "sip:alice@example.org", "sip:alice@example.org")
			r.AppendHeader(sip.NewHeader("Contact", "<sip:alice@127.0.0.1:5999>"))
			return r
		}(), "alice", alicePassword, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := phone.doAuth(tt.req, tt.user, tt.password)
			if res.StatusCode != tt.status {
				t.Fatalf("REGISTER: %d %s, want %d", res.StatusCode, res.Reason, tt.status)
			}
		})
	}
	if bs := storedBindings(t, a.host, "alice"); len(bs) != 0 {
		t.Errorf("refused REGISTERs stored %+v", bs)
	}
}

func TestRegisterExpires(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	res := phone.doAuth(newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:5999>", 30), "alice", alicePassword)
	if res.StatusCode != 423 {
		t.Fatalf("REGISTER for 30 s: %d %s, want 423", res.StatusCode, res.Reason)
	}
	if h := res.GetHeader("Min-Expires"); h == nil || h.Value() != "60" {
		t.Errorf("423 Min-Expires = %v, want 60", h)
	}
	// The contact's expires parameter wins over the Expires header, and is
	// cut to max_expires.
	res = phone.doAuth(newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:5999>;expires=99999", 120), "alice", alicePassword)
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER for 99999 s: %d %s", res.StatusCode, res.Reason)
	}
	if got := contacts(res); len(got) != 1 || !strings.HasSuffix(got[0], ";expires=3600") {
		t.Errorf("contacts = %q, want expires=3600", got)
	}
	// No expiry at all: the registrar picks max_expires.
	res = phone.doAuth(newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:6000>", -1), "alice", alicePassword)
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER without expiry: %d %s", res.StatusCode, res.Reason)
	}
	bs := storedBindings(t, a.host, "alice")
	if len(bs) != 2 {
		t.Fatalf("stored %d bindings, want 2", len(bs))
	}
	for _, b := range bs {
		if left := time.Until(b.Expires); left < 3590*time.Second || left > 3600*time.Second {
			t.Errorf("binding %s expires in %s, want 3600s", b.Contact, left)
		}
	}
}

func TestRegisterRemoveAndQuery(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	register(t, phone, "UDP", a.udp, "alice", alicePassword, "<sip:alice@127.0.0.1:5998>")
	register(t, phone, "UDP", a.udp, "alice", alicePassword, "<sip:alice@127.0.0.1:5999>")

	// A query (no Contact) lists the bindings and changes nothing.
	res := phone.doAuth(newRegister("UDP", a.udp, "alice", "", -1), "alice", alicePassword)
	if res.StatusCode != 200 || len(contacts(res)) != 2 {
		t.Fatalf("query: %d, contacts %q", res.StatusCode, contacts(res))
	}
	// Expires: 0 removes one contact.
	res = phone.doAuth(newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:5998>", 0), "alice", alicePassword)
	if res.StatusCode != 200 {
		t.Fatalf("removal: %d %s", res.StatusCode, res.Reason)
	}
	if got := contacts(res); len(got) != 1 || !strings.Contains(got[0], "5999") {
		t.Errorf("after removal, contacts = %q", got)
	}
	// "*" needs Expires: 0.
	res = phone.doAuth(newRegister("UDP", a.udp, "alice", "*", 60), "alice", alicePassword)
	if res.StatusCode != 400 {
		t.Errorf("Contact: * with Expires: 60: %d, want 400", res.StatusCode)
	}
	// "*" with Expires: 0 removes everything, and the link.
	res = phone.doAuth(newRegister("UDP", a.udp, "alice", "*", 0), "alice", alicePassword)
	if res.StatusCode != 200 || len(contacts(res)) != 0 {
		t.Fatalf("wildcard removal: %d, contacts %q", res.StatusCode, contacts(res))
	}
	if v, ok := a.host.links.Value("aor:alice"); ok {
		t.Errorf("aor:alice = %s after removing every binding", v)
	}
}

func TestRegisterStorageFailure(t *testing.T) {
	a := startAdapter(t, nil, nil)
	a.host.links.SetFail(true)
	res := newPeerUA(t).doAuth(newRegister("UDP", a.udp, "alice", "<sip:alice@127.0.0.1:5999>", 600), "alice", alicePassword)
	if res.StatusCode != 500 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("REGISTER with a failing store: %d %s, want 500 with Retry-After", res.StatusCode, res.Reason)
	}
}

// TestUpdateRegistration covers RFC 3261 §10.3 steps 6-8 without the
// network.
func TestUpdateRegistration(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	existing := registration{Bindings: []binding{
		{Contact: "sip:a@192.0.2.1", Expires: now.Add(time.Hour), CallID: "c1", CSeq: 5, Updated: now.Add(-time.Minute), Instance: `"<urn:uuid:1>"`, RegID: "1", Flow: true},
	}}
	req := func(callID string, cseq uint32) (*sip.Request, request) {
		r := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: testDomain})
		r.SetTransport("UDP")
		r.SetSource("192.0.2.1:5060")
		r.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "192.0.2.1", Port: 5060, Params: sip.HeaderParams{{K: "rport", V: ""}}})
		return r, request{callID: callID, cseq: cseq}
	}
	tests := []struct {
		name     string
		callID   string
		cseq     uint32
		contacts []contactRequest
		wildcard bool
		want     []string // contacts after
		flow     bool     // the Flow of sip:b@192.0.2.2 after
		status   int      // of the failure, or 0
	}{
		{name: "refresh with a higher CSeq", callID: "c1", cseq: 6, contacts: []contactRequest{{uri: "sip:a@192.0.2.1", expires: time.Hour}}, want: []string{"sip:a@192.0.2.1"}},
		{name: "same CSeq is out of order", callID: "c1", cseq: 5, contacts: []contactRequest{{uri: "sip:a@192.0.2.1", expires: time.Hour}}, status: 400},
		{name: "lower CSeq is out of order", callID: "c1", cseq: 4, contacts: []contactRequest{{uri: "sip:a@192.0.2.1", expires: 0}}, status: 400},
		{name: "another Call-ID may use any CSeq", callID: "c2", cseq: 1, contacts: []contactRequest{{uri: "sip:a@192.0.2.1", expires: 0}}, want: nil},
		{name: "add a contact", callID: "c2", cseq: 1, contacts: []contactRequest{{uri: "sip:b@192.0.2.2", expires: time.Hour}}, want: []string{"sip:a@192.0.2.1", "sip:b@192.0.2.2"}},
		{name: "add a contact over its flow", callID: "c2", cseq: 1, contacts: []contactRequest{{uri: "sip:b@192.0.2.2", expires: time.Hour, flow: flowUnreachable}}, want: []string{"sip:a@192.0.2.1", "sip:b@192.0.2.2"}, flow: true},
		{name: "an outbound flow replaces the one of its instance and reg-id", callID: "c2", cseq: 1,
			contacts: []contactRequest{{uri: "sip:b@192.0.2.2", expires: time.Hour, flow: flowOutbound, instance: `"<urn:uuid:1>"`, regID: "1"}}, want: []string{"sip:b@192.0.2.2"}, flow: true},
		{name: "wildcard", callID: "c2", cseq: 1, wildcard: true, want: nil},
		{name: "wildcard out of order", callID: "c1", cseq: 2, wildcard: true, status: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, in := req(tt.callID, tt.cseq)
			got, rep := updateRegistration(existing, r, in, tt.contacts, tt.wildcard, now)
			if tt.status != 0 {
				if rep == nil || rep.code != tt.status {
					t.Fatalf("reply %+v, want %d", rep, tt.status)
				}
				return
			}
			if rep != nil {
				t.Fatalf("reply %d %s", rep.code, rep.reason)
			}
			var cs []string
			for _, b := range got.Bindings {
				cs = append(cs, b.Contact)
				if b.Contact == "sip:b@192.0.2.2" && (b.Flow != tt.flow || b.Source != "192.0.2.1:5060" || b.Transport != "UDP") {
					t.Errorf("new binding %+v: want flow %v, from 192.0.2.1:5060 over UDP", b, tt.flow)
				}
			}
			if strings.Join(cs, " ") != strings.Join(tt.want, " ") {
				t.Errorf("contacts %q, want %q", cs, tt.want)
			}
		})
	}
	if len(existing.Bindings) != 1 || existing.Bindings[0].CSeq != 5 {
		t.Errorf("updateRegistration changed its input: %+v", existing)
	}
}

func TestUpdateRegistrationBoundsBindings(t *testing.T) {
	now := time.Now()
	var reg registration
	for i := range maxBindings {
		reg.Bindings = append(reg.Bindings, binding{Contact: "sip:old" + string(rune('a'+i)) + "@192.0.2.1", Expires: now.Add(time.Hour), CallID: "x", Updated: now.Add(-time.Duration(i+1) * time.Minute)})
	}
	r := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: testDomain})
	got, rep := updateRegistration(reg, r, request{callID: "new", cseq: 1}, []contactRequest{{uri: "sip:new@192.0.2.9", expires: time.Hour}}, false, now)
	if rep != nil {
		t.Fatal(rep.reason)
	}
	if len(got.Bindings) != maxBindings {
		t.Fatalf("%d bindings, want %d", len(got.Bindings), maxBindings)
	}
	for _, b := range got.Bindings {
		if b.Contact == "sip:old"+string(rune('a'+maxBindings-1))+"@192.0.2.1" {
			t.Errorf("the least recently refreshed binding was kept")
		}
	}
}

func TestParseDeltaSeconds(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"0", 0, true}, {" 3600 ", 3600, true}, {"99999999999", 0xffffffff, true},
		{"", 0, false}, {"-1", 0, false}, {"1h", 0, false}, {"3600;x", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseDeltaSeconds(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseDeltaSeconds(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestSendToContactsRegisteredFromAnotherPort: one REGISTER with rport,
// from a third port, binds two phones; a message for the user reaches both
// Contacts (RFC 3261 §10), not the REGISTER's source.
func TestSendToContactsRegisteredFromAnotherPort(t *testing.T) {
	a := startAdapter(t, nil, nil)
	desk, mobile := newPeerUA(t), newPeerUA(t)
	desk.listenUDP()
	mobile.listenUDP()
	registrar := newPeerUA(t)
	registrar.listenUDP() // the source of the REGISTER, a third port
	client, err := sipgo.NewClient(registrar.ua, sipgo.WithClientLogger(testLogger(t)), sipgo.WithClientNAT())
	if err != nil {
		t.Fatal(err)
	}
	registrar.client = client
	req := newRegister("UDP", a.udp, "bob", "<sip:bob@"+desk.addr+">, <sip:bob@"+mobile.addr+">", 600)
	res := registrar.doAuth(req, "bob", bobPassword)
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d %s", res.StatusCode, res.Reason)
	}
	bs := storedBindings(t, a.host, "bob")
	if len(bs) != 2 {
		t.Fatalf("stored %+v, want 2 bindings", bs)
	}
	for _, b := range bs {
		if b.Flow {
			t.Errorf("binding %s goes over the flow from %s", b.Contact, b.Source)
		}
	}
	if _, err := a.Send(context.Background(), ghostMessage("m1", "to both phones")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	for _, p := range []*peerUA{desk, mobile} {
		if got := string(p.waitMessage().Body()); got != "to both phones" {
			t.Errorf("%s got %q", p.addr, got)
		}
	}
	select {
	case req := <-registrar.received:
		t.Errorf("the REGISTER's source got %s", req.Body())
	default:
	}
}

// TestRegisterOutbound: an RFC 5626 registration is stored with its flow,
// instance and reg-id, and a new flow of the same instance and reg-id
// replaces it. The 200 does not claim Supported: outbound, whose keep-alives
// Parley does not answer.
func TestRegisterOutbound(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	phone.listenUDP()
	contact := `<sip:bob@192.0.2.10:5060>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1`
	res := register(t, phone, "UDP", a.udp, "bob", bobPassword, contact)
	if h := res.GetHeader("Supported"); h != nil && strings.Contains(h.Value(), "outbound") {
		t.Errorf("200 claims Supported: outbound: %v", h)
	}
	bs := storedBindings(t, a.host, "bob")
	if len(bs) != 1 || !bs[0].Flow || bs[0].RegID != "1" || !strings.Contains(bs[0].Instance, "urn:uuid:") {
		t.Fatalf("stored %+v", bs)
	}
	register(t, phone, "UDP", a.udp, "bob", bobPassword, strings.Replace(contact, "192.0.2.10", "192.0.2.11", 1))
	if bs := storedBindings(t, a.host, "bob"); len(bs) != 1 || bs[0].Contact != "sip:bob@192.0.2.11:5060" {
		t.Errorf("after a new flow: %+v", bs)
	}
	// The flow reaches the phone although its Contact does not.
	if _, err := a.Send(context.Background(), ghostMessage("m1", "over the outbound flow")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := string(phone.waitMessage().Body()); got != "over the outbound flow" {
		t.Errorf("got %q", got)
	}
}

// TestLoadRegistrationOfTheFirstFormat: a record written before bindings
// had Flow (no version, Symmetric for every rport REGISTER) is still read:
// a NATed phone keeps its flow, contacts another host registered get theirs.
func TestLoadRegistrationOfTheFirstFormat(t *testing.T) {
	a := startAdapter(t, nil, nil)
	exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	a.host.links.Set("aor:bob", `{"bindings":[`+
		`{"contact":"sip:bob@192.168.1.20:5060","expires":"`+exp+`","call_id":"c1","cseq":2,"transport":"UDP","source":"203.0.113.7:40123","symmetric":true,"updated":"`+exp+`"},`+
		`{"contact":"sip:bob@198.51.100.8:5060","expires":"`+exp+`","call_id":"c2","cseq":2,"transport":"UDP","source":"203.0.113.9:5060","symmetric":true,"updated":"`+exp+`"}]}`)
	_, links, _, _ := a.stack()
	reg, err := a.loadRegistration(context.Background(), links, "bob", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Bindings) != 2 || !reg.Bindings[0].Flow || reg.Bindings[1].Flow || reg.Version != registrationVersion {
		t.Errorf("read %+v", reg)
	}
}
