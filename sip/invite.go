package sip

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// sdpType is the only session description type INVITE may carry.
const sdpType = "application/sdp"

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
