package sip

import (
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/event"
)

const aliceAOR = "sip:alice@" + testDomain

// pidfDocument returns a PIDF document of alice: open or closed, with an
// RPID activity when not empty and a note.
func pidfDocument(basic, activity, note string) string {
	doc := `<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="` + aliceAOR + `">
 <tuple id="t1"><status><basic>` + basic + `</basic></status></tuple>
 <dm:person id="p1">`
	if activity != "" {
		doc += `<rpid:activities><rpid:` + activity + `/></rpid:activities>`
	}
	if note != "" {
		doc += `<dm:note>` + note + `</dm:note>`
	}
	return doc + "</dm:person>\n</presence>\n"
}

// newPublish builds a PUBLISH of alice's presence.
func newPublish(addr, etag, contentType, body string, expires int) *sip.Request {
	req := newRequest(sip.PUBLISH, "UDP", addr, aliceAOR, aliceAOR, aliceAOR)
	req.AppendHeader(sip.NewHeader("Event", "presence"))
	if expires >= 0 {
		req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	}
	if etag != "" {
		req.AppendHeader(sip.NewHeader("SIP-If-Match", etag))
	}
	if body != "" {
		req.AppendHeader(sip.NewHeader("Content-Type", contentType))
		req.SetBody([]byte(body))
	}
	return req
}

// waitPresence waits for the next dispatched event, which must be alice's
// broadcast presence in state s with status.
func waitPresence(t *testing.T, h *fakeHost, s event.PresenceState, status string) {
	t.Helper()
	evt := waitEvent(t, h)
	p, ok := evt.(*event.Presence)
	if !ok {
		t.Fatalf("dispatched %T, want *event.Presence", evt)
	}
	if p.From != (event.Address{Network: event.SIP, ID: aliceAOR}) || p.To != (event.Address{}) || p.ID == "" {
		t.Errorf("dispatched presence %+v, want from alice, broadcast", p.Header)
	}
	if p.State != s || p.Status != status {
		t.Fatalf("dispatched %s %q, want %s %q", p.State, p.Status, s, status)
	}
}

// publish sends req as alice and checks the status; it returns the
// SIP-ETag of a 200.
func publish(t *testing.T, p *peerUA, req *sip.Request, status int) string {
	t.Helper()
	res := p.doAuth(req, "alice", alicePassword)
	if res.StatusCode != status {
		t.Fatalf("PUBLISH: %d %s, want %d", res.StatusCode, res.Reason, status)
	}
	if status != 200 {
		return ""
	}
	if res.GetHeader("Expires") == nil {
		t.Error("200 without Expires")
	}
	if h := res.GetHeader("SIP-ETag"); h != nil {
		return h.Value()
	}
	return ""
}

func TestPublishLifecycle(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)

	etag := publish(t, phone, newPublish(a.udp, "", presenceMediaType, pidfDocument("open", "", "at my desk"), 600), 200)
	if etag == "" {
		t.Fatal("200 without SIP-ETag")
	}
	waitPresence(t, a.host, event.Available, "at my desk")

	// A refresh changes nothing but the entity-tag.
	refreshed := publish(t, phone, newPublish(a.udp, etag, "", "", 600), 200)
	if refreshed == "" || refreshed == etag {
		t.Fatalf("refresh gave SIP-ETag %q after %q, want a new one", refreshed, etag)
	}
	publish(t, phone, newPublish(a.udp, etag, "", "", 600), 412) // the old tag is gone

	// Another device is on the phone: that wins.
	other := publish(t, phone, newPublish(a.udp, "", presenceMediaType, pidfDocument("open", "on-the-phone", ""), 600), 200)
	waitPresence(t, a.host, event.OnThePhone, "")

	// A modification, then removals.
	modified := publish(t, phone, newPublish(a.udp, refreshed, presenceMediaType, pidfDocument("open", "busy", "meeting"), 600), 200)
	publish(t, phone, newPublish(a.udp, other, "", "", 0), 200)
	waitPresence(t, a.host, event.DoNotDisturb, "meeting")
	if h := publish(t, phone, newPublish(a.udp, modified, "", "", 0), 200); h != "" {
		t.Errorf("removal answered with SIP-ETag %q", h)
	}
	waitPresence(t, a.host, event.Offline, "")
}

func TestPublishExpires(t *testing.T) {
	a := startAdapter(t, nil, func(c *Config) { c.MinExpires = time.Second })
	phone := newPeerUA(t)
	publish(t, phone, newPublish(a.udp, "", presenceMediaType, pidfDocument("open", "away", ""), 1), 200)
	waitPresence(t, a.host, event.Away, "")
	start := time.Now()
	waitPresence(t, a.host, event.Offline, "")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("publication lapsed after %s, want about 1s", d)
	}
}

func TestPublishRefused(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phone := newPeerUA(t)
	tests := []struct {
		name   string
		req    *sip.Request
		status int
	}{
		{"malformed PIDF", newPublish(a.udp, "", presenceMediaType, "<presence>unclosed", 600), 400},
		{"not PIDF at all", newPublish(a.udp, "", presenceMediaType, `<?xml version="1.0"?><foo xmlns="urn:x"/>`, 600), 400},
		{"other media type", newPublish(a.udp, "", "text/plain", "available", 600), 415},
		{"too brief", newPublish(a.udp, "", presenceMediaType, pidfDocument("open", "", ""), 5), 423},
		{"unknown entity-tag", newPublish(a.udp, "nope", "", "", 600), 412},
		{"no body, no entity-tag", newPublish(a.udp, "", "", "", 600), 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			publish(t, phone, tt.req, tt.status)
		})
	}
	t.Run("another event package", func(t *testing.T) {
		req := newPublish(a.udp, "", presenceMediaType, pidfDocument("open", "", ""), 600)
		req.RemoveHeader("Event")
		req.AppendHeader(sip.NewHeader("Event", "dialog"))
		if res := phone.do(req); res.StatusCode != 489 {
			t.Fatalf("PUBLISH: %d %s, want 489", res.StatusCode, res.Reason)
		}
	})
	t.Run("someone else's presence", func(t *testing.T) {
		req := newPublish(a.udp, "", presenceMediaType, pidfDocument("open", "", ""), 600)
		res := phone.doAuth(req, "alice", alicePassword)
		if res.StatusCode != 200 {
			t.Fatalf("PUBLISH: %d", res.StatusCode)
		}
		bob := "sip:bob@" + testDomain
		req = newRequest(sip.PUBLISH, "UDP", a.udp, bob, aliceAOR, bob)
		req.AppendHeader(sip.NewHeader("Event", "presence"))
		req.AppendHeader(sip.NewHeader("Content-Type", presenceMediaType))
		req.SetBody([]byte(pidfDocument("open", "", "")))
		if res := phone.doAuth(req, "alice", alicePassword); res.StatusCode != 403 {
			t.Fatalf("PUBLISH for bob: %d %s, want 403", res.StatusCode, res.Reason)
		}
	})
	waitPresence(t, a.host, event.Available, "")
	if evs := a.host.events(); len(evs) != 1 {
		t.Errorf("dispatched %d events, want only the one valid publication's", len(evs))
	}
}
