package bridges_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/bridges/bridgestest"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/store"
)

// callHarness: SIP and Matrix carry calls, XMPP does not (yet). Alice has
// an account on each; her SIP alias is alice@gw.example.
type callHarness struct {
	router      *bridges.Router
	sip, matrix *bridgestest.CallNetwork
	xmpp        *bridgestest.Network
}

func startCalls(t *testing.T, cfg bridges.CallConfig) *callHarness {
	t.Helper()
	m, err := mapping.New(mapping.Config{
		Identities: []mapping.Identity{{Name: "alice", Accounts: []string{
			"matrix:alice@hs.example", "xmpp:alice@example.org", "sip:alice@pbx.example",
		}}},
		Ghosts: map[event.Network]map[event.Network]string{
			event.Matrix: {event.SIP: "_sip_{user}_{domain}@hs.example", event.XMPP: "_xmpp_{user}_{domain}@hs.example"},
			event.SIP:    {event.Matrix: "matrix_{user}_{domain}@gw.example"},
		},
		Aliases: map[event.Network]string{event.SIP: "{name}@gw.example", event.XMPP: "{name}@xmpp.gw"},
	}, map[event.Network]mapping.Codec{event.XMPP: bridgestest.Codec{}, event.Matrix: bridgestest.Codec{}, event.SIP: bridgestest.Codec{}})
	if err != nil {
		t.Fatal(err)
	}
	h := &callHarness{
		sip: bridgestest.NewCallNetwork(event.SIP), matrix: bridgestest.NewCallNetwork(event.Matrix),
		xmpp: bridgestest.NewNetwork(event.XMPP),
	}
	h.router = bridges.NewRouter(store.NewMemory(), m, bridges.WithCalls(cfg))
	h.router.Add(h.sip)
	h.router.Add(h.matrix)
	h.router.Add(h.xmpp)
	if err := h.router.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = h.router.Stop(ctx)
	})
	return h
}

var (
	phone   = event.Address{Network: event.SIP, ID: "1001@gw.example"}
	aliceS  = event.Address{Network: event.SIP, ID: "alice@pbx.example"}
	aliceM  = event.Address{Network: event.Matrix, ID: "alice@hs.example"}
	aliasS  = event.Address{Network: event.SIP, ID: "alice@gw.example"}
	pcmu    = event.Media{Codecs: []event.Codec{{Name: "PCMU", ClockRate: 8000, PayloadType: 0}}}
	noCodec = event.Media{}
)

func invite(from, to event.Address, call string) *event.CallInvite {
	return &event.CallInvite{Header: event.Header{ID: "inv-" + call, From: from, To: to}, Call: call, Offer: pcmu}
}

// placeCall has the phone call Alice's alias and waits for both devices'
// invites.
func placeCall(t *testing.T, h *callHarness, call string) (caller *bridgestest.Endpoint, sipLeg, matrixLeg *event.CallInvite) {
	t.Helper()
	caller = bridgestest.NewEndpoint()
	if err := h.router.Call(context.Background(), invite(phone, aliasS, call), caller); err != nil {
		t.Fatal(err)
	}
	ctx := waitCtx(t)
	for _, c := range h.sip.WaitCalls(ctx, 1) {
		sipLeg = c.(*event.CallInvite)
	}
	for _, c := range h.matrix.WaitCalls(ctx, 1) {
		matrixLeg = c.(*event.CallInvite)
	}
	if sipLeg == nil || matrixLeg == nil {
		t.Fatalf("devices invited: sip %v, matrix %v", sipLeg, matrixLeg)
	}
	return caller, sipLeg, matrixLeg
}

func legEvent(t *testing.T, h *callHarness, from event.Address, evt event.Event) {
	t.Helper()
	evt.Head().From = from
	if err := h.router.CallEvent(context.Background(), evt); err != nil {
		t.Fatalf("CallEvent %s: %v", evt.Kind(), err)
	}
}

// waitLast waits for the count-th call event of n and returns it.
func waitLast(t *testing.T, n *bridgestest.CallNetwork, count int) event.Event {
	t.Helper()
	got := n.WaitCalls(waitCtx(t), count)
	if len(got) < count {
		t.Fatalf("%s: %d call events, want %d: %v", n.Network(), len(got), count, got)
	}
	return got[count-1]
}

func wantHangup(t *testing.T, evt event.Event, call string, reason event.HangupReason) {
	t.Helper()
	h, ok := evt.(*event.CallHangup)
	if !ok || h.Call != call || h.Reason != reason {
		t.Fatalf("got %#v, want a hangup of %s with %s", evt, call, reason)
	}
}

func waitNoCalls(t *testing.T, r *bridges.Router) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); r.ActiveCalls() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls still live", r.ActiveCalls())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCallRingsEveryDeviceFirstAnswerWins(t *testing.T) {
	h := startCalls(t, bridges.CallConfig{})
	caller, sipLeg, matrixLeg := placeCall(t, h, "c1")
	if sipLeg.To != aliceS || sipLeg.From != phone || matrixLeg.To != aliceM ||
		matrixLeg.From != (event.Address{Network: event.Matrix, ID: "_sip_1001_gw.example@hs.example"}) {
		t.Fatalf("invites: sip %s→%s, matrix %s→%s", sipLeg.From, sipLeg.To, matrixLeg.From, matrixLeg.To)
	}
	if sipLeg.Call == matrixLeg.Call || sipLeg.Call == "c1" {
		t.Fatalf("leg IDs not distinct: %q %q", sipLeg.Call, matrixLeg.Call)
	}

	legEvent(t, h, aliceS, &event.CallRinging{Call: sipLeg.Call})
	if r, ok := waitLast(t, h.sip, 2).(*event.CallRinging); !ok || r.Call != "c1" || r.To != phone {
		t.Fatalf("caller got %#v, want ringing on c1", r)
	}
	answer := event.Media{Codecs: []event.Codec{{Name: "PCMU", ClockRate: 8000, PayloadType: 0}}}
	legEvent(t, h, aliceM, &event.CallAnswer{Call: matrixLeg.Call, Answer: answer})

	got := h.sip.WaitCalls(waitCtx(t), 4)
	var answered *event.CallAnswer
	for _, e := range got[2:] {
		switch e := e.(type) {
		case *event.CallAnswer:
			answered = e
		case *event.CallHangup:
			wantHangup(t, e, sipLeg.Call, event.HangupAnsweredElsewhere)
		}
	}
	if answered == nil || answered.Call != "c1" || len(answered.Answer.Codecs) != 1 {
		t.Fatalf("caller's events: %v", got)
	}
	mep := h.matrix.Endpoint(matrixLeg.Call)
	if caller.Peer() != mep || mep.Peer() != caller {
		t.Fatal("the media of the caller and the answering device are not connected")
	}
	if !h.sip.Endpoint(sipLeg.Call).Closed() {
		t.Error("the device answered elsewhere keeps its media open")
	}

	legEvent(t, h, phone, &event.CallHangup{Call: "c1", Reason: event.HangupNormal})
	wantHangup(t, waitLast(t, h.matrix, 2), matrixLeg.Call, event.HangupNormal)
	waitNoCalls(t, h.router)
	if !caller.Closed() || !mep.Closed() {
		t.Error("media left open after the call")
	}
	if err := h.router.CallEvent(context.Background(), &event.CallHangup{Header: event.Header{From: phone}, Call: "c1", Reason: event.HangupNormal}); !errors.Is(err, bridges.ErrUnknownCall) {
		t.Errorf("event after the end: %v", err)
	}
}

// Every way a call ends reaches the other legs with the reason of the
// table.
func TestCallEndings(t *testing.T) {
	tests := []struct {
		name string
		// act ends the call; it returns the reason the caller must get
		// (0: the caller ended it) and the one each callee must get.
		act func(t *testing.T, h *callHarness, sipLeg, matrixLeg *event.CallInvite) (caller, callee event.HangupReason)
	}{
		{"busy everywhere", func(t *testing.T, h *callHarness, s, m *event.CallInvite) (event.HangupReason, event.HangupReason) {
			legEvent(t, h, aliceS, &event.CallHangup{Call: s.Call, Reason: event.HangupBusy})
			legEvent(t, h, aliceM, &event.CallHangup{Call: m.Call, Reason: event.HangupBusy})
			return event.HangupBusy, 0
		}},
		{"declined on one device beats unavailable on the other", func(t *testing.T, h *callHarness, s, m *event.CallInvite) (event.HangupReason, event.HangupReason) {
			legEvent(t, h, aliceS, &event.CallHangup{Call: s.Call, Reason: event.HangupUnavailable})
			legEvent(t, h, aliceM, &event.CallHangup{Call: m.Call, Reason: event.HangupDeclined})
			return event.HangupDeclined, 0
		}},
		{"caller cancels", func(t *testing.T, h *callHarness, _, _ *event.CallInvite) (event.HangupReason, event.HangupReason) {
			legEvent(t, h, phone, &event.CallHangup{Call: "c1", Reason: event.HangupNormal})
			return 0, event.HangupCancelled
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startCalls(t, bridges.CallConfig{})
			_, s, m := placeCall(t, h, "c1")
			toCaller, toCallee := tt.act(t, h, s, m)
			if toCaller != 0 {
				wantHangup(t, waitLast(t, h.sip, 2), "c1", toCaller)
			}
			if toCallee != 0 {
				wantHangup(t, waitLast(t, h.sip, 2), s.Call, toCallee)
				wantHangup(t, waitLast(t, h.matrix, 2), m.Call, toCallee)
			}
			waitNoCalls(t, h.router)
		})
	}
}

func TestCallNoAnswer(t *testing.T) {
	h := startCalls(t, bridges.CallConfig{RingTimeout: 50 * time.Millisecond})
	_, s, m := placeCall(t, h, "c1")
	got := h.sip.WaitCalls(waitCtx(t), 3)
	for _, e := range got[1:] {
		if hu := e.(*event.CallHangup); hu.Reason != event.HangupNoAnswer || (hu.Call != "c1" && hu.Call != s.Call) {
			t.Fatalf("got %#v", e)
		}
	}
	wantHangup(t, waitLast(t, h.matrix, 2), m.Call, event.HangupNoAnswer)
	waitNoCalls(t, h.router)
}

func TestCallMediaTimeout(t *testing.T) {
	h := startCalls(t, bridges.CallConfig{MediaTimeout: 40 * time.Millisecond})
	caller, s, m := placeCall(t, h, "c1")
	legEvent(t, h, aliceS, &event.CallAnswer{Call: s.Call, Answer: pcmu})
	old := time.Now().Add(-time.Hour)
	caller.SetLastPacket(old)
	h.sip.Endpoint(s.Call).SetLastPacket(old)
	// SIP saw: the device's invite, the answer to the caller, then the
	// media timeout of both legs.
	got := h.sip.WaitCalls(waitCtx(t), 4)
	if len(got) != 4 {
		t.Fatalf("sip call events: %v", got)
	}
	for _, e := range got[2:] {
		if hu, ok := e.(*event.CallHangup); !ok || hu.Reason != event.HangupMediaTimeout {
			t.Fatalf("got %#v, want a media timeout", e)
		}
	}
	wantHangup(t, waitLast(t, h.matrix, 2), m.Call, event.HangupAnsweredElsewhere)
	waitNoCalls(t, h.router)
}

func TestCallRefused(t *testing.T) {
	h := startCalls(t, bridges.CallConfig{MaxPerUser: 1})
	ep := bridgestest.NewEndpoint()
	err := h.router.Call(context.Background(), invite(phone, event.Address{Network: event.Matrix, ID: "nobody@hs.example"}, "x"), ep)
	if !errors.Is(err, bridges.ErrNoRoute) || !ep.Closed() {
		t.Fatalf("call to no one: %v, closed %v", err, ep.Closed())
	}
	bad := invite(phone, aliasS, "y")
	bad.Offer = noCodec
	if err := h.router.Call(context.Background(), bad, bridgestest.NewEndpoint()); err == nil {
		t.Fatal("an offer without codecs was accepted")
	}
	placeCall(t, h, "c1")
	ep = bridgestest.NewEndpoint()
	if err := h.router.Call(context.Background(), invite(phone, aliasS, "c2"), ep); !errors.Is(err, bridges.ErrCallLimit) || !ep.Closed() {
		t.Fatalf("second call of a user limited to one: %v", err)
	}
}

func TestCallDeviceUnreachable(t *testing.T) {
	h := startCalls(t, bridges.CallConfig{})
	h.matrix.InviteErr = bridges.Permanent(errors.New("not registered"))
	_, s, _ := placeCall(t, h, "c1")
	legEvent(t, h, aliceS, &event.CallHangup{Call: s.Call, Reason: event.HangupBusy})
	wantHangup(t, waitLast(t, h.sip, 2), "c1", event.HangupBusy)
	waitNoCalls(t, h.router)
}

func TestStopEndsCalls(t *testing.T) {
	h := startCalls(t, bridges.CallConfig{})
	caller, s, m := placeCall(t, h, "c1")
	legEvent(t, h, aliceS, &event.CallAnswer{Call: s.Call, Answer: pcmu})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.router.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if h.router.ActiveCalls() != 0 || !caller.Closed() {
		t.Fatal("calls outlive Stop")
	}
	var ended bool
	for _, e := range h.sip.Calls() {
		if hu, ok := e.(*event.CallHangup); ok && hu.Call == "c1" && hu.Reason == event.HangupFailure {
			ended = true
		}
	}
	if !ended {
		t.Fatalf("the caller was not hung up: %v", h.sip.Calls())
	}
	_ = m
}

// A person in a call shows on the phone to their watchers on every network,
// and as before once it ends.
func TestCallShowsOnThePhone(t *testing.T) {
	h := startCalls(t, bridges.CallConfig{})
	ctx := context.Background()
	if err := h.router.Dispatch(ctx, subscription("bob@example.org", "alice@xmpp.gw", true)); err != nil {
		t.Fatal(err)
	}
	if err := h.router.Dispatch(ctx, &event.Presence{Header: event.Header{From: aliceM}, State: event.Available}); err != nil {
		t.Fatal(err)
	}
	if ps := waitPresences(t, h.xmpp, 1); len(ps) != 1 || ps[0].State != event.Available {
		t.Fatalf("watcher got %+v", ps)
	}
	_, s, _ := placeCall(t, h, "c1")
	legEvent(t, h, aliceS, &event.CallAnswer{Call: s.Call, Answer: pcmu})
	if ps := waitPresences(t, h.xmpp, 2); len(ps) != 2 || ps[1].State != event.OnThePhone || ps[1].From.ID != "alice@xmpp.gw" {
		t.Fatalf("watcher during the call got %+v", ps)
	}
	legEvent(t, h, phone, &event.CallHangup{Call: "c1", Reason: event.HangupNormal})
	if ps := waitPresences(t, h.xmpp, 3); len(ps) != 3 || ps[2].State != event.Available {
		t.Fatalf("watcher after the call got %+v", ps)
	}
}

// A leg that re-offers another codec in an answered call changes the codec
// of the other leg first, and gets its answer; before the answer, from a
// leg out of the call, while another change is under way or when the other
// leg refuses, the update is refused and the call goes on.
func TestCallCodecChange(t *testing.T) {
	h := startCalls(t, bridges.CallConfig{})
	_, sipLeg, matrixLeg := placeCall(t, h, "c1")
	pcma := event.Media{Codecs: []event.Codec{{Name: "PCMA", ClockRate: 8000, PayloadType: 8}}}
	update := func(from event.Address, call string) (event.Media, error) {
		return h.router.Update(waitCtx(t), &event.CallUpdate{Header: event.Header{From: from}, Call: call, Offer: pcma})
	}
	if _, err := update(phone, "c1"); !errors.Is(err, bridges.ErrUpdateRefused) {
		t.Fatalf("update before the answer: %v, want refused", err)
	}
	legEvent(t, h, aliceM, &event.CallAnswer{Call: matrixLeg.Call, Answer: pcmu})
	waitLast(t, h.sip, 3) // the caller's answer, the other device's hangup

	answer, err := update(phone, "c1")
	if err != nil || len(answer.Codecs) != 1 || answer.Codecs[0].Name != "PCMA" {
		t.Fatalf("caller's update: %v, %v", answer, err)
	}
	if u, ok := waitLast(t, h.matrix, 2).(*event.CallUpdate); !ok || u.Call != matrixLeg.Call || u.To != aliceM || u.Offer.Codecs[0].Name != "PCMA" {
		t.Fatalf("the answering device got %#v, want the caller's offer", u)
	}
	if _, err := update(aliceM, matrixLeg.Call); err != nil {
		t.Fatalf("callee's update: %v", err)
	}
	if u, ok := waitLast(t, h.sip, 4).(*event.CallUpdate); !ok || u.Call != "c1" || u.To != phone {
		t.Fatalf("the caller got %#v, want the callee's offer", u)
	}
	if _, err := update(aliceS, sipLeg.Call); !errors.Is(err, bridges.ErrUnknownCall) {
		t.Errorf("update from the device answered elsewhere: %v, want unknown call", err)
	}

	h.matrix.UpdateErr = errors.New("488 Not Acceptable Here")
	if _, err := update(phone, "c1"); !errors.Is(err, bridges.ErrUpdateRefused) {
		t.Errorf("update the other leg refuses: %v, want refused", err)
	}
	h.matrix.UpdateErr = nil

	h.matrix.Held = make(chan struct{})
	first := make(chan error, 1)
	go func() { _, err := update(phone, "c1"); first <- err }()
	waitLast(t, h.matrix, 4) // the first update reached the callee
	if _, err := update(aliceM, matrixLeg.Call); !errors.Is(err, bridges.ErrUpdatePending) {
		t.Errorf("crossing update: %v, want pending", err)
	}
	close(h.matrix.Held)
	if err := <-first; err != nil {
		t.Errorf("the first update, once answered: %v", err)
	}

	legEvent(t, h, phone, &event.CallHangup{Call: "c1", Reason: event.HangupNormal})
	waitNoCalls(t, h.router)
	if _, err := update(phone, "c1"); !errors.Is(err, bridges.ErrUnknownCall) {
		t.Errorf("update after the end: %v", err)
	}
}
