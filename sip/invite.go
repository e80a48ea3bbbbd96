package sip

import (
	"mime"
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// sdpType is the only session description type INVITE may carry.
const sdpType = "application/sdp"

// onInvite answers INVITE while Parley bridges no calls: 405 with Allow.
// It first makes the checks a call will need, so that an INVITE that
// could never succeed says why (RFC 3261 §8.2.3): 400 or 416 for what
// every request must have, 415 with Accept for a body other than SDP (RFC
// 4475 §3.3.6), and 406 when Accept leaves SDP out, so that no answer
// could carry one (RFC 4475 §3.3.15).
func (a *Adapter) onInvite(req *sip.Request, _ netip.Addr, _ *peer) *reply {
	if _, r := checkRequest(req); r != nil {
		return r
	}
	if len(req.Body()) > 0 {
		ct := ""
		if h := req.ContentType(); h != nil {
			ct = h.Value()
		}
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != sdpType {
			return newReply(415, "Unsupported Media Type", sip.NewHeader("Accept", sdpType))
		}
	}
	if !acceptsSDP(req) {
		return newReply(406, "Not Acceptable",
			sip.NewHeader("Accept", sdpType),
			sip.NewHeader("Warning", `399 `+a.domain+` "Only application/sdp can answer an INVITE"`))
	}
	return newReply(405, "Method Not Allowed", sip.NewHeader("Allow", allowMethods))
}

// acceptsSDP reports whether req's Accept headers, if any, allow an SDP
// body (RFC 3261 §20.1: absent means application/sdp).
func acceptsSDP(req *sip.Request) bool {
	hs := req.GetHeaders("Accept")
	if len(hs) == 0 {
		return true
	}
	for _, h := range hs {
		for _, r := range strings.Split(h.Value(), ",") {
			mt, _, _ := strings.Cut(r, ";")
			switch strings.ToLower(strings.TrimSpace(mt)) {
			case sdpType, "application/*", "*/*", "":
				return true
			}
		}
	}
	return false
}
