package xmpp

import (
	"encoding/xml"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// startSelfPinging starts an adapter whose occupants ping themselves after
// a second of silence.
func startSelfPinging(t *testing.T, addr, secret string, h bridges.Host) *Adapter {
	t.Helper()
	cfg := validConfig()
	cfg.Server, cfg.Secret, cfg.SelfPing = addr, secret, time.Second
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.backoff = backoff{Backoff: bridges.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}, reset: time.Hour}
	if err := a.Start(t.Context(), h); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = a.Stop(t.Context()) })
	return a
}

// wantSelfPing reads the listener's self-ping (XEP-0410) and returns its ID.
func wantSelfPing(t *testing.T, c *fakeConn) string {
	t.Helper()
	p := c.recv(t)
	if p.XMLName.Local != "iq" || p.attr("type") != "get" || p.attr("from") != "matrix.localhost" ||
		p.attr("to") != testRoom+"/"+listenerNick || !strings.Contains(p.Inner, `xmlns="urn:xmpp:ping"`) {
		t.Fatalf("want the listener's self-ping, got %+v", p)
	}
	return p.attr("id")
}

// The listener of a silent room pings itself; the answers XEP-0410 lists as
// still joined leave it be, any other error has it join again.
func TestSelfPing(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	h := &fakeRoomHost{fakeHost: newFakeHost(), rooms: []event.Address{xmppAddr(testRoom)}}
	startSelfPinging(t, srv.addr(), "s3cret", h)
	c := srv.next(t)
	wantJoin(t, c, "matrix.localhost", listenerNick)
	c.write(selfPresence(listenerNick, "matrix.localhost"))

	answer := func(id, typ, condition string) {
		t.Helper()
		iq := `<iq type="` + typ + `" id="` + id + `" from="` + testRoom + `/` + listenerNick + `" to="matrix.localhost">`
		if condition != "" {
			iq += `<error type="cancel"><` + condition + ` xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error>`
		}
		c.write(iq + `</iq>`)
	}
	tests := []struct {
		typ, condition string
	}{
		{"result", ""},
		{"error", "service-unavailable"},
		{"error", "feature-not-implemented"},
		{"error", "remote-server-timeout"},
	}
	for _, tt := range tests {
		answer(wantSelfPing(t, c), tt.typ, tt.condition)
	}
	// Out of the room: it joins again.
	answer(wantSelfPing(t, c), "error", "not-acceptable")
	wantJoin(t, c, "matrix.localhost", listenerNick)
	c.write(selfPresence(listenerNick, "matrix.localhost"))
	// And keeps checking.
	answer(wantSelfPing(t, c), "result", "")
}

func TestStillJoined(t *testing.T) {
	tests := []struct {
		answer string
		want   bool
	}{
		{`<iq type="result" id="1"/>`, true},
		{`<iq type="error" id="1"><error type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`, true},
		{`<iq type="error" id="1"><error type="cancel"><feature-not-implemented xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`, true},
		{`<iq type="error" id="1"><error type="cancel"><remote-server-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`, true},
		{`<iq type="error" id="1"><error type="modify"><not-acceptable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`, false},
		{`<iq type="error" id="1"><error type="cancel"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`, false},
		{`<iq type="error" id="1"/>`, false},
	}
	for _, tt := range tests {
		var iq iqStanza
		if err := xml.Unmarshal([]byte(tt.answer), &iq); err != nil {
			t.Fatal(err)
		}
		if got := stillJoined(iq); got != tt.want {
			t.Errorf("stillJoined(%s) = %v, want %v", tt.answer, got, tt.want)
		}
	}
}

// A room that passes a self-ping on to Parley's occupant (a server that
// does not answer it itself) gets a result: the occupant is there.
func TestSelfPingPassedOn(t *testing.T) {
	a, err := New(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	a.host = newFakeHost()
	a.rooms.room(testRoom)
	got := handle(t, a, `<iq xmlns="jabber:component:accept" type="get" id="sp1" from="`+testRoom+`/Parley" to="matrix.localhost"><ping xmlns="urn:xmpp:ping"/></iq>`)
	if !strings.Contains(got, `type="result"`) || !strings.Contains(got, `id="sp1"`) {
		t.Errorf("reply %s, want a result", got)
	}
	// Not from a room: refused as before.
	got = handle(t, a, `<iq xmlns="jabber:component:accept" type="get" id="sp2" from="elsewhere.example/x" to="matrix.localhost"><ping xmlns="urn:xmpp:ping"/></iq>`)
	if !strings.Contains(got, `type="error"`) {
		t.Errorf("reply %s, want an error", got)
	}
}
