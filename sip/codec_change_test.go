package sip

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/media"
)

// pcmaOffer is testOffer with A-law instead of µ-law.
var pcmaOffer = strings.Replace(strings.Replace(testOffer, "RTP/AVP 0 101", "RTP/AVP 8 101", 1), "m=audio 16000", "m=audio 16004", 1)

// TestReinviteChangesCodec: a caller's re-INVITE without the call's codec
// asks the core to change the other leg first (100 while it waits); the
// 200 then answers with the new codec. When the other leg refuses, the
// re-INVITE gets 488 and the call keeps its codec; a re-INVITE while a
// change is under way gets 491.
func TestReinviteChangesCodec(t *testing.T) {
	h := newFakeCallHost("answer")
	release := make(chan struct{})
	var refuse atomic.Bool
	h.update = func(u *event.CallUpdate) (event.Media, error) {
		<-release
		if refuse.Load() {
			return event.Media{}, errors.New("the other leg answered 488")
		}
		return u.Offer, nil
	}
	a := startCallAdapter(t, h, trustLoopback)
	r := newRawCall(t, a.udp, "codec-change")
	r.send("INVITE", 1, testOffer)
	r.answered(r.until("SIP/2.0 200 ", "1 INVITE"))
	r.send("ACK", 1, "")

	r.send("INVITE", 2, pcmaOffer)
	r.until("SIP/2.0 100 ", "2 INVITE")
	var upd *event.CallUpdate
	for upd == nil {
		if u, ok := h.waitEvent(t).(*event.CallUpdate); ok {
			upd = u
		}
	}
	if upd.Call != "codec-change" || len(upd.Offer.Codecs) != 2 || upd.Offer.Codecs[0].Name != "PCMA" || upd.Offer.Codecs[0].PayloadType != 8 {
		t.Fatalf("the core got %+v, want the caller's offer of PCMA", upd)
	}
	// Another offer while the change is under way.
	r.send("INVITE", 3, testOffer)
	r.until("SIP/2.0 491 ", "3 INVITE")
	release <- struct{}{}
	ok := r.until("SIP/2.0 200 ", "2 INVITE")
	answer, err := media.ParseSDP([]byte(rawBody(ok)))
	if err != nil || answer.Media.Codecs[0].Name != "PCMA" || answer.Media.Codecs[0].PayloadType != 8 {
		t.Fatalf("the 200 answers %+v, %v; want PCMA", answer, err)
	}
	r.send("ACK", 2, "")
	c := a.calls.byDialog("codec-change")
	if c == nil {
		t.Fatal("the leg ended")
	}
	waitConfirmed(t, c)

	// Back to µ-law, which the other leg refuses: the call stays on A-law.
	refuse.Store(true)
	r.send("INVITE", 4, testOffer)
	go func() { release <- struct{}{} }()
	res := r.until("SIP/2.0 488 ", "4 INVITE")
	if w := rawHeader(res, "Warning"); !strings.Contains(w, "488") {
		t.Errorf("the 488's Warning %q does not say why", w)
	}
	c.mu.Lock()
	codec := c.sdp.Media.Codecs[0].Name
	c.mu.Unlock()
	if codec != "PCMA" {
		t.Errorf("after a refused change the leg's codec is %s, want PCMA", codec)
	}
	// A hold that keeps the codec needs no one else.
	r.send("INVITE", 5, pcmaOffer+"a=sendonly\r\n")
	r.until("SIP/2.0 200 ", "5 INVITE")
	r.send("ACK", 5, "")
}

// TestUpdateReinvitesTheLeg: the other leg of a call changed codec; Parley
// re-INVITEs this leg's phone with the new offer, ACKs the 200 and returns
// the codecs it accepted, numbered as offered. A phone that answers with
// none of them, or refuses, leaves the leg as it was.
func TestUpdateReinvitesTheLeg(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, nil)
	// The phone answers each offer with its first codec, or 488 when it
	// offers G.722.
	phone := newPhoneAnswering(t, func(phone *answeringPhone, req *sip.Request) *sip.Response {
		offer, err := media.ParseSDP(req.Body())
		if err != nil || offer.Media.Codecs[0].Name == "G722" {
			return sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil)
		}
		sdp := media.WriteSDP(media.AudioSDP{SessionID: 2, Version: uint64(req.CSeq().SeqNo), Addr: offer.Addr,
			Direction: media.SendRecv, Media: event.Media{Codecs: offer.Media.Codecs[:1]}})
		res := sip.NewResponseFromRequest(req, 200, "OK", sdp)
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.AppendHeader(sip.NewHeader("Contact", "<sip:bob@"+phone.addr+">"))
		return res
	})
	register(t, newPeerUA(t), "UDP", a.udp, "bob", bobPassword, "<sip:bob@"+phone.addr+">")
	pcmu := event.Codec{Name: "PCMU", ClockRate: 8000, PayloadType: 0}
	pcma := event.Codec{Name: "PCMA", ClockRate: 8000, PayloadType: 8}
	dtmf := event.Codec{Name: event.TelephoneEvent, ClockRate: 8000, PayloadType: 101, FMTP: "0-16"}
	m, err := a.Invite(context.Background(), &event.CallInvite{
		Header: event.Header{From: event.Address{Network: event.SIP, ID: ghost}, To: event.Address{Network: event.SIP, ID: "sip:bob@" + testDomain}},
		Call:   "leg-update",
		Offer:  event.Media{Codecs: []event.Codec{pcmu, dtmf}},
	})
	if err != nil {
		t.Fatalf("Invite: %v", err)
	}
	defer m.Close()
	if ans, ok := h.waitEvent(t).(*event.CallAnswer); !ok || ans.Call != "leg-update" {
		t.Fatalf("event %#v, want the answer", ans)
	}
	waitRequest(t, phone.invites, "INVITE")
	waitRequest(t, phone.acks, "ACK of the INVITE")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := a.Update(ctx, &event.CallUpdate{Call: "leg-update", Offer: event.Media{Codecs: []event.Codec{pcma, dtmf}}})
	if err != nil || len(got.Codecs) != 1 || got.Codecs[0] != pcma {
		t.Fatalf("Update: %+v, %v; want PCMA as offered", got, err)
	}
	reinvite := waitRequest(t, phone.invites, "re-INVITE")
	if toTagOf(reinvite) == "" || reinvite.CSeq().SeqNo != 2 {
		t.Errorf("the re-INVITE is not in the dialog: To %s, CSeq %d", reinvite.To().Value(), reinvite.CSeq().SeqNo)
	}
	if ack := waitRequest(t, phone.acks, "ACK of the re-INVITE"); ack.CSeq().SeqNo != 2 {
		t.Errorf("the ACK's CSeq is %d, want the re-INVITE's 2", ack.CSeq().SeqNo)
	}

	g722 := event.Codec{Name: "G722", ClockRate: 8000, PayloadType: 9}
	if _, err := a.Update(ctx, &event.CallUpdate{Call: "leg-update", Offer: event.Media{Codecs: []event.Codec{g722}}}); err == nil {
		t.Error("an offer the phone refuses was taken")
	}
	waitRequest(t, phone.invites, "refused re-INVITE")
	c := a.calls.get("leg-update")
	c.mu.Lock()
	codec := c.sdp.Media.Codecs[0]
	c.mu.Unlock()
	if codec != pcma {
		t.Errorf("after a refused change the leg's codec is %v, want PCMA", codec)
	}
	if _, err := a.Update(ctx, &event.CallUpdate{Call: "nobody", Offer: event.Media{Codecs: []event.Codec{pcma}}}); !errors.Is(err, bridges.ErrUnknownCall) {
		t.Errorf("Update of an unknown leg: %v", err)
	}
}

// TestReinvitePort0: a re-offer that disables the audio stream (port 0) is
// answered with port 0 (RFC 3264 §6), keeping the call; the next re-offer
// with a port enables it again.
func TestReinvitePort0(t *testing.T) {
	h := newFakeCallHost("answer")
	a := startCallAdapter(t, h, trustLoopback)
	r := newRawCall(t, a.udp, "port-0")
	r.send("INVITE", 1, testOffer)
	r.answered(r.until("SIP/2.0 200 ", "1 INVITE"))
	r.send("ACK", 1, "")
	r.send("INVITE", 2, strings.Replace(testOffer, "m=audio 16000", "m=audio 0", 1))
	ok := r.until("SIP/2.0 200 ", "2 INVITE")
	if !strings.Contains(rawBody(ok), "m=audio 0 ") {
		t.Errorf("the answer to a disabled stream does not disable it:\n%s", rawBody(ok))
	}
	r.send("ACK", 2, "")
	r.send("INVITE", 3, testOffer)
	ok = r.until("SIP/2.0 200 ", "3 INVITE")
	if answer, err := media.ParseSDP([]byte(rawBody(ok))); err != nil || answer.Port0 {
		t.Errorf("the stream stays disabled: %+v, %v", answer, err)
	}
	r.send("ACK", 3, "")
}

// TestLeftoverRingingCallRefused: a caller leg recorded by an earlier run
// before it was answered (its phone still waits for a final response) gets
// 500 with a Reason when the adapter starts, at the INVITE's source, for the
// INVITE's transaction; its record goes.
func TestLeftoverRingingCallRefused(t *testing.T) {
	phone, port := listenRTP(t) // a plain UDP socket, as the phone's SIP port
	src := "127.0.0.1:" + strconv.Itoa(port)
	h := newFakeCallHost("answer")
	h.links.Set(callKeyPrefix+"ringing@x", `{"call_id":"ringing@x","local_tag":"lt","remote_tag":"rt",`+
		`"local_uri":"sip:bob@`+testDomain+`","remote_uri":"sip:100@pbx.example.org",`+
		`"target":"sip:100@`+src+`","transport":"UDP","source":"`+src+`","invite_cseq":7,`+
		`"vias":["SIP/2.0/UDP `+src+`;branch=z9hG4bK-ringing;rport=`+strconv.Itoa(port)+`"]}`)
	startCallAdapter(t, h, nil)
	_ = phone.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := phone.Read(buf)
	if err != nil {
		t.Fatalf("no answer to the leftover INVITE: %v", err)
	}
	res := string(buf[:n])
	for _, want := range []string{"SIP/2.0 500 ", "Via: SIP/2.0/UDP " + src + ";branch=z9hG4bK-ringing", "CSeq: 7 INVITE",
		"Call-ID: ringing@x", "To: <sip:bob@" + testDomain + ">;tag=lt", "From: <sip:100@pbx.example.org>;tag=rt", "Reason: Q.850;cause=41"} {
		if !strings.Contains(res, want) {
			t.Errorf("the answer lacks %q:\n%s", want, res)
		}
	}
	if _, err := sip.ParseMessage(buf[:n]); err != nil {
		t.Errorf("the answer does not parse: %v", err)
	}
	for range 50 {
		if _, ok := h.links.Value(callKeyPrefix + "ringing@x"); !ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Error("the leftover leg's record is still there")
}
