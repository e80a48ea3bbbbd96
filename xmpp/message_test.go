package xmpp

import (
	"bytes"
	"encoding/xml"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const ghost = "bob%matrix.org@matrix.localhost"

func newTestAdapter(t testing.TB) *Adapter {
	t.Helper()
	a, err := New(validConfig())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	a.now = func() time.Time { return testNow }
	return a
}

// msg returns a <message/> in the component namespace with the given
// attributes (name, value pairs) and inner XML.
func msg(inner string, attrs ...string) string {
	var b strings.Builder
	b.WriteString(`<message xmlns="jabber:component:accept"`)
	for i := 0; i+1 < len(attrs); i += 2 {
		b.WriteString(" " + attrs[i] + `="` + attrs[i+1] + `"`)
	}
	b.WriteString(">" + inner + "</message>")
	return b.String()
}

func parseMessage(t testing.TB, s string) messageStanza {
	t.Helper()
	m, err := decodeMessage(xml.NewDecoder(strings.NewReader(s)))
	if err != nil {
		t.Fatalf("decodeMessage(%s): %v", s, err)
	}
	return m
}

func TestTranslateMessage(t *testing.T) {
	from, to := "alice@localhost/phone", ghost
	header := func(id string) event.Header {
		return event.Header{
			ID:   id,
			From: event.Address{Network: event.XMPP, ID: "alice@localhost"},
			To:   event.Address{Network: event.XMPP, ID: ghost},
			Time: testNow,
		}
	}
	tests := []struct {
		name     string
		in       string
		action   action
		want     *event.Message // for dispatch
		idPrefix string         // instead of want.ID, when the ID is random
		receipt  bool
		cond     stanza.Condition // for refuse
	}{
		{
			name:   "chat",
			in:     msg(`<body>hello</body>`, "type", "chat", "id", "m1", "from", from, "to", to),
			action: dispatch,
			want:   &event.Message{Header: header("alice@localhost/m1"), Body: "hello"},
		},
		{
			name:   "normal without type",
			in:     msg(`<body>hello</body>`, "id", "m1", "from", from, "to", to),
			action: dispatch,
			want:   &event.Message{Header: header("alice@localhost/m1"), Body: "hello"},
		},
		{
			name:   "unknown type is normal",
			in:     msg(`<body>hello</body>`, "type", "shout", "id", "m1", "from", from, "to", to),
			action: dispatch,
			want:   &event.Message{Header: header("alice@localhost/m1"), Body: "hello"},
		},
		{
			name:   "origin-id preferred",
			in:     msg(`<body>hi</body><origin-id xmlns="urn:xmpp:sid:0" id="o-1"/>`, "type", "chat", "id", "m1", "from", from, "to", to),
			action: dispatch,
			want:   &event.Message{Header: header("alice@localhost/o-1"), Body: "hi"},
		},
		{
			name:   "empty origin-id ignored",
			in:     msg(`<body>hi</body><origin-id xmlns="urn:xmpp:sid:0" id=""/>`, "type", "chat", "id", "m1", "from", from, "to", to),
			action: dispatch,
			want:   &event.Message{Header: header("alice@localhost/m1"), Body: "hi"},
		},
		{
			name:   "nick",
			in:     msg(`<body>hi</body><nick xmlns="http://jabber.org/protocol/nick"> Alice A. </nick>`, "type", "chat", "id", "m1", "from", from, "to", to),
			action: dispatch,
			want: func() *event.Message {
				m := &event.Message{Header: header("alice@localhost/m1"), Body: "hi"}
				m.FromName = "Alice A."
				return m
			}(),
		},
		{
			name:    "receipt requested",
			in:      msg(`<body>hi</body><request xmlns="urn:xmpp:receipts"/>`, "type", "chat", "id", "m1", "from", from, "to", to),
			action:  dispatch,
			want:    &event.Message{Header: header("alice@localhost/m1"), Body: "hi"},
			receipt: true,
		},
		{
			name:     "receipt requested without id",
			in:       msg(`<body>hi</body><request xmlns="urn:xmpp:receipts"/>`, "type", "chat", "from", from, "to", to),
			action:   dispatch,
			want:     &event.Message{Header: header(""), Body: "hi"},
			idPrefix: "alice@localhost/",
		},
		{
			name:     "no id",
			in:       msg(`<body>hi</body>`, "type", "chat", "from", from, "to", to),
			action:   dispatch,
			want:     &event.Message{Header: header(""), Body: "hi"},
			idPrefix: "alice@localhost/",
		},
		{
			name:   "to full ghost JID",
			in:     msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", from, "to", to+"/res"),
			action: dispatch,
			want:   &event.Message{Header: header("alice@localhost/m1"), Body: "hi"},
		},
		{
			name:   "addresses normalised",
			in:     msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", "Alice@LocalHost/Phone", "to", "Bob%matrix.org@Matrix.Localhost"),
			action: dispatch,
			want:   &event.Message{Header: header("alice@localhost/m1"), Body: "hi"},
		},
		{
			name:   "escaped body",
			in:     msg(`<body>1 &lt; 2 &amp;&amp; <![CDATA[<b>]]></body>`, "type", "chat", "id", "m1", "from", from, "to", to),
			action: dispatch,
			want:   &event.Message{Header: header("alice@localhost/m1"), Body: "1 < 2 && <b>"},
		},
		{
			name:   "body in the stanza language",
			in:     msg(`<body xml:lang="de">hallo</body><body xml:lang="en">hello</body>`, "xml:lang", "en", "type", "chat", "id", "m1", "from", from, "to", to),
			action: dispatch,
			want:   &event.Message{Header: header("alice@localhost/m1"), Body: "hello"},
		},
		{
			name:   "body without language",
			in:     msg(`<body xml:lang="de">hallo</body><body>hello</body>`, "type", "chat", "id", "m1", "from", from, "to", to),
			action: dispatch,
			want:   &event.Message{Header: header("alice@localhost/m1"), Body: "hello"},
		},
		{
			name:   "first body otherwise",
			in:     msg(`<body xml:lang="de">hallo</body><body xml:lang="fr">salut</body>`, "type", "chat", "id", "m1", "from", from, "to", to),
			action: dispatch,
			want:   &event.Message{Header: header("alice@localhost/m1"), Body: "hallo"},
		},
		{
			name:   "body in another namespace",
			in:     msg(`<body xmlns="urn:example:other">x</body>`, "type", "chat", "id", "m1", "from", from, "to", to),
			action: ignore,
		},
		{
			name:   "chat state without body",
			in:     msg(`<composing xmlns="http://jabber.org/protocol/chatstates"/>`, "type", "chat", "id", "m1", "from", from, "to", to),
			action: ignore,
		},
		{
			name:   "empty body",
			in:     msg(`<body></body>`, "type", "chat", "id", "m1", "from", from, "to", to),
			action: ignore,
		},
		{
			name:   "error message",
			in:     msg(`<body>hi</body><error type="cancel"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error>`, "type", "error", "id", "m1", "from", from, "to", to),
			action: ignore,
		},
		{
			name:   "groupchat",
			in:     msg(`<body>hi</body>`, "type", "groupchat", "id", "m1", "from", from, "to", to),
			action: ignore,
		},
		{
			name:   "headline",
			in:     msg(`<body>hi</body>`, "type", "headline", "id", "m1", "from", from, "to", to),
			action: ignore,
		},
		{
			name:   "remote sender",
			in:     msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", "mallory@evil.example/x", "to", to),
			action: refuse,
			cond:   stanza.NotAllowed,
		},
		{
			name:   "server domain as sender",
			in:     msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", "localhost", "to", to),
			action: refuse,
			cond:   stanza.NotAllowed,
		},
		{
			name:   "ghost as sender",
			in:     msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", "carol@matrix.localhost", "to", to),
			action: ignore,
		},
		{
			name:   "component domain as sender",
			in:     msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", "matrix.localhost", "to", to),
			action: ignore,
		},
		{
			name:   "to the component domain",
			in:     msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", from, "to", "matrix.localhost"),
			action: refuse,
			cond:   stanza.ServiceUnavailable,
		},
		{
			name:   "to another domain",
			in:     msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", from, "to", "bob@localhost"),
			action: ignore,
		},
		{
			name:   "without from",
			in:     msg(`<body>hi</body>`, "type", "chat", "id", "m1", "to", to),
			action: ignore,
		},
		{
			name:   "invalid from",
			in:     msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", "@@", "to", to),
			action: ignore,
		},
		{
			name:   "without to",
			in:     msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", from),
			action: ignore,
		},
	}
	a := newTestAdapter(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := a.translateMessage(parseMessage(t, tt.in), testNow)
			if got.action != tt.action {
				t.Fatalf("action = %d (%s), want %d", got.action, got.reason, tt.action)
			}
			switch tt.action {
			case ignore:
				if got.reason == "" {
					t.Error("ignored without a reason")
				}
			case refuse:
				if got.err.Condition != tt.cond {
					t.Errorf("condition = %s, want %s", got.err.Condition, tt.cond)
				}
			case dispatch:
				evt := *got.evt
				if tt.idPrefix != "" {
					if !strings.HasPrefix(evt.ID, tt.idPrefix) || len(evt.ID) <= len(tt.idPrefix) {
						t.Errorf("ID = %q, want %q and a random suffix", evt.ID, tt.idPrefix)
					}
					evt.ID = ""
				}
				if evt != *tt.want {
					t.Errorf("event =\n%+v\nwant\n%+v", evt, *tt.want)
				}
				if got.receipt != tt.receipt {
					t.Errorf("receipt = %t, want %t", got.receipt, tt.receipt)
				}
			}
		})
	}
}

func TestRandomIDsDiffer(t *testing.T) {
	a := newTestAdapter(t)
	m := parseMessage(t, msg(`<body>hi</body>`, "from", "alice@localhost", "to", ghost))
	id1 := a.translateMessage(m, testNow).evt.ID
	id2 := a.translateMessage(m, testNow).evt.ID
	if id1 == id2 {
		t.Errorf("two messages without id both got ID %q", id1)
	}
}

func TestStableID(t *testing.T) {
	a, b := stableID("$event:matrix.org"), stableID("$event:matrix.org")
	if a != b {
		t.Errorf("stableID is not deterministic: %q, %q", a, b)
	}
	if a == stableID("$other:matrix.org") {
		t.Errorf("different source IDs give the same stanza ID %q", a)
	}
	if !strings.HasPrefix(a, "parley-") || len(a) != len("parley-")+16 {
		t.Errorf("stableID = %q, want parley- and 16 hex digits", a)
	}
	if x, y := stableID(""), stableID(""); x == y {
		t.Error("events without a source ID share a stanza ID")
	}
}

func TestStanzaIDOf(t *testing.T) {
	tests := map[string]string{
		"alice@localhost/m1":       "m1",
		"alice@localhost/a/b":      "a/b",
		"alice@localhost/":         "",
		"$event:matrix.org":        "$event:matrix.org",
		"not a jid/m1":             "not a jid/m1",
		"localhost/m1":             "m1",
		"alice@localhost/phone/m1": "phone/m1",
	}
	for in, want := range tests {
		if got := stanzaIDOf(in); got != want {
			t.Errorf("stanzaIDOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// render writes the stanza r as XML text.
func render(t testing.TB, r xml.TokenReader) string {
	t.Helper()
	var buf bytes.Buffer
	e := xml.NewEncoder(&buf)
	if _, err := xmlstream.Copy(e, r); err != nil {
		t.Fatalf("encode: %v", err)
	}
	if err := e.Flush(); err != nil {
		t.Fatalf("encode: %v", err)
	}
	return buf.String()
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if got+"\n" != string(want) {
		t.Errorf("%s differs:\ngot  %s\nwant %s", path, got, want)
	}
}

func xmppAddr(id string) event.Address { return event.Address{Network: event.XMPP, ID: id} }

func TestOutboundMessage(t *testing.T) {
	tests := []struct {
		name string
		msg  *event.Message
	}{
		{
			name: "plain",
			msg: &event.Message{
				Header: event.Header{ID: "$ev1:matrix.org", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")},
				Body:   "hello",
			},
		},
		{
			name: "nick",
			msg: &event.Message{
				Header: event.Header{ID: "$ev2:matrix.org", From: xmppAddr(ghost), To: xmppAddr("alice@localhost"), FromName: "Bob <Matrix>"},
				Body:   "1 < 2 & \"quotes\"\nsecond line",
			},
		},
		{
			name: "control characters",
			msg: &event.Message{
				Header: event.Header{ID: "$ev3:matrix.org", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")},
				Body:   "bell\a nul\x00 tab\t",
			},
		},
	}
	a := newTestAdapter(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, r, err := a.outboundMessage(tt.msg)
			if err != nil {
				t.Fatalf("outboundMessage: %v", err)
			}
			if id != stableID(tt.msg.ID) {
				t.Errorf("id = %q, want %q", id, stableID(tt.msg.ID))
			}
			golden(t, "send/message-"+strings.ReplaceAll(tt.name, " ", "-")+".xml", render(t, r))
		})
	}
}

func TestOutboundFailure(t *testing.T) {
	tests := []struct {
		name    string
		failure *event.Failure
		sender  string // full JID the adapter saw send EventID, if any
	}{
		{
			name: "no recipient",
			failure: &event.Failure{
				Header:    event.Header{ID: "f1", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")},
				EventID:   "alice@localhost/m1",
				Reason:    "nobody has that address",
				Condition: event.NoRecipient,
			},
		},
		{
			name: "refused",
			failure: &event.Failure{
				Header:    event.Header{ID: "f2", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")},
				EventID:   "alice@localhost/m2",
				Condition: event.Refused,
			},
			sender: "alice@localhost/phone",
		},
		{
			name: "undeliverable",
			failure: &event.Failure{
				Header:    event.Header{ID: "f3", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")},
				EventID:   "alice@localhost/m3",
				Reason:    "the Matrix homeserver refused the event: M_FORBIDDEN",
				Condition: event.Undeliverable,
			},
			sender: "alice@localhost/phone",
		},
	}
	a := newTestAdapter(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.sender != "" {
				a.senders.remember(tt.failure.EventID, mustJID(t, tt.sender))
			}
			id, r, err := a.outboundFailure(tt.failure)
			if err != nil {
				t.Fatalf("outboundFailure: %v", err)
			}
			if want := stanzaIDOf(tt.failure.EventID); id != want {
				t.Errorf("id = %q, want %q", id, want)
			}
			golden(t, "send/failure-"+strings.ReplaceAll(tt.name, " ", "-")+".xml", render(t, r))
		})
	}
}

func TestOutboundErrors(t *testing.T) {
	a := newTestAdapter(t)
	tests := []struct {
		name string
		evt  event.Event
	}{
		{"from outside the component domain", &event.Message{Header: event.Header{ID: "1", From: xmppAddr("bob@localhost"), To: xmppAddr("alice@localhost")}, Body: "x"}},
		{"invalid from", &event.Message{Header: event.Header{ID: "1", From: xmppAddr("@@"), To: xmppAddr("alice@localhost")}, Body: "x"}},
		{"invalid to", &event.Message{Header: event.Header{ID: "1", From: xmppAddr(ghost), To: xmppAddr("a b@localhost")}, Body: "x"}},
		{"empty to", &event.Message{Header: event.Header{ID: "1", From: xmppAddr(ghost), To: xmppAddr("")}, Body: "x"}},
		{"other network", &event.Message{Header: event.Header{ID: "1", From: xmppAddr(ghost), To: event.Address{Network: event.Matrix, ID: "@alice:matrix.org"}}, Body: "x"}},
		{"no body", &event.Message{Header: event.Header{ID: "1", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")}}},
		{"failure from outside", &event.Failure{Header: event.Header{ID: "1", From: xmppAddr("localhost"), To: xmppAddr("alice@localhost")}, EventID: "alice@localhost/1"}},
		{"nil", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not connected either: a translation error must win, being
			// permanent.
			_, err := a.Send(t.Context(), tt.evt)
			if err == nil || !bridges.IsPermanent(err) {
				t.Fatalf("Send = %v, want a permanent error", err)
			}
		})
	}
}

func TestSendNotConnected(t *testing.T) {
	a := newTestAdapter(t)
	m := &event.Message{Header: event.Header{ID: "1", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")}, Body: "x"}
	_, err := a.Send(t.Context(), m)
	if !errors.Is(err, errNotConnected) || bridges.IsPermanent(err) {
		t.Fatalf("Send = %v, want a non-permanent errNotConnected", err)
	}
}

func TestSendersResolve(t *testing.T) {
	s := newSenders(2)
	s.remember("alice@localhost/m1", mustJID(t, "alice@localhost/phone"))
	s.remember("alice@localhost/m2", mustJID(t, "alice@localhost/laptop"))
	s.remember("bob@localhost/m3", mustJID(t, "bob@localhost/pc"))
	s.remember("carol@localhost/m4", mustJID(t, "carol@localhost")) // bare: nothing to learn

	tests := []struct{ eventID, to, want string }{
		{"alice@localhost/m2", "alice@localhost", "alice@localhost/laptop"},
		// m1 was forgotten (size 2): the last resource of alice is used.
		{"alice@localhost/m1", "alice@localhost", "alice@localhost/laptop"},
		{"bob@localhost/m3", "bob@localhost", "bob@localhost/pc"},
		// An event of someone else never redirects.
		{"bob@localhost/m3", "alice@localhost", "alice@localhost/laptop"},
		{"carol@localhost/m4", "carol@localhost", "carol@localhost"},
		{"x", "dave@localhost", "dave@localhost"},
		{"x", "dave@localhost/res", "dave@localhost/res"},
	}
	for _, tt := range tests {
		if got := s.resolve(tt.eventID, mustJID(t, tt.to)).String(); got != tt.want {
			t.Errorf("resolve(%q, %q) = %q, want %q", tt.eventID, tt.to, got, tt.want)
		}
	}
}

func TestFIFOMap(t *testing.T) {
	f := newFIFOMap(3)
	for _, k := range []string{"a", "b", "c", "a", "d", "e"} {
		f.put(k, k+"!")
	}
	for k, want := range map[string]bool{"a": false, "b": false, "c": true, "d": true, "e": true} {
		if _, ok := f.get(k); ok != want {
			t.Errorf("get(%q) ok = %t, want %t", k, ok, want)
		}
	}
	if len(f.m) != 3 {
		t.Errorf("len = %d, want 3", len(f.m))
	}
}

// FuzzParseMessage feeds arbitrary XML to the inbound message path: decoding
// must not panic, and whatever it dispatches must be well formed.
func FuzzParseMessage(f *testing.F) {
	seeds := []string{
		msg(`<body>hello</body>`, "type", "chat", "id", "m1", "from", "alice@localhost/phone", "to", ghost),
		msg(`<body>hi</body><origin-id xmlns="urn:xmpp:sid:0" id="o-1"/><request xmlns="urn:xmpp:receipts"/>`, "type", "chat", "id", "m1", "from", "alice@localhost/phone", "to", ghost),
		msg(`<body xml:lang="de">hallo</body><body>hello</body><nick xmlns="http://jabber.org/protocol/nick">A</nick>`, "xml:lang", "en", "from", "alice@localhost", "to", ghost+"/r"),
		msg(`<composing xmlns="http://jabber.org/protocol/chatstates"/>`, "type", "chat", "from", "alice@localhost/phone", "to", ghost),
		msg(`<body>hi</body>`, "type", "error", "from", "alice@localhost/phone", "to", ghost),
		msg(`<body>hi</body>`, "from", "mallory@evil.example", "to", ghost),
		msg(`<body>hi</body>`, "from", "alice@localhost", "to", "matrix.localhost"),
		`<message from="alice@localhost" to="` + ghost + `"><body><![CDATA[<x>]]></body></message>`,
		`<message><body>`,
		`<iq/>`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	a := newTestAdapter(f)
	var codec AddressCodec
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeMessage(xml.NewDecoder(bytes.NewReader(data)))
		if err != nil {
			return
		}
		in := a.translateMessage(m, testNow)
		switch in.action {
		case ignore:
		case refuse:
			if in.from.Localpart() != "" && a.allowedSender(in.from) && in.to.Localpart() != "" {
				t.Fatalf("refused an allowed sender writing to a ghost: %+v", in)
			}
			_ = render(t, errorReply(in, in.err))
		case dispatch:
			e := in.evt
			if e.Body == "" || e.From.Network != event.XMPP || e.To.Network != event.XMPP {
				t.Fatalf("bad event %+v", e)
			}
			if !strings.HasPrefix(e.ID, e.From.ID+"/") || len(e.ID) == len(e.From.ID)+1 {
				t.Fatalf("event ID %q does not start with %q and an ID", e.ID, e.From.ID+"/")
			}
			user, domain, err := codec.Split(e.From.ID)
			if err != nil || user == "" || !a.allowedSender(mustJID(t, e.From.ID)) {
				t.Fatalf("sender %q not a user of the server's domains (%v)", e.From.ID, err)
			}
			_ = domain
			if _, domain, err := codec.Split(e.To.ID); err != nil || domain != "matrix.localhost" {
				t.Fatalf("recipient %q not under the component domain (%v)", e.To.ID, err)
			}
			if stanzaIDOf(e.ID) == e.ID {
				t.Fatalf("stanzaIDOf(%q) does not find the stanza ID", e.ID)
			}
			if in.receipt {
				_ = render(t, receiptReply(in))
			}
		}
	})
}

func mustJID(t testing.TB, s string) jid.JID {
	t.Helper()
	j, err := jid.Parse(s)
	if err != nil {
		t.Fatalf("parse JID %q: %v", s, err)
	}
	return j
}
