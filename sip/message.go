package sip

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"mime"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// onMessage handles an inbound MESSAGE (RFC 3428): it checks the request and
// its sender, translates it to an event.Message (a post in a room, or a
// room command, when it is addressed to a portal's SIP address: see
// room.go) and hands that to the routing core. It answers 202 once the core has stored the event, and the
// core's refusals with 404 (no such recipient), 403 (refused) or 503 with
// Retry-After (not stored; the sender may try again).
func (a *Adapter) onMessage(req *sip.Request, src netip.Addr, p *peer) *reply {
	msg, r := a.inboundMessage(req, src, p, a.now())
	if r != nil {
		return r
	}
	host, _, _, _ := a.stack()
	var evt event.Event = msg
	if isRoom(host, msg.To.ID) {
		if parseRoomCommand(msg.Body) == who {
			return a.answerWho(host, msg)
		}
		evt = roomEvent(msg)
	}
	ctx, cancel := context.WithTimeout(a.dispatchCtx, dispatchTimeout)
	defer cancel()
	err := host.Dispatch(ctx, evt)
	if err != nil {
		a.log.Info("sip message not accepted", "id", msg.ID, "from", msg.From.ID, "to", msg.To.ID, "kind", evt.Kind(), "err", err)
	} else {
		a.log.Debug("sip message accepted", "id", msg.ID, "from", msg.From.ID, "to", msg.To.ID, "kind", evt.Kind())
	}
	return dispatchReply(err)
}

// inboundMessage checks the MESSAGE req, which came from src (a trusted
// peer's address when p is not nil), and its sender, and translates it. It
// returns the event to dispatch, or the reply that refuses the request.
func (a *Adapter) inboundMessage(req *sip.Request, src netip.Addr, p *peer, now time.Time) (*event.Message, *reply) {
	in, r := checkRequest(req)
	if r != nil {
		return nil, r
	}
	in.source, in.peer = src, p
	if r := a.authorizeSender(req, &in, now); r != nil {
		return nil, r
	}
	return a.translateMessage(req, in, now)
}

// dispatchReply translates the outcome of Host.Dispatch into the response
// to the MESSAGE.
func dispatchReply(err error) *reply {
	switch {
	case err == nil:
		return newReply(202, "Accepted")
	case errors.Is(err, bridges.ErrNoRoute):
		return newReply(404, "Not Found")
	case errors.Is(err, bridges.ErrRefused):
		return newReply(403, "Forbidden")
	default:
		// Not stored (the store failed, or Parley is stopping): the sender
		// may try again. SIP has no 429; 503 with Retry-After says "later".
		return newReply(503, "Service Unavailable", sip.NewHeader("Retry-After", "10"))
	}
}

// translateMessage turns req, a MESSAGE whose sender is authorised, into an
// event.Message: From is the sender's AOR, To the AOR under the adapter's
// domain that the Request-URI (or else the To header) names. The body must
// be at most Config.MaxMessageSize bytes (413), text/plain in UTF-8 or
// message/cpim wrapping such text (415 with Accept otherwise), not empty and
// valid UTF-8 (400). The event ID is "<sender AOR>/<Call-ID>/<CSeq>":
// retransmissions and resends of the request share it, other requests do
// not.
func (a *Adapter) translateMessage(req *sip.Request, in request, now time.Time) (*event.Message, *reply) {
	to, r := a.recipient(req)
	if r != nil {
		return nil, r
	}
	body := req.Body()
	if len(body) > a.cfg.MaxMessageSize {
		return nil, newReply(413, "Request Entity Too Large")
	}
	if h := firstHeader(req, "Content-Encoding"); h != nil && !strings.EqualFold(strings.TrimSpace(h.Value()), "identity") {
		return nil, newReply(415, "Unsupported Content-Encoding", sip.NewHeader("Accept-Encoding", "identity"), sip.NewHeader("Accept", acceptTypes))
	}
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = h.Value()
	}
	text, r := messageText(ct, body)
	if r != nil {
		return nil, r
	}
	return &event.Message{
		Header: event.Header{
			ID:       in.from + "/" + in.callID + "/" + strconv.FormatUint(uint64(in.cseq), 10),
			From:     event.Address{Network: event.SIP, ID: in.from},
			To:       event.Address{Network: event.SIP, ID: to},
			FromName: in.fromName,
			Time:     now,
		},
		Body: text,
	}, nil
}

// recipient returns the canonical AOR req is addressed to: its Request-URI
// when that names a user of the adapter's domain, else its To header when
// that does (a proxy may have rewritten the Request-URI to Parley's
// address). Otherwise the request is not for Parley: 404.
func (a *Adapter) recipient(req *sip.Request) (string, *reply) {
	for _, u := range []*sip.Uri{&req.Recipient, &req.To().Address} {
		if u.User == "" {
			continue
		}
		if h, err := canonicalHost(u.Host); err != nil || h != a.domain {
			continue
		}
		aor, _, err := aorOf(u)
		if err != nil {
			return "", newReply(404, "Not Found")
		}
		return aor, nil
	}
	return "", newReply(404, "Not Found")
}

// messageText returns the text of a MESSAGE body of content type ct (empty
// when the request has none: taken as text/plain).
func messageText(ct string, body []byte) (string, *reply) {
	unsupported := func(reason string) (string, *reply) {
		return "", newReply(415, reason, sip.NewHeader("Accept", acceptTypes))
	}
	mt, params := "text/plain", map[string]string{}
	if plainText(ct) {
		ct = "" // the usual case, decided without parsing
	}
	if strings.TrimSpace(ct) != "" {
		var err error
		if mt, params, err = mime.ParseMediaType(ct); err != nil {
			return "", newReply(400, "Malformed Content-Type")
		}
	}
	switch mt {
	case "text/plain":
		if !textCharset(params["charset"]) {
			return unsupported("Unsupported Charset")
		}
	case "message/cpim":
		m, err := parseCPIM(body)
		if err != nil {
			return "", newReply(400, "Malformed CPIM Body")
		}
		imt, iparams := "text/plain", map[string]string{}
		if ict := m.contentType(); strings.TrimSpace(ict) != "" {
			if imt, iparams, err = mime.ParseMediaType(ict); err != nil {
				return "", newReply(400, "Malformed CPIM Content-Type")
			}
		}
		if imt != "text/plain" {
			return unsupported("Unsupported Media Type In CPIM")
		}
		if !textCharset(iparams["charset"]) {
			return unsupported("Unsupported Charset")
		}
		body = m.Content
	default:
		return unsupported("Unsupported Media Type")
	}
	if len(body) == 0 {
		return "", newReply(400, "Empty Message Body")
	}
	if !utf8.Valid(body) {
		return "", newReply(400, "Body Is Not UTF-8")
	}
	return string(body), nil
}

// textCharset reports whether a text/plain charset parameter is one the
// adapter reads: UTF-8, or US-ASCII, its subset; absent means UTF-8 here
// (RFC 3428 §9 recommends it), whatever MIME's default.
func textCharset(cs string) bool {
	return cs == "" || strings.EqualFold(cs, "utf-8") || strings.EqualFold(cs, "us-ascii")
}

// plainText reports whether the content type ct is text/plain, with no
// parameter but a charset that textCharset accepts, written simply:
// "text/plain;charset=UTF-8", as phones write it. Anything else, however
// valid, is left to mime.ParseMediaType.
func plainText(ct string) bool {
	mt, params, semicolon := strings.Cut(ct, ";")
	if !strings.EqualFold(strings.TrimSpace(mt), "text/plain") {
		return false
	}
	if !semicolon {
		return true
	}
	name, value, ok := strings.Cut(params, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(name), "charset") {
		return false
	}
	value = strings.TrimSpace(value)
	if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
		value = value[1 : len(value)-1]
	}
	return value != "" && !strings.ContainsAny(value, "\";= \t") && textCharset(value)
}

// outboundMessage is a MESSAGE the adapter sends.
type outboundMessage struct {
	// from and to are canonical AORs; from is under the adapter's domain.
	from, to string
	fromName string
	body     string
	// sourceID is the event's source ID; the Call-ID and From tag derive
	// from it, so that a resend of the event is the same request.
	sourceID string
}

// newMessageRequest builds the MESSAGE o for the Request-URI target.
func (a *Adapter) newMessageRequest(o outboundMessage, target sip.Uri) *sip.Request {
	req := sip.NewRequest(sip.MESSAGE, target)
	var fromURI, toURI sip.Uri
	_ = sip.ParseUri(o.from, &fromURI) // canonical AORs parse
	_ = sip.ParseUri(o.to, &toURI)
	from := &sip.FromHeader{DisplayName: quoteDisplayName(o.fromName), Address: fromURI, Params: sip.NewParams()}
	from.Params.Add("tag", derive("tag", o.sourceID)[:16])
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: toURI})
	callID := sip.CallIDHeader(derive("call-id", o.sourceID)[:32] + "@" + a.domain)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.MESSAGE})
	maxForwards := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxForwards)
	req.AppendHeader(sip.NewHeader("User-Agent", a.cfg.UserAgent))
	req.AppendHeader(sip.NewHeader("Content-Type", "text/plain;charset=UTF-8"))
	req.SetBody([]byte(o.body))
	return req
}

// derive returns a hex string derived from the source ID and a purpose, or
// a random one when the event has no source ID.
func derive(purpose, sourceID string) string {
	if sourceID == "" {
		return hex.EncodeToString([]byte(rand.Text()))
	}
	sum := sha256.Sum256([]byte("parley " + purpose + " " + sourceID))
	return hex.EncodeToString(sum[:])
}

// quoteDisplayName escapes name for a quoted-string (RFC 3261 §25.1);
// sipgo writes the quotes. Control characters are dropped.
func quoteDisplayName(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r < 0x20 || r == 0x7f:
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// failureText is the body of the MESSAGE that tells a SIP user an event
// they sent was not delivered.
func failureText(f *event.Failure) string {
	return "Message not delivered: " + f.Explanation()
}
