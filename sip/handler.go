package sip

import (
	"errors"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// What the adapter answers with in Allow and Accept headers.
const (
	allowMethods = "REGISTER, MESSAGE, OPTIONS, SUBSCRIBE, PUBLISH, INVITE, ACK, CANCEL, BYE"
	acceptTypes  = "text/plain, message/cpim"
	// allowEvents are the event packages SUBSCRIBE accepts (RFC 6665).
	allowEvents = "presence"
)

// reply is the final response the adapter gives to a request.
type reply struct {
	code    int
	reason  string
	headers []sip.Header
	// toTag, when set, is added to the To header of the response: the
	// adapter's tag of the dialog the request creates.
	toTag string
	// after, when set, runs once the response is sent, in the handler's
	// goroutine (the NOTIFY that must follow a SUBSCRIBE's 200).
	after func()
}

func newReply(code int, reason string, headers ...sip.Header) *reply {
	return &reply{code: code, reason: reason, headers: headers}
}

// request is what the checks common to every handled request learn of it.
type request struct {
	// from is the canonical AOR of the From header, fromUser its user
	// part (unescaped) and fromHost its host.
	from, fromUser, fromHost string
	// fromName is the display name of From, unquoted.
	fromName string
	callID   string
	cseq     uint32
	// source is the IP address the request came from (invalid when
	// unknown) and peer the trusted peer it belongs to, if any.
	source netip.Addr
	peer   *peer
}

// handle wraps a request handler: it admits the request (503 while the
// adapter stops), rate-limits its source (503 with Retry-After) unless it is
// a trusted peer's, checks its syntax (see checkSyntax), answers 420 to
// requests that require extensions, and sends the handler's reply.
func (a *Adapter) handle(h func(req *sip.Request, src netip.Addr, p *peer) *reply) sipgo.RequestHandler {
	return a.handleTx(func(req *sip.Request, src netip.Addr, p *peer, _ sip.ServerTransaction) *reply { return h(req, src, p) })
}

// handleTx is handle for a handler that needs the server transaction (an
// INVITE, answered later); it may return nil when it responds itself.
func (a *Adapter) handleTx(h func(req *sip.Request, src netip.Addr, p *peer, tx sip.ServerTransaction) *reply) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if req.IsAck() {
			return
		}
		if a.resend(req, tx) {
			return
		}
		if !a.enter() {
			a.respond(req, tx, newReply(503, "Service Unavailable", sip.NewHeader("Retry-After", "5")))
			return
		}
		defer a.inflight.Done()
		src := sourceIP(req)
		p := a.peerByAddr(src)
		if p == nil && src.IsValid() {
			if ok, wait := a.limiter.Allow(src, a.now()); !ok {
				a.log.Debug("sip request rate limited", "method", string(req.Method), "source", req.Source())
				secs := strconv.Itoa(max(1, int(math.Ceil(wait.Seconds()))))
				a.respond(req, tx, newReply(503, "Rate Limit Exceeded", sip.NewHeader("Retry-After", secs)))
				return
			}
		}
		if r := a.checkSyntax(req); r != nil {
			a.respond(req, tx, r)
			return
		}
		if r := unsupportedExtensions(req); r != nil {
			a.respond(req, tx, r)
			return
		}
		a.respond(req, tx, h(req, src, p, tx))
	}
}

// respond sends r as the final response to req. Over UDP, the transaction
// then ends, and r is kept to answer retransmissions (see answers).
func (a *Adapter) respond(req *sip.Request, tx sip.ServerTransaction, r *reply) {
	if r == nil {
		return
	}
	key := txKey(req, tx)
	if to := req.To(); key != "" && r.toTag == "" && to != nil && !to.Params.Has("tag") {
		r.toTag = a.answers.tag(key)
	}
	res := sip.NewResponseFromRequest(req, r.code, r.reason, nil)
	res.SipVersion = "SIP/2.0" // also to a request of another version (505)
	res.AppendHeader(a.serverHeader)
	for _, h := range r.headers {
		res.AppendHeader(h)
	}
	if to := res.To(); r.toTag != "" && to != nil {
		if to.Params == nil {
			to.Params = sip.NewParams()
		}
		to.Params.Add("tag", r.toTag)
	}
	err := tx.Respond(res)
	if errors.Is(err, sip.ErrUDPMTUCongestion) {
		err = a.writeLarge(req, res)
	}
	if err != nil {
		a.log.Debug("sip respond failed", "method", string(req.Method), "status", r.code, "source", req.Source(), "err", err)
	}
	// Debug only: a remote party decides how many requests there are.
	a.log.Debug("sip request answered", "method", string(req.Method), "status", r.code, "reason", r.reason, "source", req.Source())
	if key != "" {
		if r.code != 401 && r.code != 407 {
			a.answers.put(key, r, a.now())
		}
		tx.Terminate()
	}
	if r.after != nil {
		r.after()
	}
}

// sourceIP returns the IP address a request or response came from, or the
// invalid address.
func sourceIP(m interface{ Source() string }) netip.Addr {
	host, _, err := net.SplitHostPort(m.Source())
	if err != nil {
		return netip.Addr{}
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

// peerByAddr returns the trusted peer whose addresses hold ip, or nil.
func (a *Adapter) peerByAddr(ip netip.Addr) *peer {
	if !ip.IsValid() {
		return nil
	}
	for _, p := range a.peers {
		for _, pr := range p.prefixes {
			if pr.Contains(ip) {
				return p
			}
		}
	}
	return nil
}

// unsupportedExtensions answers 420 when req requires an extension: the
// adapter supports none (RFC 3261 §8.2.2.3).
func unsupportedExtensions(req *sip.Request) *reply {
	if req.Method == sip.CANCEL {
		return nil
	}
	var tags []string
	for _, h := range req.Headers() {
		if !isHeader(h, "Require") {
			continue
		}
		for _, t := range strings.Split(h.Value(), ",") {
			t = strings.TrimSpace(t)
			// Session timers (RFC 4028) are supported in INVITE dialogs.
			timer := strings.EqualFold(t, "timer") && (req.IsInvite() || req.Method == sip.BYE)
			if t != "" && !timer {
				tags = append(tags, t)
			}
		}
	}
	if len(tags) == 0 {
		return nil
	}
	return newReply(420, "Bad Extension", sip.NewHeader("Unsupported", strings.Join(tags, ", ")))
}

// checkRequest checks what every request the adapter handles must have
// (RFC 3261 §8.1.1): a SIP Request-URI, From and To with SIP URIs, Call-ID
// and a CSeq of the request's method. sipgo parses leniently and leaves a
// malformed header out, so a missing header may also be a malformed one.
// It answers 400 (416 for a Request-URI of another scheme).
func checkRequest(req *sip.Request) (request, *reply) {
	var in request
	if s := req.Recipient.Scheme; s != "sip" && s != "sips" {
		return in, newReply(416, "Unsupported URI Scheme")
	}
	if req.Recipient.Host == "" {
		return in, newReply(400, "Bad Request-URI")
	}
	if r := checkHeaders(req); r != nil {
		return in, r
	}
	from, to := req.From(), req.To()
	aor, user, err := aorOf(&from.Address)
	if errors.Is(err, errUserBytes) {
		// Well formed (RFC 4475 §3.1.1.4), but no one's address here.
		return in, newReply(403, "Forbidden (Control Characters In From)")
	}
	if err != nil {
		return in, newReply(400, "Bad From URI")
	}
	if s := to.Address.Scheme; (s != "sip" && s != "sips") || to.Address.Host == "" {
		return in, newReply(400, "Bad To URI")
	}
	_, host, _ := AddressCodec{}.Split(aor)
	return request{
		from:     aor,
		fromUser: user,
		fromHost: host,
		fromName: displayName(from.DisplayName),
		callID:   req.CallID().Value(),
		cseq:     req.CSeq().SeqNo,
	}, nil
}

// checkHeaders checks that req has From, To, Call-ID and a CSeq of its
// method (400 otherwise).
func checkHeaders(req *sip.Request) *reply {
	if req.From() == nil {
		return newReply(400, "Missing or Malformed From")
	}
	if req.To() == nil {
		return newReply(400, "Missing or Malformed To")
	}
	if callID := req.CallID(); callID == nil || strings.TrimSpace(callID.Value()) == "" {
		return newReply(400, "Missing Call-ID")
	}
	cseq := req.CSeq()
	if cseq == nil {
		return newReply(400, "Missing or Malformed CSeq")
	}
	// sipgo capitalises the request's method, not CSeq's.
	if !strings.EqualFold(string(cseq.MethodName), string(req.Method)) {
		return newReply(400, "CSeq Method Does Not Match")
	}
	return nil
}

// displayName returns a display name as the user wrote it: quoted-pairs
// resolved (sipgo keeps them), control characters and surrounding spaces
// dropped.
func displayName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			i++
			c = s[i]
		}
		if c < 0x20 || c == 0x7f {
			continue
		}
		b.WriteByte(c)
	}
	return strings.TrimSpace(b.String())
}

// credentials returns the digest credentials of req for the adapter's
// realm, looking in the headers named in order. It returns ok false when
// there are none.
func (a *Adapter) credentials(req *sip.Request, names ...string) (digestCredentials, bool) {
	for _, name := range names {
		for _, h := range req.Headers() {
			if !isHeader(h, name) {
				continue
			}
			c, err := parseDigestCredentials(h.Value())
			if err == nil && c.realm == a.auth.realm {
				return c, true
			}
		}
	}
	return digestCredentials{}, false
}

// authorizeSender decides whether in, a request other than REGISTER, may be
// handled: it must come from a trusted peer allowed to send from its From
// domain (by address or by digest credentials), or from a user of the
// domain who authenticated as the user of From. Credentials are accepted
// in Proxy-Authorization and, for clients that answer as if challenged with
// 401, in Authorization.
//
// It answers 407 while credentials are missing, wrong or stale and could be
// right, 403 when they cannot be (From in a domain no one may send from
// here, or credentials of someone else than From).
func (a *Adapter) authorizeSender(req *sip.Request, in *request, now time.Time) *reply {
	if in.peer != nil && in.peer.allows(in.fromHost, a.domain) {
		return nil
	}
	own := in.fromHost == a.domain
	c, ok := a.credentials(req, "Proxy-Authorization", "Authorization")
	if ok {
		username, r := a.authenticate(req, c, now)
		if r != nil {
			return r
		}
		if p := a.peerByUser[username]; p != nil {
			if p.allows(in.fromHost, a.domain) {
				in.peer = p
				return nil
			}
			return newReply(403, "Forbidden (Peer May Not Send From This Domain)")
		}
		if own && username == in.fromUser {
			return nil
		}
		return newReply(403, "Forbidden (From Does Not Match The Authenticated User)")
	}
	if own || a.peerMayAuthenticate(in.fromHost) {
		return a.challenge(req, false, now)
	}
	return newReply(403, "Forbidden (Not A Domain Of This Server)")
}

// peerMayAuthenticate reports whether a trusted peer with credentials may
// send from domain, so that a request from it is worth challenging.
func (a *Adapter) peerMayAuthenticate(domain string) bool {
	for _, p := range a.peerByUser {
		if p.allows(domain, a.domain) {
			return true
		}
	}
	return false
}

// onOptions answers OPTIONS with what the adapter supports (RFC 3261 §11),
// to anyone: it is what keep-alive and monitoring probes send, with whatever
// From they like.
func (a *Adapter) onOptions(req *sip.Request, _ netip.Addr, _ *peer) *reply {
	if r := checkHeaders(req); r != nil {
		return r
	}
	return newReply(200, "OK",
		sip.NewHeader("Allow", allowMethods),
		sip.NewHeader("Accept", acceptTypes),
		sip.NewHeader("Accept-Encoding", "identity"),
		sip.NewHeader("Accept-Language", "en"),
		sip.NewHeader("Allow-Events", allowEvents),
	)
}

// onOther answers the methods the adapter does not handle: 481 to a CANCEL
// (sipgo's transaction layer answers one that matches an INVITE), 405 to the methods of SIP and its
// usual extensions, 501 to the rest; both with Allow.
func (a *Adapter) onOther(req *sip.Request, _ netip.Addr, _ *peer) *reply {
	switch req.Method {
	case sip.CANCEL:
		return newReply(481, "Call/Transaction Does Not Exist")
	case sip.NOTIFY, sip.INFO, sip.REFER, sip.PRACK, sip.UPDATE:
		return newReply(405, "Method Not Allowed", sip.NewHeader("Allow", allowMethods))
	default:
		return newReply(501, "Not Implemented", sip.NewHeader("Allow", allowMethods))
	}
}
