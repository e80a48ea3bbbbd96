package sip

import (
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// checkSyntax checks what RFC 3261 asks of every request and sipgo's parser
// lets through. It answers 505 to another SIP version (§21.5.6),
// 400 to a header that may appear once and appears more often (§7.3,
// §20), 416 to a Request-URI of another scheme than sip or sips and 400 to
// one with headers (§19.1.5), 400 to a missing or mismatched From, To,
// Call-ID or CSeq (§8.1.1), 400 to a Date not in GMT (§20.17), and 483 to
// a request with Max-Forwards 0 that Parley would have to forward: one
// whose Request-URI is neither Parley's domain nor an IP address (§16.3;
// RFC 4475 §3.3.11: an endpoint processes it).
func (a *Adapter) checkSyntax(req *sip.Request) *reply {
	if !strings.EqualFold(req.SipVersion, "SIP/2.0") {
		return newReply(505, "Version Not Supported")
	}
	date, r := scanHeaders(req)
	if r != nil {
		return r
	}
	if s := req.Recipient.Scheme; s != "sip" && s != "sips" {
		return newReply(416, "Unsupported URI Scheme")
	}
	if len(req.Recipient.Headers) > 0 {
		return newReply(400, "Headers In Request-URI")
	}
	if r := checkHeaders(req); r != nil {
		return r
	}
	if date != nil && !validDate(date.Value()) {
		return newReply(400, "Malformed Date Header")
	}
	if mf := req.MaxForwards(); mf != nil && *mf == 0 && !a.addressedHere(&req.Recipient) {
		return newReply(483, "Too Many Hops")
	}
	return nil
}

// scanHeaders answers 400 when a header that may appear only once (RFC
// 3261 §7.3.1, §20) appears more often; it returns the Date header, if
// any. It reads the headers once, without allocating.
func scanHeaders(req *sip.Request) (sip.Header, *reply) {
	var from, to, callID, cseq, maxForwards, contentLength, contentType int
	var date sip.Header
	for _, h := range req.Headers() {
		switch h.(type) {
		case *sip.FromHeader:
			from++
		case *sip.ToHeader:
			to++
		case *sip.CallIDHeader:
			callID++
		case *sip.CSeqHeader:
			cseq++
		case *sip.MaxForwardsHeader:
			maxForwards++
		case *sip.ContentLengthHeader:
			contentLength++
		case *sip.ContentTypeHeader:
			contentType++
		default:
			if date == nil && strings.EqualFold(h.Name(), "Date") {
				date = h
			}
		}
	}
	for _, d := range []struct {
		n    int
		name string
	}{{from, "From"}, {to, "To"}, {callID, "Call-ID"}, {cseq, "CSeq"}, {maxForwards, "Max-Forwards"}, {contentLength, "Content-Length"}, {contentType, "Content-Type"}} {
		if d.n > 1 {
			return nil, newReply(400, "Multiple "+d.name+" Headers")
		}
	}
	return date, nil
}

// validDate reports whether v is an rfc1123-date in GMT (RFC 3261 §20.17).
func validDate(v string) bool {
	_, err := time.Parse(time.RFC1123, v)
	return err == nil && strings.HasSuffix(v, " GMT")
}

// addressedHere reports whether u names Parley itself: its domain, or an
// IP address (Parley cannot tell all of its own addresses behind NAT).
func (a *Adapter) addressedHere(u *sip.Uri) bool {
	if h, err := canonicalHost(u.Host); err == nil && h == a.domain {
		return true
	}
	_, err := netip.ParseAddr(strings.Trim(u.Host, "[]"))
	return err == nil
}
