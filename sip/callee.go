package sip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/calls"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/media"
)

// errUnavailable is wrapped in the permanent error of Invite to a user of
// the domain who has no registered contact.
var errUnavailable = errors.New("the callee is unavailable: no registered contact")

// branch is one INVITE of a callee leg: to one registered contact of the
// callee, or to their AOR through the outbound proxy.
type branch struct {
	callID string
	req    *sip.Request
	tx     sip.ClientTransaction
	// status is the final status the branch got, 0 while it has none.
	status int

	// A CANCEL may go only after a provisional response (RFC 3261 §9.1):
	// one asked for before waits in cancelWith until the branch's first
	// provisional response sends it.
	mu          sync.Mutex
	provisional bool
	cancelWith  event.HangupReason
	cancelled   bool
}

// Invite implements bridges.CallNetwork: it calls inv.To from inv.From (a
// ghost or alias of the domain), offering inv.Offer from a new RTP leg, and
// returns the leg at once. A user of the domain is called on every
// registered contact at once (forking, RFC 3261 §16.7 as a UAC would do
// it): the first 2xx wins, the other branches are CANCELled with Reason
// SIP;cause=200 ("Call completed elsewhere"), and a 2xx that comes later is
// ACKed and ended with a BYE. A user without a contact is a permanent
// error (unavailable). Anyone else is called at their AOR through the
// outbound proxy (or their domain), as MESSAGE does.
//
// The leg's progress goes to the host's CallEvent: CallRinging on the
// first 180 or 183 (with early media when the 183 has SDP), CallAnswer with
// the codecs of the answer, CallHangup (calls.FromSIPStatus) when every
// branch failed.
func (a *Adapter) Invite(ctx context.Context, inv *event.CallInvite) (media.Endpoint, error) {
	fail := func(err error) (media.Endpoint, error) {
		return nil, fmt.Errorf("invite %s: %w", inv.To.ID, err)
	}
	if inv.Call == "" {
		return fail(bridges.Permanent(errors.New("the invite has no call ID")))
	}
	if inv.From.Network != event.SIP || inv.To.Network != event.SIP {
		return fail(bridges.Permanent(fmt.Errorf("addresses %s → %s are not on the SIP network", inv.From, inv.To)))
	}
	if err := inv.Offer.Validate(); err != nil {
		return fail(bridges.Permanent(fmt.Errorf("offer: %w", err)))
	}
	codec := AddressCodec{}
	_, fromHost, err := codec.Split(inv.From.ID)
	if err != nil {
		return fail(bridges.Permanent(err))
	}
	if fromHost != a.domain {
		return fail(bridges.Permanent(fmt.Errorf("caller %s is not under the domain %s", inv.From.ID, a.domain)))
	}
	toUser, toHost, err := codec.Split(inv.To.ID)
	if err != nil {
		return fail(bridges.Permanent(err))
	}
	if a.newLeg == nil {
		return fail(bridges.Permanent(errors.New("calls are not configured (no media port range)")))
	}
	_, links, client, ua := a.stack()
	if client == nil {
		return fail(errNotStarted)
	}
	if a.calls.get(inv.Call) != nil {
		return fail(bridges.Permanent(fmt.Errorf("call %s exists already", inv.Call)))
	}

	var targets []target
	if toHost == a.domain {
		if !a.users[toUser] {
			return fail(bridges.Permanent(fmt.Errorf("%s is not a user of %s", inv.To.ID, a.domain)))
		}
		reg, err := a.loadRegistration(ctx, links, toUser, a.now())
		if err != nil {
			return fail(err)
		}
		for _, b := range reg.Bindings {
			t, err := a.contactTarget(ua, b)
			if err != nil {
				a.log.Warn("sip binding unusable", "aor", inv.To.ID, "contact", b.Contact, "err", err)
				continue
			}
			targets = append(targets, t)
		}
		if len(targets) == 0 {
			return fail(bridges.Permanent(errUnavailable))
		}
	} else {
		var u sip.Uri
		_ = sip.ParseUri(inv.To.ID, &u) // canonical AORs parse
		targets = []target{{uri: u, route: a.proxy, name: inv.To.ID}}
	}

	leg, err := a.newLeg()
	if err != nil {
		return fail(err)
	}
	// Until the answer says where the callee receives, the first packet
	// from anywhere latches the leg (early media from a gateway).
	leg.SetRemote(netip.AddrPort{}, true)
	c := &call{id: inv.Call, leg: leg, from: inv.From.ID, to: inv.To.ID}
	c.sdp = media.AudioSDP{SessionID: newSessionID(), Direction: media.SendRecv}
	c.mu.Lock()
	offer := a.ourSDP(c, inv.Offer)
	c.mu.Unlock()
	if !a.calls.add(c) {
		_ = leg.Close()
		return fail(bridges.Permanent(fmt.Errorf("call %s exists already", inv.Call)))
	}
	runCtx, stop := context.WithTimeout(a.dispatchCtx, callTimeout)
	c.stop = stop
	c.d = dialog{LocalTag: sip.GenerateTagN(16), LocalURI: inv.From.ID, RemoteURI: inv.To.ID, CSeq: 1, InviteCSeq: 1}

	for i, t := range targets {
		b := &branch{callID: derive("call-id", inv.Call+"/"+strconv.Itoa(i))[:32] + "@" + a.domain}
		b.req = a.newInvite(c, inv, t, b.callID, offer)
		tx, err := client.TransactionRequest(runCtx, b.req)
		if err != nil {
			a.log.Info("sip invite not sent", "call", c.id, "target", t.name, "err", err)
			b.status = 503
			c.branches = append(c.branches, b)
			continue
		}
		b.tx = tx
		c.branches = append(c.branches, b)
		a.calls.addCallID(c, b.callID)
	}
	sent := false
	for _, b := range c.branches {
		sent = sent || b.tx != nil
	}
	if !sent {
		stop()
		a.calls.remove(c)
		_ = leg.Close()
		return fail(fmt.Errorf("no INVITE could be sent to the %d contacts", len(targets)))
	}
	c.mu.Lock()
	c.d.Transport = sip.NetworkToUpper(c.branches[0].req.Transport())
	if v := c.branches[0].req.Via(); v != nil {
		c.d.Branch, _ = v.Params.Get("branch")
	}
	c.d.CallID = c.branches[0].callID
	c.d.Target = c.branches[0].req.Recipient.String()
	branches := append([]*branch(nil), c.branches...)
	c.mu.Unlock()
	a.storeDialog(c)
	var wg sync.WaitGroup
	for _, b := range branches {
		if b.tx == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.runBranch(runCtx, c, b)
		}()
	}
	go func() {
		wg.Wait()
		a.branchesDone(c)
	}()
	return leg, nil
}

// newInvite builds the INVITE of one branch.
func (a *Adapter) newInvite(c *call, inv *event.CallInvite, t target, callID string, sdp []byte) *sip.Request {
	req := sip.NewRequest(sip.INVITE, t.uri)
	var fromURI, toURI sip.Uri
	_ = sip.ParseUri(inv.From.ID, &fromURI) // canonical AORs parse
	_ = sip.ParseUri(inv.To.ID, &toURI)
	from := &sip.FromHeader{DisplayName: quoteDisplayName(inv.FromName), Address: fromURI, Params: sip.NewParams()}
	from.Params.Add("tag", c.d.LocalTag)
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: toURI})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	maxForwards := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxForwards)
	transport := t.transport
	if transport == "" {
		transport = "UDP"
	}
	req.AppendHeader(&sip.ContactHeader{Address: a.localContact(transport, inv.From.ID)})
	req.AppendHeader(a.userAgentHeader)
	req.AppendHeader(sip.NewHeader("Allow", allowMethods))
	req.AppendHeader(sip.NewHeader("Content-Type", sdpType))
	req.SetBody(sdp)
	t.address(req)
	return req
}

// runBranch reads the responses of one branch until its final one. When
// the leg ends first (ctx), the branch is cancelled: at once if it had a
// provisional response, else when its first one comes (or its INVITE
// times out).
func (a *Adapter) runBranch(ctx context.Context, c *call, b *branch) {
	defer b.tx.Terminate()
	done := ctx.Done()
	for {
		select {
		case res := <-b.tx.Responses():
			switch {
			case res.IsProvisional():
				if reason := b.gotProvisional(); reason != 0 {
					a.sendCancel(a.dispatchCtx, b, reason)
				}
				if res.StatusCode != 100 {
					a.branchRinging(c, res)
				}
			case res.IsSuccess():
				a.branchAnswered(c, b, res)
				return
			default:
				a.branchFailed(c, b, res.StatusCode)
				return
			}
		case <-b.tx.Done():
			a.branchFailed(c, b, 408)
			return
		case <-done:
			// The leg ended (or another branch's 6xx ended it): cancel
			// this branch, unless whoever ended the leg did already, and
			// read on until its final response (487, which the
			// transaction ACKs) or its timeout.
			done = nil
			c.mu.Lock()
			reason := event.HangupNoAnswer
			if r, ok := calls.FromSIPStatus(c.global); ok {
				reason = r
			}
			c.mu.Unlock()
			a.cancelBranch(a.dispatchCtx, b, reason)
		}
	}
}

// gotProvisional records the branch's first provisional response and
// returns the reason of a CANCEL that waited for it, if any.
func (b *branch) gotProvisional() event.HangupReason {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.provisional = true
	if b.cancelWith == 0 || b.cancelled {
		return 0
	}
	b.cancelled = true
	return b.cancelWith
}

func (a *Adapter) branchRinging(c *call, res *sip.Response) {
	var early media.AudioSDP
	hasSDP := false
	if res.StatusCode == 183 && len(res.Body()) > 0 {
		if s, err := media.ParseSDP(res.Body()); err == nil && !s.Port0 {
			early, hasSDP = s, true
		}
	}
	c.mu.Lock()
	if c.state != callEarly || (c.rang && !hasSDP) {
		c.mu.Unlock()
		return
	}
	c.rang = true // one CallRinging per leg, unless early media comes after it
	if hasSDP {
		c.leg.SetRemoteVia(early.Addr, sourceIP(res))
	}
	c.mu.Unlock()
	host, ok := a.callHost()
	if !ok {
		return
	}
	evt := &event.CallRinging{Header: a.callHeader(c), Call: c.id, EarlyMedia: hasSDP}
	if hasSDP {
		evt.Media = early.Media
	}
	ctx, cancel := context.WithTimeout(a.dispatchCtx, dispatchTimeout)
	defer cancel()
	if err := host.CallEvent(ctx, evt); err != nil {
		a.log.Debug("sip ringing not reported", "call", c.id, "err", err)
	}
}

// branchAnswered handles a 2xx of branch b: the first one wins the leg,
// the others are ACKed and ended with a BYE.
func (a *Adapter) branchAnswered(c *call, b *branch, res *sip.Response) {
	c.mu.Lock()
	local := c.d // another branch's answer may replace c.d meanwhile
	c.mu.Unlock()
	d := dialog{
		CallID: b.callID, LocalTag: local.LocalTag, RemoteTag: toTagOf(res),
		LocalURI: local.LocalURI, RemoteURI: local.RemoteURI,
		Target: b.req.Recipient.String(), Routes: recordRoutes(res, true),
		Transport: sip.NetworkToUpper(b.req.Transport()), CSeq: 1, Answered: true,
	}
	if ct := res.Contact(); ct != nil {
		d.Target = ct.Address.String()
	}
	if len(d.Routes) == 0 && b.req.Destination() != "" && b.req.Destination() != b.req.Recipient.HostPort() {
		d.Source, d.Flow = b.req.Destination(), true
	}
	a.ack(d)
	answer, err := media.ParseSDP(res.Body())
	c.mu.Lock()
	if c.state != callEarly {
		c.mu.Unlock()
		go a.byeLate(d)
		return
	}
	if err != nil || answer.Port0 {
		c.d = d
		c.mu.Unlock()
		a.log.Info("sip answer without usable SDP", "call", c.id, "err", err)
		a.endWithBye(a.dispatchCtx, c, event.HangupIncompatibleMedia, true)
		return
	}
	c.state = callConfirmed
	c.d = d
	c.sdp.Media = answer.Media // what a re-INVITE must keep
	c.leg.SetRemoteVia(answer.Addr, sourceIP(res))
	others := make([]*branch, 0, len(c.branches))
	for _, o := range c.branches {
		if o != b {
			others = append(others, o)
		}
	}
	c.mu.Unlock()
	a.sessionTimerAnswer(c, res)
	a.storeDialog(c)
	for _, o := range others {
		go a.cancelBranch(a.dispatchCtx, o, event.HangupAnsweredElsewhere)
	}
	host, ok := a.callHost()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(a.dispatchCtx, dispatchTimeout)
	defer cancel()
	if err := host.CallEvent(ctx, &event.CallAnswer{Header: a.callHeader(c), Call: c.id, Answer: answer.Media}); err != nil {
		a.log.Info("sip answer not reported", "call", c.id, "err", err)
		if errors.Is(err, bridges.ErrUnknownCall) {
			a.endWithBye(a.dispatchCtx, c, event.HangupFailure, false)
		}
	}
}

// ack sends the ACK of a 2xx (RFC 3261 §13.2.2.4): a request of its own,
// in the dialog, with the INVITE's CSeq number.
func (a *Adapter) ack(d dialog) {
	_, _, client, _ := a.stack()
	req, err := a.newInDialog(d, sip.ACK)
	if err != nil || client == nil {
		a.log.Info("sip ACK not sent", "call_id", d.CallID, "err", err)
		return
	}
	if err := client.WriteRequest(req); err != nil {
		a.log.Info("sip ACK not sent", "call_id", d.CallID, "err", err)
	}
}

// byeLate ends the dialog of a 2xx that came after another branch won.
func (a *Adapter) byeLate(d dialog) {
	d.CSeq++
	ctx, cancel := context.WithTimeout(a.dispatchCtx, byeTimeout)
	defer cancel()
	if err := a.sendInDialog(ctx, d, sip.BYE, reasonHeader(event.HangupAnsweredElsewhere)); err != nil {
		a.log.Info("sip BYE of a late answer failed", "call_id", d.CallID, "err", err)
	}
}

// branchFailed records the final status of a branch. A 6xx is a global
// failure (RFC 3261 §16.7): the callee refused on one device for all of
// them, so the other branches are cancelled at once rather than left to
// ring.
func (a *Adapter) branchFailed(c *call, b *branch, status int) {
	c.mu.Lock()
	if b.status == 0 {
		b.status = status
	}
	global := status >= 600 && c.global == 0 && c.state == callEarly
	if global {
		c.global, c.state = status, callEnded
	}
	stop := c.stop
	c.mu.Unlock()
	if !global {
		return
	}
	// The other branches are cancelled (runBranch, as stop ends their
	// context) while the core hears the refusal now.
	if stop != nil {
		stop()
	}
	reason, _ := calls.FromSIPStatus(status)
	a.endCall(c)
	a.reportHangup(c, reason, sipReasonPhrase(status))
}

// branchesDone runs once every branch has its final response: when none
// answered, the leg failed with the best of their statuses (6xx first,
// then 486, then the first that is not a timeout).
func (a *Adapter) branchesDone(c *call) {
	c.mu.Lock()
	if c.state != callEarly {
		c.mu.Unlock()
		return
	}
	c.state = callEnded
	best := 0
	for _, b := range c.branches {
		switch s := b.status; {
		case s >= 600 && (best < 600):
			best = s
		case s == 486 && best < 600:
			best = s
		case best == 0 || (best == 408 && s != 0):
			best = s
		}
	}
	c.mu.Unlock()
	if c.stop != nil {
		c.stop()
	}
	reason, ok := calls.FromSIPStatus(best)
	if !ok {
		reason = event.HangupFailure
	}
	a.endCall(c)
	a.reportHangup(c, reason, sipReasonPhrase(best))
}

// cancelBranch cancels b's INVITE (RFC 3261 §9.1) with the Reason of
// reason, unless b has its final response. It reports whether the CANCEL
// went: before b's first provisional response it waits (runBranch sends it
// then) and cancelBranch returns false.
func (a *Adapter) cancelBranch(ctx context.Context, b *branch, reason event.HangupReason) bool {
	if b.tx == nil {
		return true
	}
	b.mu.Lock()
	switch {
	case b.status != 0 || b.cancelled:
		b.mu.Unlock()
		return true
	case !b.provisional:
		if b.cancelWith == 0 {
			b.cancelWith = reason
		}
		b.mu.Unlock()
		return false
	}
	b.cancelled = true
	b.mu.Unlock()
	a.sendCancel(ctx, b, reason)
	return true
}

// sendCancel sends the CANCEL of b's INVITE.
func (a *Adapter) sendCancel(ctx context.Context, b *branch, reason event.HangupReason) {
	_, _, client, _ := a.stack()
	if client == nil {
		return
	}
	inv := b.req
	req := sip.NewRequest(sip.CANCEL, inv.Recipient)
	if v := inv.Via(); v != nil {
		req.AppendHeader(v.Clone())
	}
	for _, h := range inv.GetHeaders("Route") {
		req.AppendHeader(sip.HeaderClone(h))
	}
	maxForwards := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxForwards)
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(inv.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	req.AppendHeader(reasonHeader(reason))
	req.SetTransport(inv.Transport())
	req.SetDestination(inv.Destination())
	ctx, cancel := context.WithTimeout(ctx, byeTimeout)
	defer cancel()
	// An option keeps sipgo from adding a Via of its own: a CANCEL has the
	// INVITE's.
	res, err := client.Do(ctx, req, func(*sipgo.Client, *sip.Request) error { return nil })
	if err == nil && res == nil {
		err = errors.New("no answer")
	}
	if err != nil {
		a.log.Info("sip CANCEL failed", "call_id", b.callID, "err", err)
		return
	}
	a.log.Debug("sip branch cancelled", "call_id", b.callID, "status", res.StatusCode)
}
