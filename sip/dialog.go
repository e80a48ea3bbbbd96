package sip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/calls"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/media"
)

// onReinvite handles an INVITE in the dialog of a leg (RFC 3261 §14): a
// hold (sendonly, inactive), a new address, a refresh of the session timer
// or a change of codec. The leg's remote address follows the new offer; the
// answer keeps the leg's codec and mirrors the offer's direction. A
// re-offer without the call's codec changes the codec of the whole call
// (Parley does not transcode): the other leg is offered the same codecs
// first (see changeCodec), and the answer follows its answer; when it
// cannot change, the re-INVITE gets 488 and the call goes on as it
// was. A re-INVITE without SDP is
// answered with Parley's current SDP as the offer (its answer, in the ACK,
// may move the leg's remote address: see onAck). The 2xx is sent again
// until its ACK comes, as the first one (retransmitOK). 491 while the leg
// is not answered yet, or while an offer Parley made in a 2xx waits for
// its answer in the ACK (RFC 3264 §4); 481 outside any leg.
func (a *Adapter) onReinvite(req *sip.Request, tx sip.ServerTransaction) *reply {
	c := a.calls.byDialog(req.CallID().Value())
	if c == nil {
		return newReply(481, "Call/Transaction Does Not Exist")
	}
	var offer media.AudioSDP
	if len(req.Body()) > 0 {
		var err error
		offer, err = media.ParseSDP(req.Body())
		if errors.Is(err, media.ErrNoAudio) {
			return newReply(488, "Not Acceptable Here", warning(a.domain, err.Error()))
		}
		if err != nil {
			return newReply(400, "Bad Request (Malformed SDP)", warning(a.domain, err.Error()))
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == callEnded || fromTag(req) != c.d.RemoteTag || toTagOf(req) != c.d.LocalTag {
		return newReply(481, "Call/Transaction Does Not Exist")
	}
	if c.state == callEarly || c.pending != nil && c.pending.offer || c.updating {
		return newReply(491, "Request Pending")
	}
	// A 2xx with an answer still unacknowledged: the caller has it, or
	// would not send a new INVITE; its ACK was lost or is late.
	if c.ackedLocked() != nil && c.state == callAnswering {
		c.state = callConfirmed
	}
	var changed event.Media // the call's new codecs, after a change
	if len(req.Body()) > 0 {
		if len(c.sdp.Media.Codecs) > 0 && !offer.Port0 {
			cur := c.sdp.Media.Codecs[0]
			found := false
			for _, oc := range offer.Media.Codecs {
				if oc.Same(cur) {
					found = true
					break
				}
			}
			if !found {
				var r *reply
				if changed, r = a.changeCodec(c, req, tx, offer); r != nil {
					return r
				}
			}
		}
		// A re-offer without an address (hold written as c=0.0.0.0) keeps
		// the leg latched where it is: unlatching would let anyone's first
		// packet take the call over while it is on hold.
		if offer.Addr.IsValid() {
			c.leg.SetRemoteVia(offer.Addr, sourceIP(req))
		}
		c.sdp.Direction = offer.Direction.Reverse()
	}
	// A stream the offer disables (port 0) is disabled in the answer too
	// (RFC 3264 §6); Parley's own offer (no SDP in the re-INVITE) enables
	// it again.
	c.sdp.Port0 = offer.Port0
	if ct := req.Contact(); ct != nil {
		c.d.Target = ct.Address.String()
	}
	a.refreshSessionLocked(c, req)
	res := sip.NewResponseFromRequest(req, 200, "OK", a.ourSDP(c, changed))
	res.AppendHeader(a.serverHeader)
	res.AppendHeader(&sip.ContactHeader{Address: a.localContact(c.d.Transport, c.local())})
	res.AppendHeader(sip.NewHeader("Content-Type", sdpType))
	if c.expires > 0 {
		res.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(int(c.expires/time.Second))+";refresher=uac"))
		res.AppendHeader(sip.NewHeader("Require", "timer"))
	}
	if err := tx.Respond(res); err != nil {
		a.log.Debug("sip re-INVITE response failed", "call", c.id, "err", err)
	}
	p := a.pendingLocked(c, tx, res, req, len(req.Body()) == 0)
	go a.retransmitOK(c, p)
	a.log.Debug("sip call re-INVITEd", "call", c.id, "direction", string(c.sdp.Direction))
	return nil
}

// changeCodec asks the core to change the call's codec to those of offer,
// a re-INVITE's offer without the call's codec (see onReinvite), and
// returns the leg's new codecs, numbered as the offer numbers them; or the
// reply that refuses the re-INVITE (488 when the other leg cannot change,
// 491 when an offer of its own crossed this one), after which the call
// goes on as it was. It sends 100 Trying while it waits for the other leg.
// c.mu is held, and held again when it returns; meanwhile c.updating keeps
// other offers out.
func (a *Adapter) changeCodec(c *call, req *sip.Request, tx sip.ServerTransaction, offer media.AudioSDP) (event.Media, *reply) {
	host, ok := a.callHost()
	if !ok {
		return event.Media{}, newReply(488, "Not Acceptable Here", warning(a.domain, "the re-offer leaves out the call's codec "+c.sdp.Media.Codecs[0].Name))
	}
	c.updating = true
	c.mu.Unlock()
	if err := tx.Respond(sip.NewResponseFromRequest(req, 100, "Trying", nil)); err != nil {
		a.log.Debug("sip re-INVITE 100 failed", "call", c.id, "err", err)
	}
	ctx, cancel := context.WithTimeout(a.dispatchCtx, updateTimeout)
	answer, err := host.Update(ctx, &event.CallUpdate{Header: a.callHeader(c), Call: c.id, Offer: offer.Media})
	cancel()
	c.mu.Lock()
	c.updating = false
	switch {
	case c.state == callEnded:
		return event.Media{}, newReply(487, "Request Terminated")
	case errors.Is(err, bridges.ErrUpdatePending):
		return event.Media{}, newReply(491, "Request Pending")
	case err != nil:
		a.log.Info("sip codec change refused", "call", c.id, "offer", offer.Media.String(), "err", err)
		return event.Media{}, newReply(488, "Not Acceptable Here", warning(a.domain, err.Error()))
	}
	a.log.Info("sip codec changed", "call", c.id, "codecs", answer.String())
	return answer, nil
}

// updateTimeout bounds a change of codec: the other leg's answer to it
// (the core's own bound), and Parley's re-INVITE to a leg.
const updateTimeout = 32 * time.Second

// Update implements bridges.CallUpdater: the other leg of the call changed
// codec, and this leg must too. Parley re-INVITEs the leg's party with
// upd.Offer and returns the codecs of the 2xx's answer, numbered as the
// offer numbers them; the leg's media follow the answer. A 491 (an offer
// of the party's own crossed this one) is ErrUpdatePending; any other
// refusal leaves the leg as it was.
func (a *Adapter) Update(ctx context.Context, upd *event.CallUpdate) (event.Media, error) {
	c := a.calls.get(upd.Call)
	if c == nil {
		return event.Media{}, fmt.Errorf("update SIP call %s: %w", upd.Call, bridges.ErrUnknownCall)
	}
	_, _, client, _ := a.stack()
	if client == nil {
		return event.Media{}, errNotStarted
	}
	c.mu.Lock()
	switch {
	case c.state == callEnded:
		c.mu.Unlock()
		return event.Media{}, fmt.Errorf("update SIP call %s: %w", upd.Call, bridges.ErrUnknownCall)
	case c.state != callConfirmed || c.pending != nil || c.updating:
		c.mu.Unlock()
		return event.Media{}, fmt.Errorf("update SIP call %s: %w", upd.Call, bridges.ErrUpdatePending)
	}
	c.updating = true
	prev := c.sdp.Media
	body := a.ourSDP(c, upd.Offer)
	c.d.CSeq++
	d := c.d
	c.mu.Unlock()
	answer, err := a.reinvite(ctx, client, c, d, body, upd.Offer)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updating = false
	if err != nil {
		c.sdp.Media = prev
		return event.Media{}, fmt.Errorf("update SIP call %s: %w", upd.Call, err)
	}
	c.sdp.Media = answer
	return answer, nil
}

// reinvite sends a re-INVITE with body, Parley's offer of offered, in d,
// ACKs its 2xx, moves c's leg to the answer's address and returns the
// offered codecs the answer accepts.
func (a *Adapter) reinvite(ctx context.Context, client *sipgo.Client, c *call, d dialog, body []byte, offered event.Media) (event.Media, error) {
	req, err := a.newInDialog(d, sip.INVITE,
		&sip.ContactHeader{Address: a.localContact(d.Transport, c.local())},
		sip.NewHeader("Allow", allowMethods), sip.NewHeader("Content-Type", sdpType))
	if err != nil {
		return event.Media{}, err
	}
	req.SetBody(body)
	res, err := client.Do(ctx, req)
	switch {
	case err != nil:
		return event.Media{}, fmt.Errorf("re-INVITE: %w", err)
	case res == nil:
		return event.Media{}, errors.New("re-INVITE: no answer")
	case res.StatusCode == 491:
		return event.Media{}, fmt.Errorf("re-INVITE answered 491: %w", bridges.ErrUpdatePending)
	case !res.IsSuccess():
		return event.Media{}, fmt.Errorf("re-INVITE answered %d %s", res.StatusCode, res.Reason)
	}
	a.ack(d)
	ans, err := media.ParseSDP(res.Body())
	if err != nil {
		return event.Media{}, fmt.Errorf("the answer to the re-INVITE: %w", err)
	}
	kept := acceptedCodecs(offered, ans.Media)
	if ans.Port0 || kept.Validate() != nil {
		// The party took the re-INVITE but none of its codecs: the
		// dialog's session is now one Parley cannot forward.
		return event.Media{}, errors.New("the answer to the re-INVITE accepts none of the offered audio codecs")
	}
	if ans.Addr.IsValid() {
		c.leg.SetRemoteVia(ans.Addr, sourceIP(res))
	}
	return kept, nil
}

// acceptedCodecs returns the codecs of offered that answer accepts, each
// once, in the answer's order and numbered as offered numbers them.
func acceptedCodecs(offered, answer event.Media) event.Media {
	var kept []event.Codec
	for _, ac := range answer.Codecs {
		for _, oc := range offered.Codecs {
			if oc.Same(ac) && !slices.ContainsFunc(kept, oc.Same) {
				kept = append(kept, oc)
				break
			}
		}
	}
	return event.Media{Codecs: kept}
}

// sessionExpires returns the session interval a request or response asks
// for (RFC 4028 §4: Session-Expires, or its compact form x), and whether
// its refresher is the UAS.
func sessionExpires(m interface{ Headers() []sip.Header }) (time.Duration, bool) {
	for _, h := range m.Headers() {
		if !isHeader(h, "Session-Expires") && !isHeader(h, "x") {
			continue
		}
		v, params, _ := strings.Cut(h.Value(), ";")
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n <= 0 {
			return 0, false
		}
		n = min(max(n, minSessionExpires), maxSessionExpires) // a UAS may shorten it (RFC 4028 §9)
		uas := false
		for _, p := range strings.Split(params, ";") {
			k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(k, "refresher") && strings.EqualFold(strings.TrimSpace(val), "uas") {
				uas = true
			}
		}
		return time.Duration(n) * time.Second, uas
	}
	return 0, false
}

// supportsTimer reports whether req lists the timer extension in Supported
// or Require.
func supportsTimer(req *sip.Request) bool {
	for _, h := range req.Headers() {
		if !isHeader(h, "Supported") && !isHeader(h, "k") && !isHeader(h, "Require") {
			continue
		}
		for _, t := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(t), "timer") {
				return true
			}
		}
	}
	return false
}

// sessionTimer takes the session timer of a caller leg's INVITE (RFC 4028):
// when the caller supports it and asks for an interval, the answer carries
// it with the caller as refresher, and the leg ends with a BYE when no
// refresh came in time. A caller that asks Parley to refresh
// (refresher=uas) gets no session timer: RFC 4028 §9 lets the UAS choose
// only when the UAC did not, and Parley sends no refreshes of its own.
func (a *Adapter) sessionTimer(c *call, req *sip.Request) {
	if !supportsTimer(req) {
		return
	}
	if se, uas := sessionExpires(req); se > 0 && !uas {
		c.expires = se
	}
}

// refreshSessionLocked restarts the session timer of c for a refresh (a
// re-INVITE), with the interval it asks for. c.mu is held.
func (a *Adapter) refreshSessionLocked(c *call, req *sip.Request) {
	if se, _ := sessionExpires(req); se > 0 && c.expires > 0 {
		c.expires = se
	}
	a.armLapseLocked(c)
}

// armLapseLocked (re)starts the timer that ends c when its session lapses:
// the interval, less a third of it or 32 s, whichever is smaller (RFC 4028
// §10). c.mu is held.
func (a *Adapter) armLapseLocked(c *call) {
	if c.expires <= 0 {
		return
	}
	d := c.expires - min(32*time.Second, c.expires/3)
	if c.lapse != nil {
		c.lapse.Reset(d)
		return
	}
	c.lapse = time.AfterFunc(d, func() {
		a.log.Info("sip session expired; ending the call", "call", c.id)
		a.endWithBye(a.dispatchCtx, c, event.HangupFailure, true)
	})
}

// sessionTimerAnswer takes the session timer of a callee's 2xx: Parley
// offers no refreshes, so only one the callee refreshes is kept.
func (a *Adapter) sessionTimerAnswer(c *call, res *sip.Response) {
	se, uas := sessionExpires(res)
	if se <= 0 || !uas {
		return
	}
	c.mu.Lock()
	c.expires = se
	a.armLapseLocked(c)
	c.mu.Unlock()
}

// Crash clean-up: each live leg's dialog is kept in the links under
// callKeyPrefix+ID while it lives, and deleted when it ends. Start ends the
// legs a crash left over: a BYE for an answered one, a CANCEL for a callee
// leg still ringing. A caller leg still ringing needs nothing: its
// transaction is gone, and the phone gives up on its own (Timer B).

const callKeyPrefix = "call:"

func (a *Adapter) storeDialog(c *call) {
	_, links, _, _ := a.stack()
	if links == nil {
		return
	}
	c.mu.Lock()
	v, err := json.Marshal(c.d)
	c.mu.Unlock()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(a.dispatchCtx, linksTimeout)
	defer cancel()
	if err := links.Put(ctx, callKeyPrefix+c.id, string(v)); err != nil {
		a.log.Warn("sip call not recorded", "call", c.id, "err", err)
	}
}

func (a *Adapter) deleteDialog(c *call) {
	_, links, _, _ := a.stack()
	if links == nil {
		return
	}
	ctx, cancel := context.WithTimeout(a.dispatchCtx, linksTimeout)
	defer cancel()
	if err := links.Delete(ctx, callKeyPrefix+c.id); err != nil {
		a.log.Warn("sip call record not deleted", "call", c.id, "err", err)
	}
}

// endLeftoverCalls ends the legs recorded in the links by an earlier run,
// and deletes their records.
func (a *Adapter) endLeftoverCalls(ctx context.Context) {
	_, links, client, _ := a.stack()
	if links == nil || client == nil {
		return
	}
	recs, err := links.List(ctx, callKeyPrefix)
	if err != nil {
		a.log.Warn("sip leftover calls not read", "err", err)
		return
	}
	for key, v := range recs {
		if a.calls.get(strings.TrimPrefix(key, callKeyPrefix)) != nil {
			continue // a leg of this run
		}
		var d dialog
		if err := json.Unmarshal([]byte(v), &d); err == nil {
			switch {
			case d.Answered:
				d.CSeq++
				err = a.sendInDialog(ctx, d, sip.BYE, reasonHeader(event.HangupFailure))
			case d.Branch != "":
				err = a.cancelRecorded(ctx, d)
			case len(d.Vias) > 0:
				err = a.refuseRecorded(d)
			}
			a.log.Info("sip call left over by an earlier run ended", "call_id", d.CallID, "answered", d.Answered, "err", err)
		}
		if err := links.Delete(ctx, key); err != nil {
			a.log.Warn("sip leftover call record not deleted", "key", key, "err", err)
		}
	}
}

// refuseRecorded answers the INVITE of a recorded caller leg that was not
// answered with the status and Reason of a failure (500, Q.850 cause 41), so that the phone stops
// waiting for an answer that will not come. Only a UDP INVITE can be
// answered: a TCP or TLS connection ended with the earlier run, and the
// phone saw it end.
func (a *Adapter) refuseRecorded(d dialog) error {
	if d.Transport != "UDP" {
		return nil
	}
	dest, err := netip.ParseAddrPort(d.Source)
	if err != nil {
		return fmt.Errorf("the INVITE's source %q: %w", d.Source, err)
	}
	a.udp.mu.RLock()
	var conn *udpConn
	if len(a.udp.conns) > 0 {
		conn = a.udp.conns[0]
	}
	a.udp.mu.RUnlock()
	if conn == nil {
		return errors.New("no UDP listener")
	}
	code := calls.For(event.HangupFailure).SIPStatus
	var b strings.Builder
	b.WriteString("SIP/2.0 " + strconv.Itoa(code) + " " + sipReasonPhrase(code) + "\r\n")
	for _, v := range d.Vias {
		b.WriteString("Via: " + v + "\r\n")
	}
	b.WriteString("From: <" + d.RemoteURI + ">;tag=" + d.RemoteTag + "\r\n")
	b.WriteString("To: <" + d.LocalURI + ">;tag=" + d.LocalTag + "\r\n")
	b.WriteString("Call-ID: " + d.CallID + "\r\n")
	b.WriteString("CSeq: " + strconv.FormatUint(uint64(d.InviteCSeq), 10) + " INVITE\r\n")
	b.WriteString(reasonHeader(event.HangupFailure).String() + "\r\n")
	b.WriteString("Server: " + a.cfg.UserAgent + "\r\nContent-Length: 0\r\n\r\n")
	_, err = conn.WriteTo([]byte(b.String()), net.UDPAddrFromAddrPort(dest))
	return err
}

// ackStray ACKs a final non-2xx response to an INVITE that matches no
// transaction: the 487 to the INVITE of a callee leg that an earlier run
// left ringing, and that this run cancelled (cancelRecorded). The phone's
// transaction retransmits it until it is ACKed (RFC 3261 §17.2.1), and
// the ACK of a non-2xx belongs to the INVITE's transaction, which ended
// with the earlier run: Parley builds it as that transaction would have
// (§17.1.1.3), with the response's Via, From, To and Call-ID.
func (a *Adapter) ackStray(r *sip.Response) {
	cseq, via := r.CSeq(), r.Via()
	if cseq == nil || cseq.MethodName != sip.INVITE || r.StatusCode < 300 || via == nil || r.To() == nil || r.From() == nil || r.CallID() == nil {
		return
	}
	_, _, client, _ := a.stack()
	if client == nil {
		return
	}
	ack := sip.NewRequest(sip.ACK, r.To().Address)
	ack.AppendHeader(via.Clone())
	ack.AppendHeader(sip.HeaderClone(r.From()))
	ack.AppendHeader(sip.HeaderClone(r.To()))
	ack.AppendHeader(sip.HeaderClone(r.CallID()))
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: cseq.SeqNo, MethodName: sip.ACK})
	maxForwards := sip.MaxForwardsHeader(70)
	ack.AppendHeader(&maxForwards)
	ack.SetTransport(r.Transport())
	ack.SetDestination(r.Source())
	if err := client.WriteRequest(ack); err != nil {
		a.log.Debug("sip ACK of a stray response not sent", "status", r.StatusCode, "err", err)
	}
}

// cancelRecorded CANCELs the INVITE of a recorded callee leg that was not
// answered.
func (a *Adapter) cancelRecorded(ctx context.Context, d dialog) error {
	_, _, client, _ := a.stack()
	var target sip.Uri
	if err := sip.ParseUri(d.Target, &target); err != nil {
		return err
	}
	req, err := a.newInDialog(dialog{
		CallID: d.CallID, LocalTag: d.LocalTag, LocalURI: d.LocalURI, RemoteURI: d.RemoteURI,
		Target: d.Target, Routes: d.Routes, Transport: d.Transport, CSeq: d.InviteCSeq,
	}, sip.CANCEL, reasonHeader(event.HangupFailure))
	if err != nil {
		return err
	}
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: d.Transport, Host: a.domain, Params: sip.NewParams()}
	via.Params.Add("branch", d.Branch)
	if lc := a.localContact(d.Transport, ""); lc.Port != 0 {
		via.Host, via.Port = lc.Host, lc.Port
	}
	req.PrependHeader(via)
	_, err = client.Do(ctx, req, func(*sipgo.Client, *sip.Request) error { return nil })
	return err
}
