package sip

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/calls"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/media"
)

// Calls: Parley is a back-to-back user agent (RFC 3261 §6, B2BUA). Each SIP
// call is one leg of a call the routing core runs: an INVITE from a phone
// is a caller leg (the adapter is its UAS), an Invite from the core a callee
// leg (the adapter is its UAC, forking to every registered contact of the
// callee). The media of a leg is a plain RTP media.Leg from the port range
// WithCalls gave, described in SDP (media.ParseSDP, media.WriteSDP).

var _ bridges.CallNetwork = (*Adapter)(nil)

// rtpLeg is what the adapter needs of a leg's media: a media.Leg.
type rtpLeg interface {
	media.Endpoint
	Addr() netip.AddrPort
	SetRemote(rtp netip.AddrPort, latchAny bool)
	SetRemoteVia(rtp netip.AddrPort, signalling netip.Addr)
}

// Timers of calls.
const (
	// callTimeout bounds a callee leg that rings without a final answer,
	// and the host's Call.
	callTimeout = 3 * time.Minute
	// byeTimeout bounds a BYE or CANCEL transaction.
	byeTimeout = 10 * time.Second
	// stopCallsTimeout bounds the ending of live legs when Parley stops.
	stopCallsTimeout = 2 * time.Second
	// minSessionExpires is the smallest session interval Parley accepts
	// (RFC 4028 §5: Min-SE defaults to 90 s).
	minSessionExpires = 90
	// maxSessionExpires is the longest session interval Parley grants.
	maxSessionExpires = 86400
)

// callState is where a leg is in its life.
type callState int

const (
	callEarly     callState = iota // before the final response
	callAnswering                  // a 2xx sent (UAS), not yet ACKed
	callConfirmed                  // answered and ACKed
	callEnded
)

// call is one SIP leg.
type call struct {
	id       string // the leg's ID: its Call-ID (UAS), the core's CallInvite.Call (UAC)
	uas      bool
	leg      rtpLeg
	from, to string // the event addresses, for events and logs

	mu    sync.Mutex
	state callState
	d     dialog
	// byeAfterACK is the reason of a hangup that came before the ACK of
	// the leg's 2xx: the BYE waits for the ACK.
	byeAfterACK event.HangupReason
	// sdp is what Parley last offered or answered, for a re-INVITE's
	// answer and its version.
	sdp media.AudioSDP
	// updating is set while a change of codec is under way on the leg: a
	// re-INVITE of the party's waits for the other leg (onReinvite), or
	// Parley's re-INVITE for the other leg's change waits for the party
	// (Update). A re-INVITE that comes meanwhile gets 491.
	updating bool

	// UAS: the INVITE and its transaction.
	invite *sip.Request
	tx     sip.ServerTransaction
	// lateOffer is set when the INVITE came without SDP (RFC 3261
	// §13.2.1): Parley offers in the 2xx and the ACK brings the answer.
	lateOffer bool
	// pending is the 2xx of an INVITE of the leg (the first or a
	// re-INVITE) while it is not ACKed: it is sent again until it is.
	pending *pendingOK
	// final is closed once the INVITE has its final response (or the leg
	// ended): sipgo ends the transaction when its handler returns, so the
	// handler waits for it.
	final     chan struct{}
	finalOnce sync.Once

	// UAC: the branches of the fork while none answered, and what ends
	// them.
	branches []*branch
	stop     context.CancelFunc
	// global is the 6xx a branch answered, which ends the others.
	global int
	rang   bool // CallRinging reported

	// Session timer (RFC 4028): the dialog ends when it lapses.
	expires time.Duration
	lapse   *time.Timer
}

// pendingOK is a 2xx to an INVITE, sent again until its ACK comes (RFC
// 3261 §13.3.1.4). sipgo's server transaction leaves the retransmissions
// to the user agent (RFC 6026).
type pendingOK struct {
	tx   sip.ServerTransaction
	res  *sip.Response
	cseq uint32 // the INVITE's, which its ACK repeats
	// offer is set when the 2xx carries Parley's offer (the INVITE had no
	// SDP): the ACK must carry the answer.
	offer bool
	// first is set for the 2xx of the INVITE that made the dialog.
	first bool
	acked chan struct{} // closed when the ACK came or the leg ended
}

// local is the leg's party on Parley's side: the callee of a caller leg,
// the caller of a callee leg.
func (c *call) local() string {
	if c.uas {
		return c.to
	}
	return c.from
}

// ackedLocked stops the retransmissions of c's pending 2xx, if any, and
// returns it. c.mu is held.
func (c *call) ackedLocked() *pendingOK {
	p := c.pending
	if p != nil {
		c.pending = nil
		close(p.acked)
	}
	return p
}

// dialog is what a leg needs to send requests in its dialog, and what is
// kept in the links while the leg lives (see calls.go's crash clean-up).
type dialog struct {
	CallID    string   `json:"call_id"`
	LocalTag  string   `json:"local_tag"`
	RemoteTag string   `json:"remote_tag,omitempty"`
	LocalURI  string   `json:"local_uri"`  // From of our requests
	RemoteURI string   `json:"remote_uri"` // To of our requests
	Target    string   `json:"target"`     // the remote Contact
	Routes    []string `json:"routes,omitempty"`
	Transport string   `json:"transport"`
	Source    string   `json:"source,omitempty"` // where the remote sent from
	Flow      bool     `json:"flow,omitempty"`
	CSeq      uint32   `json:"cseq"`
	// Branch and InviteCSeq let a callee leg that was not answered be
	// cancelled after a restart.
	Branch     string `json:"branch,omitempty"`
	InviteCSeq uint32 `json:"invite_cseq,omitempty"`
	// Vias are the Via headers of a caller leg's INVITE, with InviteCSeq
	// what a final response to it needs, should Parley restart before
	// answering it.
	Vias     []string `json:"vias,omitempty"`
	Answered bool     `json:"answered,omitempty"`
}

// callTable holds the live legs.
type callTable struct {
	mu       sync.Mutex
	byID     map[string]*call
	byCallID map[string]*call // the Call-ID of each dialog or branch
}

func newCallTable() *callTable {
	return &callTable{byID: map[string]*call{}, byCallID: map[string]*call{}}
}

func (t *callTable) get(id string) *call {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

func (t *callTable) byDialog(callID string) *call {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byCallID[callID]
}

// add records c under its ID and Call-IDs; false when one is taken.
func (t *callTable) add(c *call, callIDs ...string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.byID[c.id]; ok {
		return false
	}
	for _, id := range callIDs {
		if _, ok := t.byCallID[id]; ok {
			return false
		}
	}
	t.byID[c.id] = c
	for _, id := range callIDs {
		t.byCallID[id] = c
	}
	return true
}

func (t *callTable) addCallID(c *call, callID string) {
	t.mu.Lock()
	t.byCallID[callID] = c
	t.mu.Unlock()
}

func (t *callTable) remove(c *call) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[c.id] == c {
		delete(t.byID, c.id)
	}
	for k, v := range t.byCallID {
		if v == c {
			delete(t.byCallID, k)
		}
	}
}

func (t *callTable) all() []*call {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*call, 0, len(t.byID))
	for _, c := range t.byID {
		out = append(out, c)
	}
	return out
}

// newSessionID returns a random SDP session ID (RFC 8866 §5.2 asks for an
// NTP-style number; any unique one will do).
func newSessionID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) >> 2
}

// callHost returns the host as a CallHost, and whether calls can be made at
// all (WithCalls gave a port range).
func (a *Adapter) callHost() (bridges.CallHost, bool) {
	host, _, _, _ := a.stack()
	ch, ok := host.(bridges.CallHost)
	return ch, ok && a.newLeg != nil
}

// onInvite handles an INVITE. An INVITE in a dialog (To has a tag) is a
// re-INVITE (see onReinvite). A new INVITE is checked as every request
// (400, 416) and, like a MESSAGE, its sender authenticated: a user of the
// domain by digest, a trusted peer by address or credentials (407, 403).
// An INVITE to an address outside the domain from anyone not authenticated
// is refused with 403 at once, without a challenge: Parley is no open
// relay for calls (toll fraud). A body other than SDP is 415; an INVITE
// with SDP Parley cannot read is 400 with a Warning that says why; an offer
// without an audio codec Parley can forward is 488.
// Otherwise the INVITE is answered 100 and handed to the core; the final
// response comes from Signal.
//
// An INVITE without a body is a late offer (RFC 3261 §13.2.1, RFC 3264):
// Parley offers the core, on the caller's behalf, every codec it forwards
// (lateOfferMedia), its leg latching to whoever sends first; the 2xx then
// offers the caller the codecs of the core's answer, and the ACK must
// answer (see onAck).
func (a *Adapter) onInvite(req *sip.Request, src netip.Addr, p *peer, tx sip.ServerTransaction) *reply {
	in, r := checkRequest(req)
	if r != nil {
		return r
	}
	if len(req.Body()) > 0 {
		ct := ""
		if h := req.ContentType(); h != nil {
			ct = h.Value()
		}
		if mt, _, err := parseMediaType(ct); err != nil || mt != sdpType {
			return newReply(415, "Unsupported Media Type", sip.NewHeader("Accept", sdpType))
		}
	}
	if !acceptsSDP(req) {
		return newReply(406, "Not Acceptable",
			sip.NewHeader("Accept", sdpType),
			sip.NewHeader("Warning", `399 `+a.domain+` "Only application/sdp can answer an INVITE"`))
	}
	if to := req.To(); to != nil && to.Params.Has("tag") {
		return a.onReinvite(req, tx)
	}
	in.source, in.peer = src, p
	callee, own := a.callee(req)
	if callee == "" {
		return newReply(404, "Not Found")
	}
	if trusted := p != nil && p.allows(in.fromHost, a.domain); !own && !trusted {
		if _, ok := a.credentials(req, "Proxy-Authorization", "Authorization"); !ok {
			a.log.Info("sip call to another domain refused", "from", in.from, "to", callee, "source", req.Source())
			return newReply(403, "Forbidden (Calls To Other Domains Need Authentication)")
		}
	}
	if r := a.authorizeSender(req, &in, a.now()); r != nil {
		return r
	}
	if p == nil && in.peer == nil && src.IsValid() {
		if ok, wait := a.inviteLimiter.Allow(src, a.now()); !ok {
			secs := strconv.Itoa(max(1, int(wait.Seconds()+0.999)))
			return newReply(503, "Too Many Calls", sip.NewHeader("Retry-After", secs))
		}
	}
	host, ok := a.callHost()
	if !ok {
		a.noCalls.Do(func() {
			a.log.Warn("sip calls refused: no media port range (no calls section)")
		})
		return newReply(503, "Service Unavailable (Calls Not Configured)")
	}
	late := len(req.Body()) == 0
	offer := media.AudioSDP{Media: lateOfferMedia()} // no address: the leg latches to anyone
	if !late {
		var err error
		offer, err = media.ParseSDP(req.Body())
		if errors.Is(err, media.ErrNoAudio) {
			return newReply(488, "Not Acceptable Here", warning(a.domain, err.Error()))
		}
		if err != nil {
			return newReply(400, "Bad Request (Malformed SDP)", warning(a.domain, err.Error()))
		}
		if offer.Port0 {
			return newReply(488, "Not Acceptable Here", warning(a.domain, "the audio stream is disabled (port 0)"))
		}
		if _, ok := media.AnswerCodecs(offer.Media, media.Forwardable); !ok {
			return newReply(488, "Not Acceptable Here", warning(a.domain, "no offered audio codec can be forwarded (Parley forwards opus, G722, PCMU, PCMA)"))
		}
	}
	contact := req.Contact()
	if contact == nil {
		return newReply(400, "Missing Contact")
	}

	leg, err := a.newLeg()
	if err != nil {
		a.log.Warn("sip call refused: no media port", "err", err)
		return newReply(503, "Service Unavailable (No Media Port)", sip.NewHeader("Retry-After", "10"))
	}
	leg.SetRemoteVia(offer.Addr, sourceIP(req))
	c := &call{
		id: strings.Clone(in.callID), uas: true, leg: leg,
		from: in.from, to: callee,
		invite: req, tx: tx, lateOffer: late, final: make(chan struct{}),
		sdp: media.AudioSDP{SessionID: newSessionID(), Direction: offer.Direction.Reverse()},
	}
	c.d = dialog{
		CallID: c.id, LocalTag: sip.GenerateTagN(16), RemoteTag: fromTag(req),
		LocalURI: req.To().Address.String(), RemoteURI: req.From().Address.String(),
		Target: contact.Address.String(), Routes: recordRoutes(req, false),
		Transport: sip.NetworkToUpper(req.Transport()), Source: req.Source(),
		CSeq: 0, InviteCSeq: in.cseq,
	}
	for _, v := range req.GetHeaders("Via") {
		c.d.Vias = append(c.d.Vias, v.Value())
	}
	c.d.Flow = reachByFlow(flowInputOf(req, contact)) != flowNone
	if !a.calls.add(c, c.id) {
		_ = leg.Close()
		return newReply(482, "Loop Detected")
	}
	a.sessionTimer(c, req)
	a.respondCall(c, 100, "Trying", nil)
	if !tx.OnCancel(func(*sip.Request) { go a.cancelled(c) }) {
		a.calls.remove(c)
		_ = leg.Close()
		return nil // cancelled already; sipgo answered 487
	}
	a.storeDialog(c)

	ctx, cancel := context.WithTimeout(a.dispatchCtx, callTimeout)
	defer cancel()
	inv := &event.CallInvite{
		Header: event.Header{
			ID:       in.from + "/" + in.callID + "/" + strconv.FormatUint(uint64(in.cseq), 10),
			From:     event.Address{Network: event.SIP, ID: in.from},
			To:       event.Address{Network: event.SIP, ID: callee},
			FromName: in.fromName,
			Time:     a.now(),
		},
		Call:  c.id,
		Offer: offer.Media,
	}
	if err := host.Call(ctx, inv, leg); err != nil {
		a.log.Info("sip call not accepted", "call", c.id, "from", in.from, "to", callee, "err", err)
		code, reason := callErrorStatus(err)
		c.mu.Lock()
		if c.state == callEarly {
			c.state = callEnded
			a.respondCallLocked(c, code, reason, nil)
		}
		c.mu.Unlock()
		a.endCall(c)
		return nil
	}
	a.log.Debug("sip call accepted", "call", c.id, "from", in.from, "to", callee)
	// A CANCEL that came while the core took the call found no call to
	// report to: report it now, or the callees would ring for no one.
	c.mu.Lock()
	gone := c.state == callEnded
	c.mu.Unlock()
	if gone {
		a.reportHangup(c, event.HangupCancelled, "")
	}
	select {
	case <-c.final:
	case <-tx.Done():
	}
	return nil
}

// Payload types of a late offer: the static ones of RFC 3551 and the
// dynamic ones most phones use.
var lateOfferTypes = map[string]uint8{
	"pcmu/8000": 0, "pcma/8000": 8, "g722/8000": 9,
	"opus/48000": 111, "telephone-event/8000": 101, "telephone-event/48000": 110,
}

// lateOfferMedia is what Parley offers the core for a caller who made no
// offer: every codec it forwards (media.Forwardable), numbered as phones
// usually number them.
func lateOfferMedia() event.Media {
	var m event.Media
	used := map[uint8]bool{}
	next := uint8(96)
	for _, c := range media.Forwardable {
		pt, ok := lateOfferTypes[strings.ToLower(c.Name)+"/"+strconv.FormatUint(uint64(c.ClockRate), 10)]
		if !ok || used[pt] {
			for used[next] {
				next++
			}
			pt = next
		}
		used[pt] = true
		c.PayloadType = pt
		switch {
		case c.IsDTMF():
			c.FMTP = "0-16"
		case strings.EqualFold(c.Name, "opus"):
			c.FMTP = "minptime=10;useinbandfec=1"
		}
		m.Codecs = append(m.Codecs, c)
	}
	return m
}

// finish marks the INVITE of a caller leg answered with a final response.
func (c *call) finish() {
	if c.final != nil {
		c.finalOnce.Do(func() { close(c.final) })
	}
}

// callErrorStatus translates the error of CallHost.Call.
func callErrorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, bridges.ErrNoRoute):
		return 404, "Not Found"
	case errors.Is(err, bridges.ErrRefused):
		return 403, "Forbidden"
	case errors.Is(err, bridges.ErrCallLimit):
		return 486, "Busy Here (Call Limit Reached)"
	}
	return 503, "Service Unavailable"
}

// callee returns the canonical AOR an INVITE calls: the Request-URI, or the
// To header when the Request-URI names no user (a proxy may have rewritten
// it), and whether it is in the adapter's domain.
func (a *Adapter) callee(req *sip.Request) (string, bool) {
	for _, u := range []*sip.Uri{&req.Recipient, &req.To().Address} {
		if u.User == "" {
			continue
		}
		aor, _, err := aorOf(u)
		if err != nil {
			return "", false
		}
		h, err := canonicalHost(u.Host)
		return aor, err == nil && h == a.domain
	}
	return "", false
}

func warning(domain, text string) sip.Header {
	return sip.NewHeader("Warning", `399 `+domain+` "`+strings.NewReplacer(`"`, `'`, `\`, `/`, "\r", " ", "\n", " ").Replace(text)+`"`)
}

func fromTag(req *sip.Request) string {
	if f := req.From(); f != nil {
		if t, ok := f.Params.Get("tag"); ok {
			return strings.Clone(t)
		}
	}
	return ""
}

func toTagOf(m interface{ To() *sip.ToHeader }) string {
	if t := m.To(); t != nil && t.Params != nil {
		if v, ok := t.Params.Get("tag"); ok {
			return strings.Clone(v)
		}
	}
	return ""
}

// recordRoutes returns the route set of a dialog from m's Record-Route
// headers: in order for the UAS, reversed for the UAC (RFC 3261 §12.1).
func recordRoutes(m interface{ Headers() []sip.Header }, reverse bool) []string {
	var out []string
	for _, h := range m.Headers() {
		if !isHeader(h, "Record-Route") {
			continue
		}
		if rr, ok := h.(*sip.RecordRouteHeader); ok {
			out = append(out, rr.Address.String())
		}
	}
	if reverse {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out
}

// respondCall sends a response to the INVITE of the caller leg c.
func (a *Adapter) respondCall(c *call, code int, reason string, body []byte, headers ...sip.Header) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a.respondCallLocked(c, code, reason, body, headers...)
}

func (a *Adapter) respondCallLocked(c *call, code int, reason string, body []byte, headers ...sip.Header) *sip.Response {
	res := sip.NewResponseFromRequest(c.invite, code, reason, body)
	res.AppendHeader(a.serverHeader)
	if to := res.To(); code > 100 && to != nil {
		if to.Params == nil {
			to.Params = sip.NewParams()
		}
		to.Params.Add("tag", c.d.LocalTag) // the same in every response (RFC 3261 §8.2.6.2)
	}
	if code > 100 && code < 300 {
		res.AppendHeader(&sip.ContactHeader{Address: a.localContact(c.d.Transport, c.to)})
	}
	if body != nil {
		res.AppendHeader(sip.NewHeader("Content-Type", sdpType))
	}
	for _, h := range headers {
		res.AppendHeader(h)
	}
	if err := c.tx.Respond(res); err != nil {
		a.log.Debug("sip call response failed", "call", c.id, "status", code, "err", err)
	}
	if code >= 200 {
		c.finish()
	}
	return res
}

// Signal implements bridges.CallNetwork.
func (a *Adapter) Signal(ctx context.Context, evt event.Event) error {
	id, ok := event.CallOf(evt)
	if !ok || evt.Kind() == event.KindCallInvite || evt.Kind() == event.KindCallUpdate {
		return bridges.Permanent(fmt.Errorf("signal SIP call: %T is not a call progress event", evt))
	}
	c := a.calls.get(id)
	if c == nil {
		return fmt.Errorf("signal SIP call %s: %w", id, bridges.ErrUnknownCall)
	}
	switch e := evt.(type) {
	case *event.CallRinging:
		return a.ringing(c, e)
	case *event.CallAnswer:
		return a.answer(c, e)
	case *event.CallHangup:
		return a.hangup(ctx, c, e.Reason)
	}
	return nil
}

// ringing sends 180, or 183 with SDP for early media, to a caller leg.
func (a *Adapter) ringing(c *call, e *event.CallRinging) error {
	if !c.uas {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != callEarly {
		return nil
	}
	// Early media would be Parley's offer when the INVITE had none, and an
	// offer in a provisional response must be sent reliably (RFC 3262,
	// 100rel), which Parley does not do: such a caller hears ringing.
	if e.EarlyMedia && !c.lateOffer {
		a.respondCallLocked(c, 183, "Session Progress", a.ourSDP(c, e.Media))
		return nil
	}
	a.respondCallLocked(c, 180, "Ringing", nil)
	return nil
}

// ourSDP returns Parley's SDP for c with codecs m, a new version of it.
// c.mu is held.
func (a *Adapter) ourSDP(c *call, m event.Media) []byte {
	c.sdp.Addr = c.leg.Addr()
	if len(m.Codecs) > 0 {
		c.sdp.Media = m
	}
	c.sdp.Version++
	return media.WriteSDP(c.sdp)
}

// answer sends the 2xx with SDP to a caller leg and retransmits it until
// the ACK comes (retransmitOK). The SDP is the answer to the caller's
// offer, or, for a late offer, Parley's offer of the answer's codecs.
func (a *Adapter) answer(c *call, e *event.CallAnswer) error {
	if !c.uas {
		return nil
	}
	if err := e.Answer.Validate(); err != nil {
		return bridges.Permanent(fmt.Errorf("answer SIP call %s: %w", c.id, err))
	}
	c.mu.Lock()
	if c.state != callEarly {
		c.mu.Unlock()
		return nil
	}
	c.state = callAnswering
	c.d.Answered = true
	var headers []sip.Header
	if c.expires > 0 {
		headers = append(headers, sip.NewHeader("Session-Expires", strconv.Itoa(int(c.expires/time.Second))+";refresher=uac"),
			sip.NewHeader("Require", "timer"))
	}
	res := a.respondCallLocked(c, 200, "OK", a.ourSDP(c, e.Answer), headers...)
	p := a.pendingLocked(c, c.tx, res, c.invite, c.lateOffer)
	p.first = true
	a.armLapseLocked(c)
	c.mu.Unlock()
	a.storeDialog(c)
	go a.retransmitOK(c, p)
	return nil
}

// pendingLocked makes res, the 2xx to req sent in tx, c's pending 2xx; offer
// says whether it carries Parley's offer. c.mu is held.
func (a *Adapter) pendingLocked(c *call, tx sip.ServerTransaction, res *sip.Response, req *sip.Request, offer bool) *pendingOK {
	p := &pendingOK{tx: tx, res: res, offer: offer, acked: make(chan struct{})}
	if cs := req.CSeq(); cs != nil {
		p.cseq = cs.SeqNo
	}
	c.pending = p
	return p
}

// retransmitOK sends p, a 2xx of c, again until its ACK comes (RFC 3261
// §13.3.1.4: after T1, doubling up to T2, for 64·T1); without an ACK by
// then the leg ends with a BYE (§14.2 for a re-INVITE).
func (a *Adapter) retransmitOK(c *call, p *pendingOK) {
	interval := sip.T1
	deadline := time.NewTimer(64 * sip.T1)
	defer deadline.Stop()
	for {
		t := time.NewTimer(interval)
		select {
		case <-p.acked:
			t.Stop()
			return
		case <-deadline.C:
			t.Stop()
			c.mu.Lock()
			current := c.pending == p
			c.mu.Unlock()
			if !current {
				return
			}
			a.log.Info("sip call not acknowledged; ending it", "call", c.id, "cseq", p.cseq)
			a.endWithBye(a.dispatchCtx, c, event.HangupFailure, true)
			return
		case <-t.C:
		}
		c.mu.Lock()
		if c.pending != p || c.state == callEnded {
			c.mu.Unlock()
			return
		}
		if err := p.tx.Respond(p.res); err != nil {
			a.log.Debug("sip 2xx retransmission failed", "call", c.id, "err", err)
		}
		c.mu.Unlock()
		interval = min(2*interval, sip.T2)
	}
}

// hangup ends a leg for reason: a final response to a caller leg not yet
// answered (calls.For(reason).SIPStatus, 487 when cancelled), a CANCEL of
// a callee leg not yet answered, a BYE with a Reason header (RFC 3326)
// otherwise.
func (a *Adapter) hangup(ctx context.Context, c *call, reason event.HangupReason) error {
	c.mu.Lock()
	switch {
	case c.state == callEnded:
		c.mu.Unlock()
		return nil
	case c.uas && c.state == callEarly:
		c.state = callEnded
		code := calls.For(reason).SIPStatus
		if code == 0 {
			code = 480
		}
		a.respondCallLocked(c, code, sipReasonPhrase(code), nil, reasonHeader(reason))
		c.mu.Unlock()
		a.endCall(c)
		return nil
	case !c.uas && c.state == callEarly:
		c.state = callEnded
		branches := c.branches
		c.mu.Unlock()
		var wg sync.WaitGroup
		for _, b := range branches {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.cancelBranch(ctx, b, reason)
			}()
		}
		wg.Wait()
		if c.stop != nil {
			c.stop()
		}
		a.endCall(c)
		return nil
	}
	if c.uas && c.state == callAnswering {
		// No BYE before the ACK of the 2xx (RFC 3261 §15): it goes when
		// the ACK comes (onAck), or when the 2xx times out unacknowledged.
		c.byeAfterACK = reason
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	a.endWithBye(ctx, c, reason, false)
	return nil
}

// sipReasonPhrase returns the usual reason phrase of a final status.
func sipReasonPhrase(code int) string {
	switch code {
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 480:
		return "Temporarily Unavailable"
	case 486:
		return "Busy Here"
	case 487:
		return "Request Terminated"
	case 488:
		return "Not Acceptable Here"
	case 500:
		return "Server Internal Error"
	case 603:
		return "Decline"
	}
	return "Call Ended"
}

// reasonHeader is the Reason header (RFC 3326) of a hangup.
func reasonHeader(r event.HangupReason) sip.Header {
	m := calls.For(r)
	return sip.NewHeader("Reason", fmt.Sprintf(`%s;cause=%d;text="%s"`, m.SIPReasonProtocol, m.SIPReasonCause, m.SIPReasonText))
}

// parseReason returns the hangup reason of a request's Reason headers, if
// one is known (calls.FromSIPReason).
func parseReason(req *sip.Request) (event.HangupReason, bool) {
	for _, h := range req.Headers() {
		if !isHeader(h, "Reason") {
			continue
		}
		for _, v := range strings.Split(h.Value(), ",") {
			proto, params, _ := strings.Cut(v, ";")
			for _, p := range strings.Split(params, ";") {
				k, val, _ := strings.Cut(p, "=")
				if !strings.EqualFold(strings.TrimSpace(k), "cause") {
					continue
				}
				n, err := strconv.Atoi(strings.TrimSpace(val))
				if err != nil {
					continue
				}
				if r, ok := calls.FromSIPReason(strings.TrimSpace(proto), n); ok {
					return r, true
				}
			}
		}
	}
	return 0, false
}

// cancelled reports a CANCELled caller leg to the core; sipgo has
// answered the CANCEL with 200 and the INVITE with 487.
func (a *Adapter) cancelled(c *call) {
	c.mu.Lock()
	if c.state != callEarly {
		c.mu.Unlock()
		return
	}
	c.state = callEnded
	c.mu.Unlock()
	a.endCall(c)
	a.reportHangup(c, event.HangupCancelled, "")
}

// reportHangup tells the core that leg c ended.
func (a *Adapter) reportHangup(c *call, reason event.HangupReason, text string) {
	host, ok := a.callHost()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(a.dispatchCtx, dispatchTimeout)
	defer cancel()
	err := host.CallEvent(ctx, &event.CallHangup{
		Header: a.callHeader(c), Call: c.id, Reason: reason, Text: text,
	})
	if err != nil && !errors.Is(err, bridges.ErrUnknownCall) {
		a.log.Info("sip call hangup not reported", "call", c.id, "err", err)
	}
}

func (a *Adapter) callHeader(c *call) event.Header {
	return event.Header{
		From: event.Address{Network: event.SIP, ID: c.from},
		To:   event.Address{Network: event.SIP, ID: c.to},
		Time: a.now(),
	}
}

// endCall forgets c: out of the table, the links and its timers. Its media
// endpoint belongs to the core.
func (a *Adapter) endCall(c *call) {
	a.calls.remove(c)
	c.finish()
	c.mu.Lock()
	c.state = callEnded
	c.ackedLocked()
	if c.lapse != nil {
		c.lapse.Stop()
	}
	c.mu.Unlock()
	a.deleteDialog(c)
}

// endWithBye sends a BYE in c's dialog, with the Reason of reason, and ends
// c; report says whether the core must be told (the leg ended on
// Parley's side, not by the core's Signal).
func (a *Adapter) endWithBye(ctx context.Context, c *call, reason event.HangupReason, report bool) {
	a.endWithByeText(ctx, c, reason, report, "")
}

// endWithByeText is endWithBye with text, the why of the hangup for the
// core (CallHangup.Text).
func (a *Adapter) endWithByeText(ctx context.Context, c *call, reason event.HangupReason, report bool, text string) {
	c.mu.Lock()
	if c.state == callEnded {
		c.mu.Unlock()
		return
	}
	c.state = callEnded
	c.d.CSeq++
	d := c.d
	c.mu.Unlock()
	a.endCall(c)
	if report {
		a.reportHangup(c, reason, text)
	}
	ctx, cancel := context.WithTimeout(ctx, byeTimeout)
	defer cancel()
	if err := a.sendInDialog(ctx, d, sip.BYE, reasonHeader(reason)); err != nil {
		a.log.Info("sip BYE failed", "call", c.id, "err", err)
	}
}

// newInDialog builds a request of method in dialog d, with d.CSeq.
func (a *Adapter) newInDialog(d dialog, method sip.RequestMethod, headers ...sip.Header) (*sip.Request, error) {
	var target, local, remote sip.Uri
	if err := sip.ParseUri(d.Target, &target); err != nil {
		return nil, fmt.Errorf("remote target %q: %w", d.Target, err)
	}
	if err := sip.ParseUri(d.LocalURI, &local); err != nil {
		return nil, fmt.Errorf("local URI %q: %w", d.LocalURI, err)
	}
	if err := sip.ParseUri(d.RemoteURI, &remote); err != nil {
		return nil, fmt.Errorf("remote URI %q: %w", d.RemoteURI, err)
	}
	ruri := target
	routes := d.Routes
	if len(routes) > 0 {
		var first sip.Uri
		if err := sip.ParseUri(routes[0], &first); err == nil && !first.UriParams.Has("lr") {
			// A strict router (RFC 3261 §12.2.1.1).
			ruri = first
			routes = append(append([]string{}, routes[1:]...), d.Target)
		}
	}
	req := sip.NewRequest(method, ruri)
	for _, r := range routes {
		var u sip.Uri
		if err := sip.ParseUri(r, &u); err == nil {
			req.AppendHeader(&sip.RouteHeader{Address: u})
		}
	}
	from := &sip.FromHeader{Address: local, Params: sip.NewParams()}
	from.Params.Add("tag", d.LocalTag)
	req.AppendHeader(from)
	to := &sip.ToHeader{Address: remote, Params: sip.NewParams()}
	if d.RemoteTag != "" {
		to.Params.Add("tag", d.RemoteTag)
	}
	req.AppendHeader(to)
	callID := sip.CallIDHeader(d.CallID)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: d.CSeq, MethodName: method})
	maxForwards := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxForwards)
	req.AppendHeader(a.userAgentHeader)
	for _, h := range headers {
		req.AppendHeader(h)
	}
	if d.Transport != "" {
		req.SetTransport(d.Transport)
	}
	if len(d.Routes) == 0 && d.Flow && d.Source != "" {
		req.SetDestination(d.Source)
	}
	return req, nil
}

// sendInDialog sends a request of method in d and waits for its final
// response; a response other than 2xx (or 481: the dialog is gone
// already) is an error.
func (a *Adapter) sendInDialog(ctx context.Context, d dialog, method sip.RequestMethod, headers ...sip.Header) error {
	_, _, client, _ := a.stack()
	if client == nil {
		return errNotStarted
	}
	req, err := a.newInDialog(d, method, headers...)
	if err != nil {
		return err
	}
	res, err := client.Do(ctx, req)
	if err != nil {
		return err
	}
	if res == nil { // the transaction ended without an answer (Parley stops)
		return fmt.Errorf("%s: no answer", method)
	}
	if res.StatusCode >= 300 && res.StatusCode != 481 {
		return fmt.Errorf("%s answered %d %s", method, res.StatusCode, res.Reason)
	}
	return nil
}

// onAck handles an ACK: the ACK of a leg's pending 2xx (its CSeq is the
// INVITE's) ends the 2xx's retransmissions and confirms the dialog. When the
// 2xx carried Parley's offer, the ACK carries the answer (RFC 3264): for a
// late offer, an ACK without one, or with one Parley cannot take, ends the
// call (a BYE; the core hears of incompatible media); for a re-INVITE
// without SDP, a usable answer moves the leg's remote address and anything
// else leaves the leg as it was. ACKs of other responses are absorbed by
// their transactions.
func (a *Adapter) onAck(req *sip.Request, _ sip.ServerTransaction) {
	callID, cseq := req.CallID(), req.CSeq()
	if callID == nil || cseq == nil {
		return
	}
	c := a.calls.byDialog(callID.Value())
	if c == nil {
		return
	}
	c.mu.Lock()
	p := c.pending
	if p == nil || cseq.SeqNo != p.cseq || toTagOf(req) != c.d.LocalTag || fromTag(req) != c.d.RemoteTag {
		c.mu.Unlock()
		return
	}
	c.ackedLocked()
	if c.state == callAnswering {
		c.state = callConfirmed
	}
	var bad string
	if p.offer {
		bad = a.takeAnswerLocked(c, req)
	}
	bye := c.byeAfterACK
	c.mu.Unlock()
	switch {
	case bye != 0:
		go a.endWithBye(a.dispatchCtx, c, bye, false)
	case bad == "":
	case p.first:
		a.log.Info("sip call ended: the ACK does not answer Parley's offer", "call", c.id, "why", bad)
		go a.endWithByeText(a.dispatchCtx, c, event.HangupIncompatibleMedia, true, bad)
	default:
		a.log.Info("sip re-INVITE: the ACK's answer is not taken", "call", c.id, "why", bad)
	}
}

// takeAnswerLocked takes the answer in req, an ACK, to the offer Parley
// made in a 2xx: the leg sends to its address from now on, and c.sdp keeps
// the offered codecs the answer accepts. It returns why the answer cannot
// be taken, or "". c.mu is held.
func (a *Adapter) takeAnswerLocked(c *call, req *sip.Request) string {
	if len(req.Body()) == 0 {
		return "the ACK has no SDP answer"
	}
	if h := req.ContentType(); h != nil {
		if mt, _, err := parseMediaType(h.Value()); err != nil || mt != sdpType {
			return "the ACK's body is " + h.Value() + ", not SDP"
		}
	}
	ans, err := media.ParseSDP(req.Body())
	if err != nil {
		return err.Error()
	}
	if ans.Port0 {
		return "the answer refuses the audio stream (port 0)"
	}
	kept := acceptedCodecs(c.sdp.Media, ans.Media)
	if kept.Validate() != nil {
		return "the answer has none of the offered audio codecs"
	}
	c.leg.SetRemoteVia(ans.Addr, sourceIP(req))
	c.sdp.Media = kept
	return ""
}

// onBye handles a BYE: 200, and the leg ends for the reason its Reason
// header gives (normal when none). A BYE outside any leg is 481.
func (a *Adapter) onBye(req *sip.Request, _ netip.Addr, _ *peer) *reply {
	if r := checkHeaders(req); r != nil {
		return r
	}
	c := a.calls.byDialog(req.CallID().Value())
	if c == nil {
		return newReply(481, "Call/Transaction Does Not Exist")
	}
	c.mu.Lock()
	if c.state == callEnded || fromTag(req) != c.d.RemoteTag || toTagOf(req) != c.d.LocalTag {
		c.mu.Unlock()
		return newReply(481, "Call/Transaction Does Not Exist")
	}
	if c.uas && c.state == callEarly {
		// A BYE in the early dialog (RFC 3261 §15): the INVITE still
		// pending gets its final answer.
		a.respondCallLocked(c, 487, "Request Terminated", nil)
	}
	c.state = callEnded
	c.ackedLocked() // a BYE before the ACK ends the retransmissions
	c.mu.Unlock()
	reason, ok := parseReason(req)
	if !ok {
		reason = event.HangupNormal
	}
	a.endCall(c)
	go a.reportHangup(c, reason, "")
	a.log.Debug("sip call ended by BYE", "call", c.id, "reason", reason.String())
	return newReply(200, "OK")
}

// parseMediaType returns the lowercase media type of a Content-Type.
func parseMediaType(ct string) (string, string, error) {
	mt, params, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	if mt == "" || !strings.Contains(mt, "/") {
		return "", "", errors.New("no media type")
	}
	return mt, params, nil
}

// endAllCalls ends every live leg as Parley stops: a caller leg not yet
// answered gets 503, a callee leg ringing a CANCEL, an answered one a BYE;
// the core hears of each.
func (a *Adapter) endAllCalls(ctx context.Context) {
	// The BYEs and CANCELs are sent; their answers matter little now.
	ctx, cancel := context.WithTimeout(ctx, stopCallsTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range a.calls.all() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.mu.Lock()
			early := c.uas && c.state == callEarly
			if early {
				c.state = callEnded
				a.respondCallLocked(c, 503, "Service Unavailable", nil, sip.NewHeader("Retry-After", "10"))
			}
			c.mu.Unlock()
			if early {
				a.endCall(c)
				a.reportHangup(c, event.HangupFailure, "")
				return
			}
			_ = a.hangup(ctx, c, event.HangupFailure)
			a.reportHangup(c, event.HangupFailure, "")
		}()
	}
	wg.Wait()
}
