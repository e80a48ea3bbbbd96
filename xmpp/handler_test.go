package xmpp

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"mellium.im/xmlstream"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
)

type stateChange struct {
	state bridges.State
	err   error
}

// fakeHost records what an adapter asks of the routing core.
type fakeHost struct {
	states     chan stateChange
	dispatched chan event.Event
	links      *bridgestest.Links

	mu       sync.Mutex
	dispatch func(event.Event) error // nil accepts everything
}

func newFakeHost() *fakeHost {
	return &fakeHost{states: make(chan stateChange, 1024), dispatched: make(chan event.Event, 1024), links: bridgestest.NewLinks()}
}

func (h *fakeHost) Dispatch(_ context.Context, evt event.Event) error {
	h.dispatched <- evt
	h.mu.Lock()
	f := h.dispatch
	h.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(evt)
}

func (h *fakeHost) setDispatch(f func(event.Event) error) {
	h.mu.Lock()
	h.dispatch = f
	h.mu.Unlock()
}

func (h *fakeHost) SetState(n event.Network, s bridges.State, err error) {
	if n != event.XMPP {
		panic("SetState for network " + string(n))
	}
	h.states <- stateChange{s, err}
}

func (h *fakeHost) Links(event.Network) bridges.Links { return h.links }
func (h *fakeHost) Profile(event.Address) string      { return "" }
func (h *fakeHost) Reachable(event.Address)           {}

// handle runs the adapter's handler on one stanza as Serve would and returns
// what it wrote.
func handle(t *testing.T, a *Adapter, stanzaXML string) string {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(stanzaXML))
	tok, err := d.Token()
	if err != nil {
		t.Fatalf("read %s: %v", stanzaXML, err)
	}
	start := tok.(xml.StartElement)
	var buf bytes.Buffer
	e := xml.NewEncoder(&buf)
	rw := struct {
		xml.TokenReader
		*xml.Encoder
	}{xmlstream.InnerElement(d), e}
	out := &replies{queue: make(chan []xml.Token, 16)}
	if err := a.handler(t.Context(), out).HandleXMPP(rw, &start); err != nil {
		t.Fatalf("HandleXMPP: %v", err)
	}
	// The replies queued for the session's writer, in order.
	for len(out.queue) > 0 {
		for _, tok := range <-out.queue {
			if err := e.EncodeToken(tok); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := e.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestHandleMessage(t *testing.T) {
	const from = "alice@localhost/phone"
	receiptID := stableID("receipt alice@localhost/m1")
	tests := []struct {
		name     string
		in       string
		dispatch error
		// want is the reply; "" when none.
		want         string
		wantDispatch bool
	}{
		{
			name:         "accepted with receipt",
			in:           msg(`<body>hi</body><request xmlns="urn:xmpp:receipts"/>`, "type", "chat", "id", "m1", "from", from, "to", ghost),
			wantDispatch: true,
			want:         `<message type="chat" to="alice@localhost/phone" from="` + ghost + `" id="` + receiptID + `"><received xmlns="urn:xmpp:receipts" id="m1"></received></message>`,
		},
		{
			name:         "accepted without receipt",
			in:           msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", from, "to", ghost),
			wantDispatch: true,
		},
		{
			name:         "no route",
			in:           msg(`<body>hi</body><request xmlns="urn:xmpp:receipts"/>`, "type", "chat", "id", "m1", "from", from, "to", ghost),
			dispatch:     fmt.Errorf("route: %w", bridges.ErrNoRoute),
			wantDispatch: true,
			want:         `<message type="error" to="alice@localhost/phone" from="` + ghost + `" id="m1"><error type="cancel"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"></item-not-found></error></message>`,
		},
		{
			name:         "refused",
			in:           msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", from, "to", ghost),
			dispatch:     fmt.Errorf("route: %w", bridges.ErrRefused),
			wantDispatch: true,
			want:         `<message type="error" to="alice@localhost/phone" from="` + ghost + `" id="m1"><error type="auth"><forbidden xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"></forbidden></error></message>`,
		},
		{
			name:         "store failure",
			in:           msg(`<body>hi</body>`, "type", "normal", "id", "m1", "from", from, "to", ghost),
			dispatch:     errors.New("database is locked"),
			wantDispatch: true,
			want:         `<message type="error" to="alice@localhost/phone" from="` + ghost + `" id="m1"><error type="wait"><internal-server-error xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"></internal-server-error></error></message>`,
		},
		{
			name: "remote sender refused",
			in:   msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", "mallory@evil.example/x", "to", ghost),
			want: `<message type="error" to="mallory@evil.example/x" from="` + ghost + `" id="m1"><error type="cancel"><not-allowed xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"></not-allowed><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">Only users of localhost may use this gateway.</text></error></message>`,
		},
		{
			name: "to the component domain",
			in:   msg(`<body>hi</body>`, "type", "chat", "id", "m1", "from", from, "to", "matrix.localhost"),
			want: `<message type="error" to="alice@localhost/phone" from="matrix.localhost" id="m1"><error type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"></service-unavailable></error></message>`,
		},
		{
			name: "chat state",
			in:   msg(`<active xmlns="http://jabber.org/protocol/chatstates"/>`, "type", "chat", "id", "m1", "from", from, "to", ghost),
		},
		{
			name: "error from a user",
			in:   msg(`<error type="cancel"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error>`, "type", "error", "id", "x", "from", from, "to", ghost),
		},
		{
			name: "presence to the component domain",
			in:   `<presence xmlns="jabber:component:accept" from="alice@localhost/phone" to="matrix.localhost" type="subscribe"/>`,
		},
		{
			name: "unknown element",
			in:   `<foo xmlns="jabber:component:accept"/>`,
		},
		{
			name: "undecodable message",
			in:   `<message xmlns="jabber:component:accept" from="alice@localhost" to="` + ghost + `"><body>hi</bod></message>`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAdapter(t)
			h := newFakeHost()
			h.setDispatch(func(event.Event) error { return tt.dispatch })
			a.host = h
			got := handle(t, a, tt.in)
			if got != tt.want {
				t.Errorf("reply:\ngot  %s\nwant %s", got, tt.want)
			}
			select {
			case evt := <-h.dispatched:
				if !tt.wantDispatch {
					t.Errorf("dispatched %+v", evt)
				}
			default:
				if tt.wantDispatch {
					t.Error("nothing dispatched")
				}
			}
			if tt.wantDispatch {
				if got := a.senders.resolve("alice@localhost/m1", mustJID(t, "alice@localhost")).String(); got != from {
					t.Errorf("sender remembered as %q, want %q", got, from)
				}
			}
		})
	}
}

func TestHandleIQ(t *testing.T) {
	iq := func(typ, from, to, inner string) string {
		return `<iq xmlns="jabber:component:accept" type="` + typ + `" id="q1" from="` + from + `" to="` + to + `">` + inner + `</iq>`
	}
	const (
		from  = "alice@localhost/phone"
		info  = `<query xmlns="http://jabber.org/protocol/disco#info"/>`
		items = `<query xmlns="http://jabber.org/protocol/disco#items"/>`
	)
	stanzaErr := func(to, from, typ, cond string) string {
		return `<iq type="error" to="` + to + `" from="` + from + `" id="q1"><error type="` + typ + `"><` + cond + ` xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"></` + cond + `></error></iq>`
	}
	tests := []struct {
		name, in, want string
	}{
		{
			name: "disco#info of the gateway",
			in:   iq("get", from, "matrix.localhost", info),
			want: `<iq type="result" to="alice@localhost/phone" from="matrix.localhost" id="q1"><query xmlns="http://jabber.org/protocol/disco#info"><identity category="gateway" type="matrix" name="Parley"></identity><identity category="conference" type="text" name="Matrix rooms"></identity><feature var="http://jabber.org/protocol/disco#info"></feature><feature var="http://jabber.org/protocol/disco#items"></feature><feature var="http://jabber.org/protocol/muc"></feature><feature var="urn:xmpp:receipts"></feature></query></iq>`,
		},
		{
			name: "disco#info from the server itself",
			in:   iq("get", "localhost", "matrix.localhost", info),
			want: `<iq type="result" to="localhost" from="matrix.localhost" id="q1"><query xmlns="http://jabber.org/protocol/disco#info"><identity category="gateway" type="matrix" name="Parley"></identity><identity category="conference" type="text" name="Matrix rooms"></identity><feature var="http://jabber.org/protocol/disco#info"></feature><feature var="http://jabber.org/protocol/disco#items"></feature><feature var="http://jabber.org/protocol/muc"></feature><feature var="urn:xmpp:receipts"></feature></query></iq>`,
		},
		{
			name: "disco#info of a ghost",
			in:   iq("get", from, ghost, info),
			want: `<iq type="result" to="alice@localhost/phone" from="` + ghost + `" id="q1"><query xmlns="http://jabber.org/protocol/disco#info"><identity category="client" type="pc"></identity><feature var="http://jabber.org/protocol/disco#info"></feature><feature var="urn:xmpp:receipts"></feature></query></iq>`,
		},
		{
			name: "disco#info of a served room",
			in:   iq("get", from, "#team%localhost@matrix.localhost", info),
			want: `<iq type="result" to="alice@localhost/phone" from="#team%localhost@matrix.localhost" id="q1"><query xmlns="http://jabber.org/protocol/disco#info"><identity category="conference" type="text" name="#team:localhost"></identity><feature var="http://jabber.org/protocol/disco#info"></feature><feature var="http://jabber.org/protocol/muc"></feature><feature var="urn:xmpp:sid:0"></feature><feature var="muc_open"></feature><feature var="muc_unmoderated"></feature><feature var="muc_semianonymous"></feature><feature var="muc_temporary"></feature></query></iq>`,
		},
		{
			name: "disco#info of a node",
			in:   iq("get", from, "matrix.localhost", `<query xmlns="http://jabber.org/protocol/disco#info" node="x"/>`),
			want: stanzaErr(from, "matrix.localhost", "cancel", "item-not-found"),
		},
		{
			name: "disco#items",
			in:   iq("get", from, "matrix.localhost", items),
			want: `<iq type="result" to="alice@localhost/phone" from="matrix.localhost" id="q1"><query xmlns="http://jabber.org/protocol/disco#items"></query></iq>`,
		},
		{
			name: "disco#items of a node",
			in:   iq("get", from, "matrix.localhost", `<query xmlns="http://jabber.org/protocol/disco#items" node="x"/>`),
			want: stanzaErr(from, "matrix.localhost", "cancel", "item-not-found"),
		},
		{
			name: "version",
			in:   iq("get", from, ghost, `<query xmlns="jabber:iq:version"/>`),
			want: stanzaErr(from, ghost, "cancel", "service-unavailable"),
		},
		{
			name: "ping",
			in:   iq("get", from, "matrix.localhost", `<ping xmlns="urn:xmpp:ping"/>`),
			want: stanzaErr(from, "matrix.localhost", "cancel", "service-unavailable"),
		},
		{
			name: "set",
			in:   iq("set", from, ghost, info),
			want: stanzaErr(from, ghost, "cancel", "service-unavailable"),
		},
		{
			name: "no payload",
			in:   iq("get", from, ghost, ``),
			want: stanzaErr(from, ghost, "modify", "bad-request"),
		},
		{
			name: "two payloads",
			in:   iq("get", from, ghost, info+items),
			want: stanzaErr(from, ghost, "modify", "bad-request"),
		},
		{
			name: "remote sender",
			in:   iq("get", "mallory@evil.example/x", "matrix.localhost", info),
			want: stanzaErr("mallory@evil.example/x", "matrix.localhost", "cancel", "not-allowed"),
		},
		{
			name: "result",
			in:   iq("result", from, ghost, ``),
		},
		{
			name: "error",
			in:   iq("error", from, ghost, `<error type="cancel"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error>`),
		},
		{
			name: "without sender",
			in:   `<iq xmlns="jabber:component:accept" type="get" id="q1" to="matrix.localhost">` + info + `</iq>`,
		},
		{
			name: "without id",
			in:   `<iq xmlns="jabber:component:accept" type="get" from="alice@localhost/phone" to="matrix.localhost">` + info + `</iq>`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAdapter(t)
			a.host = newFakeHost()
			if got := handle(t, a, tt.in); got != tt.want {
				t.Errorf("reply:\ngot  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestGatewayTypeConfigurable(t *testing.T) {
	cfg := validConfig()
	cfg.GatewayType = "xmpp"
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.host = newFakeHost()
	got := handle(t, a, `<iq xmlns="jabber:component:accept" type="get" id="q1" from="alice@localhost/phone" to="matrix.localhost"><query xmlns="http://jabber.org/protocol/disco#info"/></iq>`)
	if !strings.Contains(got, `<identity category="gateway" type="xmpp" name="Parley">`) {
		t.Errorf("reply %s does not show the configured gateway type", got)
	}
}
