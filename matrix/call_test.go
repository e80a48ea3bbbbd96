package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/calls"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/media"
)

// fakeCallHost is a fakeHost that takes calls: it keeps the invites and
// their endpoints, and the call events.
type fakeCallHost struct {
	*fakeHost
	cmu     sync.Mutex
	invites []*event.CallInvite
	legs    []media.Endpoint
	events  []event.Event
	callErr error
}

func (h *fakeCallHost) Call(_ context.Context, inv *event.CallInvite, m media.Endpoint) error {
	h.cmu.Lock()
	defer h.cmu.Unlock()
	if h.callErr != nil {
		_ = m.Close()
		return h.callErr
	}
	h.invites = append(h.invites, inv)
	h.legs = append(h.legs, m)
	return nil
}

var _ bridges.CallHost = (*fakeCallHost)(nil)

func (h *fakeCallHost) Update(context.Context, *event.CallUpdate) (event.Media, error) {
	return event.Media{}, bridges.ErrUpdateRefused
}

func (h *fakeCallHost) CallEvent(_ context.Context, evt event.Event) error {
	h.cmu.Lock()
	defer h.cmu.Unlock()
	h.events = append(h.events, evt)
	return nil
}

// waitUntil polls f until it is true.
func waitUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *fakeCallHost) callEvents() []event.Event {
	h.cmu.Lock()
	defer h.cmu.Unlock()
	return append([]event.Event(nil), h.events...)
}

// echo writes back to its leg what the leg's party sends.
type echo struct{ leg media.Endpoint }

func (e echo) SetPeer(media.Endpoint)  {}
func (e echo) WriteRTP(b []byte) error { return e.leg.WriteRTP(b) }
func (e echo) WriteRTCP([]byte) error  { return nil }
func (e echo) LastPacket() time.Time   { return time.Time{} }
func (e echo) Stats() media.Stats      { return media.Stats{} }
func (e echo) Close() error            { return nil }

// counter counts what its leg's party sends.
type counter struct{ n atomic.Int64 }

func (c *counter) SetPeer(media.Endpoint) {}
func (c *counter) WriteRTP([]byte) error  { c.n.Add(1); return nil }
func (c *counter) WriteRTCP([]byte) error { return nil }
func (c *counter) LastPacket() time.Time  { return time.Time{} }
func (c *counter) Stats() media.Stats     { return media.Stats{} }
func (c *counter) Close() error           { return nil }

var callPorts struct {
	once  sync.Once
	ports *media.Ports
}

func webrtcConfig(t *testing.T) media.WebRTCConfig {
	callPorts.once.Do(func() {
		p, err := media.NewPorts(netip.MustParseAddr("127.0.0.1"), 42000, 42199)
		if err != nil {
			t.Fatal(err)
		}
		callPorts.ports = p
	})
	return media.WebRTCConfig{Ports: callPorts.ports, Loopback: true, GatherTimeout: 5 * time.Second, FailedTimeout: 5 * time.Second}
}

func clientCodecs() event.Media {
	return event.Media{Codecs: []event.Codec{
		{Name: "opus", ClockRate: 48000, Channels: 2, PayloadType: 111, FMTP: "minptime=10;useinbandfec=1"},
		{Name: "telephone-event", ClockRate: 8000, PayloadType: 126},
	}}
}

func newCallAdapter(t *testing.T, hs *fakeHS, host *fakeCallHost) *Adapter {
	t.Helper()
	a, err := New(testConfig(hs.URL), WithLogger(testLogger(t)), WithCalls(webrtcConfig(t)))
	if err != nil {
		t.Fatal(err)
	}
	a.cfg.Listen = "127.0.0.1:0"
	if err := a.Start(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Stop(ctx)
	})
	return a
}

// callEvent is a transaction event of type typ from sender in testRoom.
func callEvent(id, sender, typ string, content map[string]any) string {
	b, _ := json.Marshal(map[string]any{"type": typ, "event_id": id, "sender": sender, "room_id": testRoom,
		"origin_server_ts": time.Now().UnixMilli(), "content": content})
	return string(b)
}

func putCallTxn(t *testing.T, a *Adapter, txn string, events ...string) {
	t.Helper()
	if status, code := putTxn(t, a, txn, txnBody(events...)); status != http.StatusOK {
		t.Fatalf("transaction %s: %d %s", txn, status, code)
	}
}

// sentCalls returns the call events the fake homeserver got, of type typ.
func sentCalls(hs *fakeHS, typ string) []fakeEvent {
	var out []fakeEvent
	for _, e := range hs.roomEvents(testRoom) {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func waitSent(t *testing.T, hs *fakeHS, typ string) fakeEvent {
	t.Helper()
	var got []fakeEvent
	waitUntil(t, typ, func() bool { got = sentCalls(hs, typ); return len(got) > 0 })
	e := got[len(got)-1]
	if e.Content["version"] != "1" || e.Content["party_id"] == "" || e.Sender != testGhost {
		t.Fatalf("%s: %+v", typ, e)
	}
	return e
}

func sdpOf(e fakeEvent, field string) string {
	m, _ := e.Content[field].(map[string]any)
	s, _ := m["sdp"].(string)
	return s
}

// rtpFlows sends packets from u and waits until its sink counts some.
func rtpFlows(t *testing.T, u *media.WebRTCLeg, got *counter) {
	t.Helper()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for seq := uint16(1); ; seq++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			b, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 9}, Payload: []byte{1, 2, 3}}).Marshal()
			_ = u.WriteRTP(b)
		}
	}()
	waitUntil(t, "echoed rtp", func() bool { return got.n.Load() >= 5 })
}

// A Matrix user calls a ghost: the core gets the invite and a leg, its
// answer goes out as m.call.answer, media flows, and the user's hangup
// reaches the core.
func TestCallInbound(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := &fakeCallHost{fakeHost: newFakeHost()}
	linkDM(host.fakeHost)
	a := newCallAdapter(t, hs, host)

	u, err := media.NewWebRTCLeg(webrtcConfig(t), clientCodecs())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	offer, err := u.Offer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	putCallTxn(t, a, "t1", callEvent("$inv", testUser, "m.call.invite", map[string]any{
		"call_id": "c1", "party_id": "alicedev", "version": "1", "lifetime": 60000,
		"offer": map[string]any{"type": "offer", "sdp": offer},
	}))
	host.cmu.Lock()
	if len(host.invites) != 1 {
		host.cmu.Unlock()
		t.Fatalf("invites = %d", len(host.invites))
	}
	inv, leg := host.invites[0], host.legs[0]
	host.cmu.Unlock()
	if inv.Call != "c1" || inv.From.ID != testUser || inv.To.ID != testGhost || inv.Offer.Codecs[0].PayloadType != 111 {
		t.Fatalf("invite %+v", inv)
	}
	if v, ok := host.links.Value("call:c1"); !ok || v == "" {
		t.Fatal("call not recorded in links")
	}
	leg.SetPeer(echo{leg})
	if err := a.Signal(context.Background(), &event.CallRinging{Call: "c1"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Signal(context.Background(), &event.CallAnswer{Call: "c1", Answer: event.Media{Codecs: inv.Offer.Codecs[:1]}}); err != nil {
		t.Fatal(err)
	}
	ans := waitSent(t, hs, "m.call.answer")
	if _, err := u.SetAnswer(sdpOf(ans, "answer")); err != nil {
		t.Fatal(err)
	}
	got := &counter{}
	u.SetPeer(got)
	rtpFlows(t, u, got)

	// The client renegotiates (hold and resume do): the ghost answers
	// with m.call.negotiate, and media still flows.
	reoffer, err := u.Offer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	putCallTxn(t, a, "t1b", callEvent("$neg", testUser, "m.call.negotiate", map[string]any{
		"call_id": "c1", "party_id": "alicedev", "version": "1", "lifetime": 10000,
		"description": map[string]any{"type": "offer", "sdp": reoffer},
	}))
	neg := waitSent(t, hs, "m.call.negotiate")
	if d, _ := neg.Content["description"].(map[string]any); d["type"] != "answer" {
		t.Fatalf("negotiate answer %+v", neg.Content)
	}
	if _, err := u.SetAnswer(sdpOf(neg, "description")); err != nil {
		t.Fatal(err)
	}
	got2 := &counter{}
	u.SetPeer(got2)
	rtpFlows(t, u, got2)

	putCallTxn(t, a, "t2", callEvent("$hup", testUser, "m.call.hangup", map[string]any{
		"call_id": "c1", "party_id": "alicedev", "version": "1", "reason": "user_hangup",
	}))
	evs := host.callEvents()
	if len(evs) != 1 {
		t.Fatalf("call events %v", evs)
	}
	if h, ok := evs[0].(*event.CallHangup); !ok || h.Call != "c1" || h.Reason != event.HangupNormal {
		t.Fatalf("hangup %+v", evs[0])
	}
	if _, ok := host.links.Value("call:c1"); ok {
		t.Fatal("ended call still recorded")
	}
	// A repeated hangup, and the ghost's own echo, do nothing.
	putCallTxn(t, a, "t3", callEvent("$hup2", testUser, "m.call.hangup", map[string]any{"call_id": "c1", "party_id": "alicedev", "version": "1"}),
		callEvent("$echo", testGhost, "m.call.invite", map[string]any{"call_id": "c9", "party_id": "x", "version": "1", "offer": map[string]any{"type": "offer", "sdp": offer}}))
	if len(host.callEvents()) != 1 || len(host.invites) != 1 {
		t.Fatal("repeated or own events were taken")
	}
}

// Refusals: the core's error, the core's declining, malformed invites.
func TestCallInboundRefused(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := &fakeCallHost{fakeHost: newFakeHost(), callErr: fmt.Errorf("nobody: %w", bridges.ErrCallLimit)}
	linkDM(host.fakeHost)
	a := newCallAdapter(t, hs, host)
	u, err := media.NewWebRTCLeg(webrtcConfig(t), clientCodecs())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	offer, err := u.Offer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	invite := func(id string) map[string]any {
		return map[string]any{"call_id": id, "party_id": "alicedev", "version": "1", "lifetime": 60000,
			"offer": map[string]any{"type": "offer", "sdp": offer}}
	}
	putCallTxn(t, a, "t1", callEvent("$1", testUser, "m.call.invite", invite("busy1")))
	if h := waitSent(t, hs, "m.call.hangup"); h.Content["reason"] != "user_busy" || h.Content["call_id"] != "busy1" {
		t.Fatalf("hangup %+v", h.Content)
	}

	host.cmu.Lock()
	host.callErr = nil
	host.cmu.Unlock()
	putCallTxn(t, a, "t2", callEvent("$2", testUser, "m.call.invite", invite("dec1")))
	if err := a.Signal(context.Background(), &event.CallHangup{Call: "dec1", Reason: event.HangupDeclined}); err != nil {
		t.Fatal(err)
	}
	if r := waitSent(t, hs, "m.call.reject"); r.Content["call_id"] != "dec1" {
		t.Fatalf("reject %+v", r.Content)
	}

	hs.reset()
	before := len(sentCalls(hs, "m.call.hangup"))
	putCallTxn(t, a, "t3",
		callEvent("$3", testUser, "m.call.invite", map[string]any{"call_id": "bad1", "version": "1", "offer": "nonsense"}),
		callEvent("$4", testUser, "m.call.invite", map[string]any{"version": "1"}),
		callEvent("$5", testUser, "m.call.invite", map[string]any{"call_id": "nosdp", "version": "1", "offer": map[string]any{"type": "offer", "sdp": "v=0"}}),
	)
	hups := sentCalls(hs, "m.call.hangup")[before:]
	if len(hups) != 2 || hups[0].Content["call_id"] != "bad1" || hups[1].Content["call_id"] != "nosdp" ||
		hups[0].Content["reason"] != "unknown_error" {
		t.Fatalf("hangups of malformed invites: %+v", hups)
	}
}

// The core calls a Matrix user: m.call.invite with an offer, the user's
// answer is selected and reported, media flows, the core's hangup goes out.
func TestCallOutbound(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := &fakeCallHost{fakeHost: newFakeHost()}
	linkDM(host.fakeHost)
	a := newCallAdapter(t, hs, host)
	ctx := context.Background()
	inv := &event.CallInvite{Header: event.Header{
		From: event.Address{Network: event.Matrix, ID: testGhost},
		To:   event.Address{Network: event.Matrix, ID: testUser},
	}, Call: "leg1", Offer: event.Media{Codecs: []event.Codec{
		{Name: "opus", ClockRate: 48000, Channels: 2, PayloadType: 96},
		{Name: "PCMU", ClockRate: 8000, PayloadType: 0},
	}}}
	leg, err := a.Invite(ctx, inv)
	if err != nil {
		t.Fatal(err)
	}
	sent := waitSent(t, hs, "m.call.invite")
	if sent.Content["call_id"] != "leg1" || sent.Content["lifetime"] != float64(60000) || sent.Content["invitee"] != testUser {
		t.Fatalf("invite %+v", sent.Content)
	}
	u, err := media.NewWebRTCLeg(webrtcConfig(t), clientCodecs())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	answer, _, err := u.Answer(ctx, sdpOf(sent, "offer"), event.Media{})
	if err != nil {
		t.Fatal(err)
	}
	// candidates of another device, then the answer of ours
	putCallTxn(t, a, "t1",
		callEvent("$c", testUser, "m.call.candidates", map[string]any{"call_id": "leg1", "party_id": "other", "version": "1",
			"candidates": []map[string]any{{"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0}}}),
		callEvent("$a", testUser, "m.call.answer", map[string]any{"call_id": "leg1", "party_id": "alicedev", "version": "1",
			"answer": map[string]any{"type": "answer", "sdp": answer}}),
		callEvent("$a2", testUser, "m.call.answer", map[string]any{"call_id": "leg1", "party_id": "late", "version": "1",
			"answer": map[string]any{"type": "answer", "sdp": answer}}),
	)
	sel := waitSent(t, hs, "m.call.select_answer")
	if sel.Content["selected_party_id"] != "alicedev" || len(sentCalls(hs, "m.call.select_answer")) != 1 {
		t.Fatalf("select_answer %+v", sel.Content)
	}
	evs := host.callEvents()
	if len(evs) != 1 {
		t.Fatalf("events %v", evs)
	}
	ans, ok := evs[0].(*event.CallAnswer)
	if !ok || ans.Call != "leg1" || ans.Answer.Codecs[0].PayloadType != 96 {
		t.Fatalf("answer %+v", evs[0])
	}
	leg.SetPeer(echo{leg})
	got := &counter{}
	u.SetPeer(got)
	// u numbers opus 111; the echo comes back as 111 after two rewrites
	rtpFlows(t, u, got)

	// another party's hangup is not ours
	putCallTxn(t, a, "t2", callEvent("$h", testUser, "m.call.hangup", map[string]any{"call_id": "leg1", "party_id": "late", "version": "1"}))
	if len(host.callEvents()) != 1 {
		t.Fatal("another party's hangup ended the call")
	}
	if err := a.Signal(ctx, &event.CallHangup{Call: "leg1", Reason: event.HangupNormal}); err != nil {
		t.Fatal(err)
	}
	if h := waitSent(t, hs, "m.call.hangup"); h.Content["reason"] != "user_hangup" {
		t.Fatalf("hangup %+v", h.Content)
	}
	_ = leg.Close()
}

// The user rejects; an invite nobody answers times out; glare.
func TestCallOutboundEnds(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := &fakeCallHost{fakeHost: newFakeHost()}
	linkDM(host.fakeHost)
	a := newCallAdapter(t, hs, host)
	ctx := context.Background()
	invite := func(id string) media.Endpoint {
		leg, err := a.Invite(ctx, &event.CallInvite{Header: event.Header{
			From: event.Address{Network: event.Matrix, ID: testGhost},
			To:   event.Address{Network: event.Matrix, ID: testUser},
		}, Call: id, Offer: clientCodecs()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = leg.Close() })
		return leg
	}
	invite("r1")
	putCallTxn(t, a, "t1", callEvent("$r", testUser, "m.call.reject", map[string]any{"call_id": "r1", "party_id": "p", "version": "1"}))
	if h, ok := host.callEvents()[0].(*event.CallHangup); !ok || h.Reason != event.HangupDeclined {
		t.Fatalf("reject gave %+v", host.callEvents())
	}

	// glare: the user's invite with a lower call_id replaces ours
	invite("zz-ours")
	u, err := media.NewWebRTCLeg(webrtcConfig(t), clientCodecs())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	offer, _ := u.Offer(ctx)
	putCallTxn(t, a, "t2", callEvent("$g", testUser, "m.call.invite", map[string]any{"call_id": "aa-theirs", "party_id": "p", "version": "1",
		"lifetime": 60000, "offer": map[string]any{"type": "offer", "sdp": offer}}))
	evs := host.callEvents()
	if h, ok := evs[len(evs)-1].(*event.CallHangup); !ok || h.Call != "zz-ours" || h.Reason != event.HangupCancelled {
		t.Fatalf("glare: %+v", evs)
	}
	if len(host.invites) != 1 || host.invites[0].Call != "aa-theirs" {
		t.Fatalf("glare: the user's invite was not taken")
	}
	// and a user's invite with a higher call_id than ours is ignored
	invite("bb-ours")
	putCallTxn(t, a, "t3", callEvent("$g2", testUser, "m.call.invite", map[string]any{"call_id": "cc-theirs", "party_id": "p", "version": "1",
		"lifetime": 60000, "offer": map[string]any{"type": "offer", "sdp": offer}}))
	if len(host.invites) != 1 {
		t.Fatal("glare: the user's invite with the higher call_id was taken")
	}

	// an invite past its lifetime is hung up
	c := a.lookupCall("bb-ours")
	a.inviteExpired(c)
	evs = host.callEvents()
	if h, ok := evs[len(evs)-1].(*event.CallHangup); !ok || h.Call != "bb-ours" || h.Reason != event.HangupNoAnswer {
		t.Fatalf("expiry: %+v", evs)
	}
	if h := waitSent(t, hs, "m.call.hangup"); h.Content["reason"] != "invite_timeout" {
		t.Fatalf("expiry hangup %+v", h.Content)
	}
}

// A call left live by an earlier run is hung up at Start.
func TestCallLeftoversHungUp(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := &fakeCallHost{fakeHost: newFakeHost()}
	linkDM(host.fakeHost)
	host.links.Set("call:old1", `{"room":"`+testRoom+`","ghost":"`+testGhost+`","party_id":"parley-1"}`)
	newCallAdapter(t, hs, host)
	h := waitSent(t, hs, "m.call.hangup")
	if h.Content["call_id"] != "old1" || h.Content["party_id"] != "parley-1" {
		t.Fatalf("leftover hangup %+v", h.Content)
	}
	waitUntil(t, "record deleted", func() bool { _, ok := host.links.Value("call:old1"); return !ok })
}

// Without WithCalls, a call invite to a ghost is hung up and Invite refused.
func TestCallsOff(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := &fakeCallHost{fakeHost: newFakeHost()}
	linkDM(host.fakeHost)
	a := newTestAdapter(t, hs, host.fakeHost)
	// Without calls, an invite to a ghost is hung up at once, so the
	// user's client does not ring for the invite's lifetime.
	putCallTxn(t, a, "t1", callEvent("$1", testUser, "m.call.invite", map[string]any{"call_id": "x", "version": "1"}))
	h := waitSent(t, hs, "m.call.hangup")
	if h.Content["call_id"] != "x" || h.Content["reason"] != "unknown_error" {
		t.Fatalf("hangup %+v", h.Content)
	}
	if len(host.invites) != 0 {
		t.Fatal("calls off, yet the core got the invite")
	}
	_, err := a.Invite(context.Background(), &event.CallInvite{Call: "x"})
	if !bridges.IsPermanent(err) {
		t.Fatalf("Invite = %v", err)
	}
}

func FuzzParseCallContent(f *testing.F) {
	f.Add([]byte(`{"call_id":"c1","party_id":"p","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"v=0"}}`))
	f.Add([]byte(`{"call_id":"c1","version":0,"candidates":[{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMLineIndex":0,"sdpMid":"0"}]}`))
	f.Add([]byte(`{"call_id":5}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseCallContent(b)
		if err == nil && !validCallID(c.CallID) {
			t.Fatalf("accepted call_id %q", c.CallID)
		}
		if c.CallID != "" && !validCallID(c.CallID) {
			t.Fatalf("unusable call_id %q kept", c.CallID)
		}
	})
}

// A call whose media finds no path is hung up with ice_failed, and the
// core told HangupMediaFailed.
func TestCallMediaFailure(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("waits for ICE to fail; runs in make test and in CI")
	}
	hs := newFakeHS(t, "as-secret")
	host := &fakeCallHost{fakeHost: newFakeHost()}
	linkDM(host.fakeHost)
	a := newCallAdapter(t, hs, host)
	ctx := context.Background()
	leg, err := a.Invite(ctx, &event.CallInvite{Header: event.Header{
		From: event.Address{Network: event.Matrix, ID: testGhost},
		To:   event.Address{Network: event.Matrix, ID: testUser},
	}, Call: "f1", Offer: clientCodecs()})
	if err != nil {
		t.Fatal(err)
	}
	defer leg.Close()
	u, err := media.NewWebRTCLeg(webrtcConfig(t), clientCodecs())
	if err != nil {
		t.Fatal(err)
	}
	answer, _, err := u.Answer(ctx, sdpOf(waitSent(t, hs, "m.call.invite"), "offer"), event.Media{})
	if err != nil {
		t.Fatal(err)
	}
	u.Close() // the user's client goes away: no ICE checks are answered
	putCallTxn(t, a, "t1", callEvent("$a", testUser, "m.call.answer", map[string]any{"call_id": "f1", "party_id": "p", "version": "1",
		"answer": map[string]any{"type": "answer", "sdp": answer}}))
	var hup *event.CallHangup
	waitUntil(t, "the media failure", func() bool {
		for _, e := range host.callEvents() {
			if h, ok := e.(*event.CallHangup); ok {
				hup = h
				return true
			}
		}
		return false
	})
	if hup.Call != "f1" || hup.Reason != event.HangupMediaFailed {
		t.Fatalf("hangup %+v", hup)
	}
	if h := waitSent(t, hs, "m.call.hangup"); h.Content["reason"] != "ice_failed" {
		t.Fatalf("hangup sent %+v", h.Content)
	}
}

// Only the homeserver's own users call through Parley, and each only so
// often: a user of another server is refused (no toll fraud through the
// gateway), and a flood of invites from one user is cut short.
func TestCallInvitesLimited(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := &fakeCallHost{fakeHost: newFakeHost()}
	linkDM(host.fakeHost)
	const outsider = "@mallory:evil.example"
	host.links.Set("room:!far:localhost", testGhost+"|"+outsider)
	a := newCallAdapter(t, hs, host)
	u, err := media.NewWebRTCLeg(webrtcConfig(t), clientCodecs())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	offer, err := u.Offer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	invite := func(txn, sender, room, callID string) {
		b, _ := json.Marshal(map[string]any{"type": "m.call.invite", "event_id": "$" + txn, "sender": sender, "room_id": room,
			"origin_server_ts": time.Now().UnixMilli(), "content": map[string]any{
				"call_id": callID, "party_id": "dev", "version": "1", "lifetime": 60000,
				"offer": map[string]any{"type": "offer", "sdp": offer},
			}})
		putCallTxn(t, a, txn, string(b))
	}
	invite("far", outsider, "!far:localhost", "far1")
	var refused []fakeEvent
	for _, e := range hs.roomEvents("!far:localhost") {
		if e.Type == "m.call.hangup" && e.Content["call_id"] == "far1" {
			refused = append(refused, e)
		}
	}
	if len(refused) != 1 {
		t.Fatalf("the outsider's invite got %d hangups", len(refused))
	}
	host.cmu.Lock()
	n := len(host.invites)
	host.cmu.Unlock()
	if n != 0 {
		t.Fatal("a user of another homeserver placed a call")
	}

	for i := range calls.InviteBurst + 5 {
		invite(fmt.Sprintf("t%d", i), testUser, testRoom, fmt.Sprintf("flood%d", i))
	}
	host.cmu.Lock()
	n = len(host.invites)
	host.cmu.Unlock()
	if n > calls.InviteBurst+1 {
		t.Errorf("%d of %d invites reached the core; the limit is a burst of %d", n, calls.InviteBurst+5, calls.InviteBurst)
	}
	if busy := sentCalls(hs, "m.call.hangup"); len(busy) < 4 {
		t.Errorf("%d hangups, want one per refused invite", len(busy))
	}
}
