package xmpp

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// pres returns a <presence/> in the component namespace with the given
// attributes (name, value pairs) and inner XML.
func pres(inner string, attrs ...string) string {
	var b strings.Builder
	b.WriteString(`<presence xmlns="jabber:component:accept"`)
	for i := 0; i+1 < len(attrs); i += 2 {
		b.WriteString(" " + attrs[i] + `="` + attrs[i+1] + `"`)
	}
	b.WriteString(">" + inner + "</presence>")
	return b.String()
}

// randomIDs hides the random stanza IDs of replies.
var randomIDs = regexp.MustCompile(` id="[A-Za-z0-9]{16}"`)

// drain returns the events dispatched so far.
func drain(h *fakeHost) []event.Event {
	var evts []event.Event
	for {
		select {
		case e := <-h.dispatched:
			evts = append(evts, e)
		default:
			return evts
		}
	}
}

func presenceEvt(state event.PresenceState, status string) *event.Presence {
	return &event.Presence{
		Header: event.Header{From: xmppAddr("alice@localhost"), To: xmppAddr(ghost), Time: testNow},
		State:  state, Status: status,
	}
}

func subscriptionEvt(active bool) *event.Subscription {
	return &event.Subscription{
		Header: event.Header{From: xmppAddr("alice@localhost"), To: xmppAddr(ghost), Time: testNow},
		Active: active,
	}
}

func TestHandlePresence(t *testing.T) {
	const from = "alice@localhost/phone"
	presenceErr := func(typ, cond string) string {
		return `<presence type="error" to="` + from + `" from="` + ghost + `" id="p1"><error type="` + typ + `"><` + cond + ` xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"></` + cond + `></error></presence>`
	}
	reply := func(typ string) string {
		return `<presence type="` + typ + `" to="alice@localhost" from="` + ghost + `"></presence>`
	}
	tests := []struct {
		name     string
		in       string
		dispatch error
		want     string // replies, random IDs removed
		wantEvts []event.Event
	}{
		{
			name:     "available",
			in:       pres(``, "id", "p1", "from", from, "to", ghost),
			wantEvts: []event.Event{presenceEvt(event.Available, "")},
		},
		{
			name:     "chat is available",
			in:       pres(`<show>chat</show><status>free</status>`, "from", from, "to", ghost),
			wantEvts: []event.Event{presenceEvt(event.Available, "free")},
		},
		{
			name:     "away with status",
			in:       pres(`<show>away</show><status>lunch</status><priority>5</priority>`, "from", from, "to", ghost),
			wantEvts: []event.Event{presenceEvt(event.Away, "lunch")},
		},
		{
			name:     "xa",
			in:       pres(`<show> xa </show>`, "from", from, "to", ghost),
			wantEvts: []event.Event{presenceEvt(event.ExtendedAway, "")},
		},
		{
			name:     "dnd",
			in:       pres(`<show>dnd</show>`, "from", from, "to", ghost+"/res"),
			wantEvts: []event.Event{presenceEvt(event.DoNotDisturb, "")},
		},
		{
			name:     "status in the stanza's language",
			in:       pres(`<status xml:lang="de">Mittag</status><status xml:lang="en">lunch</status>`, "xml:lang", "en", "from", from, "to", ghost),
			wantEvts: []event.Event{presenceEvt(event.Available, "lunch")},
		},
		{
			name:     "over-long status is truncated",
			in:       pres(`<status>`+strings.Repeat("é", maxStatus+10)+`</status>`, "from", from, "to", ghost),
			wantEvts: []event.Event{presenceEvt(event.Available, strings.Repeat("é", maxStatus))},
		},
		{
			name:     "unavailable",
			in:       pres(`<status>bye</status>`, "type", "unavailable", "from", from, "to", ghost),
			wantEvts: []event.Event{presenceEvt(event.Offline, "bye")},
		},
		{
			name:     "presence not accepted is not answered",
			in:       pres(``, "from", from, "to", ghost),
			dispatch: fmt.Errorf("route: %w", bridges.ErrNoRoute),
			wantEvts: []event.Event{presenceEvt(event.Available, "")},
		},
		{
			name: "unknown show",
			in:   pres(`<show>busy</show>`, "id", "p1", "from", from, "to", ghost),
			want: presenceErr("modify", "bad-request"),
		},
		{
			name: "two shows",
			in:   pres(`<show>away</show><show>dnd</show>`, "id", "p1", "from", from, "to", ghost),
			want: presenceErr("modify", "bad-request"),
		},
		{
			name:     "unavailable with an unknown show",
			in:       pres(`<show>busy</show>`, "type", "unavailable", "from", from, "to", ghost),
			wantEvts: []event.Event{presenceEvt(event.Offline, "")},
		},
		{
			name: "unknown type",
			in:   pres(``, "type", "invisible", "id", "p1", "from", from, "to", ghost),
			want: presenceErr("modify", "bad-request"),
		},
		{
			name: "remote sender",
			in:   pres(``, "type", "subscribe", "id", "p1", "from", "mallory@evil.example", "to", ghost),
			want: `<presence type="error" to="mallory@evil.example" from="` + ghost + `" id="p1"><error type="cancel"><not-allowed xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"></not-allowed><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">Only users of localhost may use this gateway.</text></error></presence>`,
		},
		{
			name:     "subscribe",
			in:       pres(``, "type", "subscribe", "id", "p1", "from", "alice@localhost", "to", ghost),
			want:     reply("subscribed") + reply("subscribe"),
			wantEvts: []event.Event{subscriptionEvt(true)},
		},
		{
			name:     "subscribe to nobody",
			in:       pres(``, "type", "subscribe", "id", "p1", "from", "alice@localhost", "to", ghost),
			dispatch: fmt.Errorf("route: %w", bridges.ErrNoRoute),
			want:     reply("unsubscribed"),
			wantEvts: []event.Event{subscriptionEvt(true)},
		},
		{
			name:     "subscribe refused",
			in:       pres(``, "type", "subscribe", "id", "p1", "from", "alice@localhost", "to", ghost),
			dispatch: fmt.Errorf("route: %w", bridges.ErrRefused),
			want:     reply("unsubscribed"),
			wantEvts: []event.Event{subscriptionEvt(true)},
		},
		{
			name:     "subscribe not stored",
			in:       pres(``, "type", "subscribe", "id", "p1", "from", "alice@localhost", "to", ghost),
			dispatch: errors.New("database is locked"),
			want:     `<presence type="error" to="alice@localhost" from="` + ghost + `" id="p1"><error type="wait"><internal-server-error xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"></internal-server-error></error></presence>`,
			wantEvts: []event.Event{subscriptionEvt(true)},
		},
		{
			name:     "unsubscribe",
			in:       pres(``, "type", "unsubscribe", "from", "alice@localhost", "to", ghost),
			want:     reply("unsubscribed"),
			wantEvts: []event.Event{subscriptionEvt(false)},
		},
		{
			name:     "unsubscribe not stored is confirmed anyway",
			in:       pres(``, "type", "unsubscribe", "from", "alice@localhost", "to", ghost),
			dispatch: errors.New("database is locked"),
			want:     reply("unsubscribed"),
			wantEvts: []event.Event{subscriptionEvt(false)},
		},
		{
			name:     "probe",
			in:       pres(``, "type", "probe", "from", "alice@localhost", "to", ghost),
			wantEvts: []event.Event{subscriptionEvt(true)},
		},
		{
			name:     "probe of nobody",
			in:       pres(``, "type", "probe", "from", "alice@localhost", "to", ghost),
			dispatch: fmt.Errorf("route: %w", bridges.ErrNoRoute),
			want:     reply("unsubscribed"),
			wantEvts: []event.Event{subscriptionEvt(true)},
		},
		{
			name: "subscribed",
			in:   pres(``, "type", "subscribed", "from", "alice@localhost", "to", ghost),
		},
		{
			name: "unsubscribed",
			in:   pres(``, "type", "unsubscribed", "from", "alice@localhost", "to", ghost),
		},
		{
			name: "error",
			in:   pres(`<error type="cancel"><remote-server-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error>`, "type", "error", "from", "alice@localhost", "to", ghost),
		},
		{
			name: "to the component domain",
			in:   pres(``, "from", from, "to", "matrix.localhost"),
		},
		{
			name: "subscribe to the component domain",
			in:   pres(``, "type", "subscribe", "from", from, "to", "matrix.localhost"),
		},
		{
			name: "to another domain",
			in:   pres(``, "from", from, "to", "bob@elsewhere.example"),
		},
		{
			name: "from the component domain",
			in:   pres(``, "type", "subscribe", "from", ghost, "to", "carol%x@matrix.localhost"),
		},
		{
			name: "without sender",
			in:   pres(``, "to", ghost),
		},
		{
			name: "undecodable",
			in:   `<presence xmlns="jabber:component:accept" from="alice@localhost" to="` + ghost + `"><status>hi</statu></presence>`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAdapter(t)
			h := newFakeHost()
			h.setDispatch(func(event.Event) error { return tt.dispatch })
			a.host = h
			got := randomIDs.ReplaceAllString(handle(t, a, tt.in), "")
			if got != tt.want {
				t.Errorf("reply:\ngot  %s\nwant %s", got, tt.want)
			}
			if evts := drain(h); !reflect.DeepEqual(evts, tt.wantEvts) {
				t.Errorf("dispatched:\ngot  %s\nwant %s", fmtEvents(evts), fmtEvents(tt.wantEvts))
			}
		})
	}
}

func fmtEvents(evts []event.Event) string {
	var b strings.Builder
	for _, e := range evts {
		fmt.Fprintf(&b, "%T%+v ", e, e)
	}
	return b.String()
}

// TestPresenceResources checks that the presence dispatched for a user is
// that of their most available resource.
func TestPresenceResources(t *testing.T) {
	a := newTestAdapter(t)
	h := newFakeHost()
	a.host = h
	steps := []struct {
		in   string
		want *event.Presence
	}{
		{pres(`<show>away</show><status>phone away</status>`, "from", "alice@localhost/phone", "to", ghost), presenceEvt(event.Away, "phone away")},
		{pres(`<status>at my desk</status>`, "from", "alice@localhost/laptop", "to", ghost), presenceEvt(event.Available, "at my desk")},
		// The phone going xa changes nothing: the laptop is available.
		{pres(`<show>xa</show>`, "from", "alice@localhost/phone", "to", ghost), presenceEvt(event.Available, "at my desk")},
		// Nor does the phone going offline.
		{pres(``, "type", "unavailable", "from", "alice@localhost/phone", "to", ghost), presenceEvt(event.Available, "at my desk")},
		{pres(`<show>dnd</show>`, "from", "alice@localhost/phone", "to", ghost), presenceEvt(event.Available, "at my desk")},
		// The laptop leaves: the phone decides.
		{pres(`<status>gone</status>`, "type", "unavailable", "from", "alice@localhost/laptop", "to", ghost), presenceEvt(event.DoNotDisturb, "")},
		{pres(`<status>bye</status>`, "type", "unavailable", "from", "alice@localhost/phone", "to", ghost), presenceEvt(event.Offline, "bye")},
		// Presence to another ghost is kept apart.
		{pres(`<show>away</show>`, "from", "alice@localhost/phone", "to", ghost), presenceEvt(event.Away, "")},
		{pres(``, "from", "alice@localhost/laptop", "to", ghost), presenceEvt(event.Available, "")},
		// Unavailable from the bare JID: every resource is gone.
		{pres(``, "type", "unavailable", "from", "alice@localhost", "to", ghost), presenceEvt(event.Offline, "")},
		{pres(`<show>xa</show>`, "from", "alice@localhost/phone", "to", ghost), presenceEvt(event.ExtendedAway, "")},
	}
	for i, s := range steps {
		if got := handle(t, a, s.in); got != "" {
			t.Fatalf("step %d: reply %s", i, got)
		}
		evts := drain(h)
		if len(evts) != 1 || !reflect.DeepEqual(evts[0], s.want) {
			t.Fatalf("step %d (%s): dispatched %s, want %s", i, s.in, fmtEvents(evts), fmtEvents([]event.Event{s.want}))
		}
	}
	// Another ghost sees only what was sent to it.
	other := "carol%matrix.org@matrix.localhost"
	handle(t, a, pres(`<show>dnd</show>`, "from", "alice@localhost/laptop", "to", other))
	evts := drain(h)
	if len(evts) != 1 || evts[0].(*event.Presence).State != event.DoNotDisturb {
		t.Fatalf("dispatched %s, want dnd", fmtEvents(evts))
	}
	// A new session forgets the resources.
	a.presences.reset()
	if len(a.presences.pairs) != 0 {
		t.Fatalf("reset kept %d pairs", len(a.presences.pairs))
	}
}

func TestPresencesBounded(t *testing.T) {
	p := newPresences(1)
	if s, _ := p.update("a@x", "g@y", "r", event.Away, ""); s != event.Away {
		t.Fatalf("state %s", s)
	}
	// The table is full: another pair is not merged, nor recorded.
	if s, _ := p.update("b@x", "g@y", "r", event.DoNotDisturb, ""); s != event.DoNotDisturb || len(p.pairs) != 1 {
		t.Fatalf("state %s, %d pairs", s, len(p.pairs))
	}
	for i := range maxResources + 5 {
		p.update("a@x", "g@y", fmt.Sprint("r", i), event.ExtendedAway, "")
	}
	if n := len(p.pairs[presencePair{"a@x", "g@y"}]); n != maxResources {
		t.Fatalf("%d resources kept, want %d", n, maxResources)
	}
	// Offline for an unknown pair is harmless.
	if s, st := p.update("c@x", "g@y", "r", event.Offline, "bye"); s != event.Offline || st != "bye" {
		t.Fatalf("got %s %q", s, st)
	}
}

func TestSubscriptionRateLimit(t *testing.T) {
	a := newTestAdapter(t)
	now := testNow
	a.now = func() time.Time { return now }
	h := newFakeHost()
	a.host = h
	subscribe := pres(``, "type", "subscribe", "from", "alice@localhost/phone", "to", ghost)
	for range subscribeBurst + 10 {
		handle(t, a, subscribe)
	}
	if n := len(drain(h)); n != subscribeBurst {
		t.Fatalf("%d subscriptions dispatched, want %d", n, subscribeBurst)
	}
	// Another sender is not held back.
	handle(t, a, pres(``, "type", "subscribe", "from", "bob@localhost", "to", ghost))
	if n := len(drain(h)); n != 1 {
		t.Fatalf("%d subscriptions of another sender dispatched, want 1", n)
	}
	// A second later, the sender may send subscribeRate more.
	now = now.Add(time.Second)
	for range subscribeRate + 5 {
		handle(t, a, subscribe)
	}
	if n := len(drain(h)); n != subscribeRate {
		t.Fatalf("%d subscriptions dispatched after a second, want %d", n, subscribeRate)
	}
	// Refusals are limited too.
	for range subscribeBurst + 10 {
		handle(t, a, pres(``, "type", "subscribe", "from", "mallory@evil.example", "to", ghost))
	}
	if n := len(drain(h)); n != 0 {
		t.Fatalf("%d subscriptions of a remote sender dispatched", n)
	}
	if got := handle(t, a, pres(``, "type", "subscribe", "from", "mallory@evil.example", "to", ghost)); got != "" {
		t.Errorf("refusal beyond the rate: %s", got)
	}
	// Probes have their own budget; presence updates none.
	handle(t, a, pres(``, "type", "probe", "from", "alice@localhost", "to", ghost))
	handle(t, a, pres(``, "from", "alice@localhost/phone", "to", ghost))
	if n := len(drain(h)); n != 2 {
		t.Fatalf("%d events dispatched, want 2", n)
	}
}

func TestOutboundPresence(t *testing.T) {
	a := newTestAdapter(t)
	head := event.Header{ID: "p1", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")}
	id := stableID("p1")
	open := `<presence to="alice@localhost" from="` + ghost + `" id="` + id + `"`
	tests := []struct {
		name  string
		state event.PresenceState
		text  string
		want  string
	}{
		{"available", event.Available, "", open + `></presence>`},
		{"available with status", event.Available, "in <office> & more", open + `><status>in &lt;office&gt; &amp; more</status></presence>`},
		{"away", event.Away, "lunch", open + `><show>away</show><status>lunch</status></presence>`},
		{"xa", event.ExtendedAway, "", open + `><show>xa</show></presence>`},
		{"dnd", event.DoNotDisturb, "", open + `><show>dnd</show></presence>`},
		{"on the phone", event.OnThePhone, "", open + `><show>dnd</show><status>On the phone</status></presence>`},
		{"on the phone with status", event.OnThePhone, "with Bob", open + `><show>dnd</show><status>On the phone: with Bob</status></presence>`},
		{"offline", event.Offline, "bye", `<presence type="unavailable" to="alice@localhost" from="` + ghost + `" id="` + id + `"><status>bye</status></presence>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotID, r, err := a.outboundPresence(&event.Presence{Header: head, State: tt.state, Status: tt.text})
			if err != nil {
				t.Fatal(err)
			}
			if gotID != id {
				t.Errorf("ID %q, want %q", gotID, id)
			}
			if got := render(t, r); got != tt.want {
				t.Errorf("stanza:\ngot  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestOutboundSubscription(t *testing.T) {
	a := newTestAdapter(t)
	id := stableID("s1")
	tests := []struct {
		name string
		evt  *event.Subscription
		want string
	}{
		{
			name: "subscribe",
			evt:  &event.Subscription{Header: event.Header{ID: "s1", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")}, Active: true},
			want: `<presence type="subscribe" to="alice@localhost" from="` + ghost + `" id="` + id + `"></presence>`,
		},
		{
			name: "subscribe with nick",
			evt:  &event.Subscription{Header: event.Header{ID: "s1", From: xmppAddr(ghost), To: xmppAddr("alice@localhost"), FromName: "Bob"}, Active: true},
			want: `<presence type="subscribe" to="alice@localhost" from="` + ghost + `" id="` + id + `"><nick xmlns="http://jabber.org/protocol/nick">Bob</nick></presence>`,
		},
		{
			name: "unsubscribe",
			evt:  &event.Subscription{Header: event.Header{ID: "s1", From: xmppAddr(ghost), To: xmppAddr("alice@localhost"), FromName: "Bob"}},
			want: `<presence type="unsubscribe" to="alice@localhost" from="` + ghost + `" id="` + id + `"></presence>`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, r, err := a.outboundSubscription(tt.evt)
			if err != nil {
				t.Fatal(err)
			}
			if got := render(t, r); got != tt.want {
				t.Errorf("stanza:\ngot  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestSendPresenceErrors(t *testing.T) {
	a := newTestAdapter(t)
	ok := event.Header{ID: "1", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")}
	permanent := []event.Event{
		&event.Presence{Header: ok, State: event.OnThePhone + 1},
		&event.Presence{Header: event.Header{From: xmppAddr("bob@elsewhere.example"), To: xmppAddr("alice@localhost")}},
		&event.Subscription{Header: event.Header{From: xmppAddr(ghost), To: event.Address{Network: event.Matrix, ID: "@a:b"}}},
	}
	for _, evt := range permanent {
		if _, err := a.Send(t.Context(), evt); err == nil || !bridges.IsPermanent(err) {
			t.Errorf("Send(%+v) = %v, want a permanent error", evt, err)
		}
	}
	for _, evt := range []event.Event{&event.Presence{Header: ok, State: event.Away}, &event.Subscription{Header: ok, Active: true}} {
		if _, err := a.Send(t.Context(), evt); !errors.Is(err, errNotConnected) || bridges.IsPermanent(err) {
			t.Errorf("Send(%T) = %v, want a non-permanent errNotConnected", evt, err)
		}
	}
}

// TestAdapterPresenceExchange runs presence through a live component
// session: a subscription is approved and asked back, and Send writes
// presence.
func TestAdapterPresenceExchange(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	a, h := startAdapter(t, srv.addr(), "s3cret")
	wantState(t, h, bridges.Starting)
	c := srv.next(t)
	wantState(t, h, bridges.Connected)

	c.write(`<presence type="subscribe" id="s1" from="alice@localhost" to="` + ghost + `"/>`)
	select {
	case evt := <-h.dispatched:
		if s, ok := evt.(*event.Subscription); !ok || !s.Active || s.From.ID != "alice@localhost" || s.To.ID != ghost {
			t.Fatalf("dispatched %+v", evt)
		}
	case <-time.After(testTimeout):
		t.Fatal("nothing dispatched")
	}
	for _, typ := range []string{"subscribed", "subscribe"} {
		r := c.recv(t)
		if r.XMLName.Local != "presence" || r.attr("type") != typ || r.attr("from") != ghost || r.attr("to") != "alice@localhost" {
			t.Fatalf("want %s, got %+v", typ, r)
		}
	}

	c.write(`<presence from="alice@localhost/phone" to="` + ghost + `"><show>away</show></presence>`)
	select {
	case evt := <-h.dispatched:
		if p, ok := evt.(*event.Presence); !ok || p.State != event.Away || p.From.ID != "alice@localhost" || p.To.ID != ghost {
			t.Fatalf("dispatched %+v", evt)
		}
	case <-time.After(testTimeout):
		t.Fatal("nothing dispatched")
	}

	p := &event.Presence{Header: event.Header{ID: "x", From: xmppAddr(ghost), To: xmppAddr("alice@localhost")}, State: event.DoNotDisturb, Status: "busy"}
	if _, err := a.Send(t.Context(), p); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := c.recv(t)
	if r.XMLName.Local != "presence" || r.attr("type") != "" || r.attr("from") != ghost || r.Inner != `<show>dnd</show><status>busy</status>` {
		t.Fatalf("sent %+v", r)
	}

	// After a new connection, the users whose resources were online are
	// probed: their presence may have changed meanwhile.
	_ = c.conn.Close()
	wantState(t, h, bridges.Reconnecting)
	c = srv.next(t)
	wantState(t, h, bridges.Connected)
	r = c.recv(t)
	if r.XMLName.Local != "presence" || r.attr("type") != "probe" || r.attr("from") != ghost || r.attr("to") != "alice@localhost" {
		t.Fatalf("want a probe, got %+v", r)
	}
	a.presences.mu.Lock()
	n := len(a.presences.pairs)
	a.presences.mu.Unlock()
	if n != 0 {
		t.Errorf("%d pairs kept across connections", n)
	}
}

// FuzzPresence feeds arbitrary XML to the inbound presence path: decoding
// must not panic, and whatever it would apply must be well formed.
func FuzzPresence(f *testing.F) {
	seeds := []string{
		pres(``, "from", "alice@localhost/phone", "to", ghost),
		pres(`<show>away</show><status>lunch</status><priority>1</priority>`, "from", "alice@localhost/phone", "to", ghost),
		pres(`<status xml:lang="de">weg</status><status>away</status>`, "xml:lang", "en", "type", "unavailable", "from", "alice@localhost", "to", ghost+"/r"),
		pres(``, "type", "subscribe", "from", "alice@localhost", "to", ghost),
		pres(``, "type", "probe", "from", "alice@localhost", "to", ghost),
		pres(``, "type", "bogus", "from", "alice@localhost", "to", ghost),
		pres(`<show>busy</show>`, "from", "alice@localhost", "to", ghost),
		pres(``, "type", "subscribe", "from", "mallory@evil.example", "to", ghost),
		pres(``, "from", "alice@localhost", "to", "matrix.localhost"),
		`<presence><status>`,
		`<message/>`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	a := newTestAdapter(f)
	a.host = newFakeHost()
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decodePresence(xml.NewDecoder(bytes.NewReader(data)))
		if err != nil {
			return
		}
		in := a.translatePresence(p)
		if in.action == presenceIgnore || in.action == presenceRefuse {
			return
		}
		if !a.allowedSender(in.from) || in.to.Localpart() == "" || in.to.Domainpart() != "matrix.localhost" || in.to.Resourcepart() != "" {
			t.Fatalf("would apply %+v", in)
		}
		if in.action == presenceUpdate {
			if in.state > event.DoNotDisturb {
				t.Fatalf("state %s", in.state)
			}
			if len([]rune(in.status)) > maxStatus {
				t.Fatalf("status of %d characters", len([]rune(in.status)))
			}
		}
		h := newFakeHost()
		a.host = h
		var buf bytes.Buffer
		e := xml.NewEncoder(&buf)
		switch in.action {
		case presenceUpdate:
			err = a.dispatchPresence(context.Background(), in)
		default:
			err = a.handleSubscription(context.Background(), e, in)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(); err != nil {
			t.Fatal(err)
		}
	})
}
