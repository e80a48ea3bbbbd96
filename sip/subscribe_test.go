package sip

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// watcherUA is a SIP user agent that subscribes to presence and records the
// NOTIFYs it receives, answering them 200.
type watcherUA struct {
	*peerUA
	notifies chan *sip.Request
}

func newWatcherUA(t *testing.T) *watcherUA {
	t.Helper()
	w := &watcherUA{peerUA: newPeerUA(t), notifies: make(chan *sip.Request, 100)}
	w.srv.OnNotify(func(req *sip.Request, tx sip.ServerTransaction) {
		w.notifies <- req
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	w.listenUDP()
	return w
}

// waitNotify waits for the next NOTIFY.
func (w *watcherUA) waitNotify() *sip.Request {
	w.t.Helper()
	select {
	case req := <-w.notifies:
		return req
	case <-time.After(10 * time.Second):
		w.t.Fatal("the watcher received no NOTIFY")
		return nil
	}
}

// noNotify checks that no NOTIFY arrives within d.
func (w *watcherUA) noNotify(d time.Duration) {
	w.t.Helper()
	select {
	case req := <-w.notifies:
		w.t.Fatalf("unexpected NOTIFY:\n%s", req)
	case <-time.After(d):
	}
}

// newSubscribe builds a SUBSCRIBE to presentity for the watcher w.
func (w *watcherUA) newSubscribe(addr, from, presentity, eventPkg string, expires int) *sip.Request {
	req := newRequest(sip.SUBSCRIBE, "UDP", addr, presentity, from, presentity)
	req.AppendHeader(sip.NewHeader("Contact", "<sip:watcher@"+w.addr+">"))
	req.AppendHeader(sip.NewHeader("Event", eventPkg))
	if expires >= 0 {
		req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	}
	return req
}

// inDialog builds the next SUBSCRIBE of the dialog that res, the answer to
// req, created.
func inDialog(req *sip.Request, res *sip.Response, expires int) *sip.Request {
	next := req.Clone()
	next.RemoveHeader("Via")
	next.RemoveHeader("Proxy-Authorization")
	next.RemoveHeader("Expires")
	next.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	tag, _ := res.To().Params.Get("tag")
	next.To().Params = sip.NewParams()
	next.To().Params.Add("tag", tag)
	next.CSeq().SeqNo += 10
	return next
}

// waitEvent waits for the next dispatched event.
func waitEvent(t *testing.T, h *fakeHost) event.Event {
	t.Helper()
	select {
	case evt := <-h.dispatchCh:
		return evt
	case <-time.After(10 * time.Second):
		t.Fatal("nothing dispatched")
		return nil
	}
}

// waitSubscription waits for the next dispatched event, which must be an
// event.Subscription of watcher to presentity with active.
func waitSubscription(t *testing.T, h *fakeHost, watcher, presentity string, active bool) {
	t.Helper()
	evt := waitEvent(t, h)
	s, ok := evt.(*event.Subscription)
	if !ok {
		t.Fatalf("dispatched %T, want *event.Subscription", evt)
	}
	want := event.Subscription{
		Header: event.Header{From: event.Address{Network: event.SIP, ID: watcher}, To: event.Address{Network: event.SIP, ID: presentity}},
		Active: active,
	}
	if s.From != want.From || s.To != want.To || s.Active != want.Active || s.ID == "" {
		t.Fatalf("dispatched %+v, want %+v", s, want)
	}
}

// checkNotify checks a NOTIFY's Subscription-State prefix and that its
// PIDF body holds each of the fragments.
func checkNotify(t *testing.T, req *sip.Request, state string, fragments ...string) {
	t.Helper()
	if h := req.GetHeader("Subscription-State"); h == nil || !strings.HasPrefix(h.Value(), state) {
		t.Errorf("Subscription-State = %v, want %s...", h, state)
	}
	if h := req.GetHeader("Event"); h == nil || h.Value() != "presence" {
		t.Errorf("Event = %v, want presence", h)
	}
	if h := req.ContentType(); h == nil || h.Value() != presenceMediaType {
		t.Errorf("Content-Type = %v", h)
	}
	for _, f := range fragments {
		if !strings.Contains(string(req.Body()), f) {
			t.Errorf("NOTIFY body lacks %q:\n%s", f, req.Body())
		}
	}
}

func presence(from, to string, s event.PresenceState, status string) *event.Presence {
	return &event.Presence{
		Header: event.Header{From: event.Address{Network: event.SIP, ID: from}, To: event.Address{Network: event.SIP, ID: to}},
		State:  s, Status: status,
	}
}

const peerWatcher = "sip:1001@pbx.example.org"

func TestSubscribeFromAuthenticatedUser(t *testing.T) {
	a := startAdapter(t, nil, nil)
	a.subs.interval = 50 * time.Millisecond
	w := newWatcherUA(t)
	alice := "sip:alice@" + testDomain
	req := w.newSubscribe(a.udp, alice, ghost, "presence", -1)

	if res := w.do(req.Clone()); res.StatusCode != 407 {
		t.Fatalf("SUBSCRIBE without credentials: %d %s, want 407", res.StatusCode, res.Reason)
	}
	res := w.doAuth(req, "alice", alicePassword)
	if res.StatusCode != 200 {
		t.Fatalf("SUBSCRIBE: %d %s, want 200", res.StatusCode, res.Reason)
	}
	if tag, _ := res.To().Params.Get("tag"); tag == "" {
		t.Error("200 without a To tag")
	}
	if h := res.GetHeader("Expires"); h == nil || h.Value() != "3600" {
		t.Errorf("Expires = %v, want 3600 (max_expires)", h)
	}
	if res.Contact() == nil {
		t.Error("200 without Contact")
	}
	waitSubscription(t, a.host, alice, ghost, true)
	n := w.waitNotify()
	checkNotify(t, n, "active;expires=", "<basic>closed</basic>", `entity="`+ghost+`"`)
	if tag, _ := n.From().Params.Get("tag"); tag == "" {
		t.Error("NOTIFY From without tag")
	}

	// The core answers with the current presence.
	if _, err := a.Send(context.Background(), presence(ghost, alice, event.Available, "at my desk")); err != nil {
		t.Fatalf("Send presence: %v", err)
	}
	checkNotify(t, w.waitNotify(), "active", "<basic>open</basic>", "at my desk")
}

func TestSubscribeAnswersWithLastPresence(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	w := newWatcherUA(t)
	if _, err := a.Send(context.Background(), presence(ghost, peerWatcher, event.DoNotDisturb, "")); err != nil {
		t.Fatalf("Send presence without subscription: %v", err)
	}
	res := w.do(w.newSubscribe(a.udp, peerWatcher, ghost, "presence", 600))
	if res.StatusCode != 200 || res.GetHeader("Expires").Value() != "600" {
		t.Fatalf("SUBSCRIBE: %d %s, Expires %v", res.StatusCode, res.Reason, res.GetHeader("Expires"))
	}
	checkNotify(t, w.waitNotify(), "active;expires=", "<basic>open</basic>", "<rpid:busy/>")
	waitSubscription(t, a.host, peerWatcher, ghost, true)
}

// TestNotifyCoalescing: state changes within the notify interval give one
// NOTIFY with the latest state.
func TestNotifyCoalescing(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	a.subs.interval = 400 * time.Millisecond
	w := newWatcherUA(t)
	if res := w.do(w.newSubscribe(a.udp, peerWatcher, ghost, "presence", -1)); res.StatusCode != 200 {
		t.Fatalf("SUBSCRIBE: %d %s", res.StatusCode, res.Reason)
	}
	start := time.Now()
	w.waitNotify()
	for _, s := range []event.PresenceState{event.Available, event.Away, event.OnThePhone} {
		if _, err := a.Send(context.Background(), presence(ghost, peerWatcher, s, s.String())); err != nil {
			t.Fatal(err)
		}
	}
	n := w.waitNotify()
	if d := time.Since(start); d < 350*time.Millisecond {
		t.Errorf("second NOTIFY after %s, want at least the interval", d)
	}
	checkNotify(t, n, "active", "<rpid:on-the-phone/>", "on-the-phone")
	w.noNotify(600 * time.Millisecond)
}

func TestSubscriptionExpires(t *testing.T) {
	a := startAdapter(t, nil, func(c *Config) {
		trustLoopback(c)
		c.MinExpires = time.Second
	})
	w := newWatcherUA(t)
	if res := w.do(w.newSubscribe(a.udp, peerWatcher, ghost, "presence", 1)); res.StatusCode != 200 {
		t.Fatalf("SUBSCRIBE: %d %s", res.StatusCode, res.Reason)
	}
	checkNotify(t, w.waitNotify(), "active;expires=1")
	waitSubscription(t, a.host, peerWatcher, ghost, true)
	checkNotify(t, w.waitNotify(), "terminated;reason=timeout")
	waitSubscription(t, a.host, peerWatcher, ghost, false)
	// Gone: presence for the pair is dropped quietly.
	if _, err := a.Send(context.Background(), presence(ghost, peerWatcher, event.Away, "")); err != nil {
		t.Fatalf("Send after expiry: %v", err)
	}
	w.noNotify(200 * time.Millisecond)
}

func TestSubscriptionRefreshAndUnsubscribe(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	w := newWatcherUA(t)
	req := w.newSubscribe(a.udp, peerWatcher, ghost, "presence", 300)
	res := w.do(req)
	if res.StatusCode != 200 {
		t.Fatalf("SUBSCRIBE: %d %s", res.StatusCode, res.Reason)
	}
	w.waitNotify()
	waitSubscription(t, a.host, peerWatcher, ghost, true)

	refresh := inDialog(req, res, 900)
	if res := w.do(refresh); res.StatusCode != 200 || res.GetHeader("Expires").Value() != "900" {
		t.Fatalf("refresh: %d %s, Expires %v", res.StatusCode, res.Reason, res.GetHeader("Expires"))
	}
	checkNotify(t, w.waitNotify(), "active;expires=")

	unsub := inDialog(refresh, res, 0)
	if res := w.do(unsub); res.StatusCode != 200 {
		t.Fatalf("unsubscribe: %d %s", res.StatusCode, res.Reason)
	}
	checkNotify(t, w.waitNotify(), "terminated")
	waitSubscription(t, a.host, peerWatcher, ghost, false)

	if res := w.do(inDialog(unsub, res, 300)); res.StatusCode != 481 {
		t.Fatalf("refresh after the end: %d %s, want 481", res.StatusCode, res.Reason)
	}
}

func TestSubscribeRefused(t *testing.T) {
	a := startAdapter(t, nil, func(c *Config) {
		trustLoopback(c)
		c.MinExpires = 60 * time.Second
	})
	w := newWatcherUA(t)
	tests := []struct {
		name      string
		edit      func(*sip.Request)
		eventPkg  string
		expires   int
		err       error
		status    int
		header    string
		headerVal string
	}{
		{name: "unknown event package", eventPkg: "dialog", expires: -1, status: 489, header: "Allow-Events", headerVal: "presence"},
		{name: "too brief", eventPkg: "presence", expires: 10, status: 423, header: "Min-Expires", headerVal: "60"},
		{name: "no route", eventPkg: "presence", expires: -1, err: fmt.Errorf("resolve: %w", bridges.ErrNoRoute), status: 404},
		{name: "not acceptable", eventPkg: "presence", expires: -1, status: 406, edit: func(r *sip.Request) {
			r.AppendHeader(sip.NewHeader("Accept", "application/xpidf+xml"))
		}},
		{name: "unknown dialog", eventPkg: "presence", expires: -1, status: 481, edit: func(r *sip.Request) {
			r.To().Params = sip.NewParams()
			r.To().Params.Add("tag", "nope")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.host.setDispatchErr(func(event.Event) error { return tt.err })
			req := w.newSubscribe(a.udp, peerWatcher, ghost, tt.eventPkg, tt.expires)
			if tt.edit != nil {
				tt.edit(req)
			}
			res := w.do(req)
			if res.StatusCode != tt.status {
				t.Fatalf("SUBSCRIBE: %d %s, want %d", res.StatusCode, res.Reason, tt.status)
			}
			if tt.header != "" {
				if h := res.GetHeader(tt.header); h == nil || h.Value() != tt.headerVal {
					t.Errorf("%s = %v, want %s", tt.header, h, tt.headerVal)
				}
			}
		})
	}
	w.noNotify(100 * time.Millisecond)
	a.subs.mu.Lock()
	defer a.subs.mu.Unlock()
	if len(a.subs.byKey) != 0 {
		t.Errorf("refused subscriptions kept: %d", len(a.subs.byKey))
	}
}

// TestSubscribeFetch: Expires 0 outside a dialog fetches the state once.
func TestSubscribeFetch(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	w := newWatcherUA(t)
	if res := w.do(w.newSubscribe(a.udp, peerWatcher, ghost, "presence", 0)); res.StatusCode != 200 {
		t.Fatalf("SUBSCRIBE: %d %s", res.StatusCode, res.Reason)
	}
	checkNotify(t, w.waitNotify(), "terminated")
	if evs := a.host.events(); len(evs) != 0 {
		t.Errorf("a fetch dispatched %v", evs)
	}
}

func TestSendSubscriptionAndPresenceChecks(t *testing.T) {
	a := startAdapter(t, nil, nil)
	sub := &event.Subscription{Header: event.Header{
		From: event.Address{Network: event.SIP, ID: ghost},
		To:   event.Address{Network: event.SIP, ID: "sip:alice@" + testDomain},
	}, Active: true}
	if id, err := a.Send(context.Background(), sub); id != "" || err != nil {
		t.Errorf("Send subscription: %q, %v", id, err)
	}
	_, err := a.Send(context.Background(), presence("sip:someone@example.org", "sip:alice@"+testDomain, event.Away, ""))
	if !bridges.IsPermanent(err) {
		t.Errorf("presence from outside the domain: %v, want a permanent error", err)
	}
}

// TestStopDeactivatesSubscriptions: the subscriptions end with the adapter,
// and the watchers are told to subscribe again.
func TestStopDeactivatesSubscriptions(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	w := newWatcherUA(t)
	if res := w.do(w.newSubscribe(a.udp, peerWatcher, ghost, "presence", -1)); res.StatusCode != 200 {
		t.Fatalf("SUBSCRIBE: %d %s", res.StatusCode, res.Reason)
	}
	w.waitNotify()
	waitSubscription(t, a.host, peerWatcher, ghost, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	checkNotify(t, w.waitNotify(), "terminated;reason=deactivated")
	select {
	case evt := <-a.host.dispatchCh:
		t.Errorf("dispatched %+v on Stop; the core keeps its watchers", evt)
	default:
	}
}

// TestSubscribeOverTCP: the NOTIFYs come back over the watcher's
// connection.
func TestSubscribeOverTCP(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	w := newWatcherUA(t)
	req := w.newSubscribe(a.tcp, peerWatcher, ghost, "presence", -1)
	req.SetTransport("TCP")
	res := w.do(req)
	if res.StatusCode != 200 {
		t.Fatalf("SUBSCRIBE: %d %s", res.StatusCode, res.Reason)
	}
	if c := res.Contact(); c == nil || !strings.Contains(c.Value(), "transport=tcp") {
		t.Errorf("Contact = %v, want a TCP contact", c)
	}
	checkNotify(t, w.waitNotify(), "active")
}
