package sip

import "github.com/emiago/sipgo/sip"

// isHeader reports whether h is called name, compared without ASCII case,
// as sipgo's GetHeader compares names. Unlike GetHeader and GetHeaders,
// which lower the case of every header's name for each lookup, it
// allocates nothing: the adapter looks several headers up per request.
func isHeader(h sip.Header, name string) bool {
	n := h.Name()
	if len(n) != len(name) {
		return false
	}
	for i := 0; i < len(n); i++ {
		a, b := n[i], name[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// firstHeader returns the first header of req called name, or nil.
func firstHeader(req *sip.Request, name string) sip.Header {
	for _, h := range req.Headers() {
		if isHeader(h, name) {
			return h
		}
	}
	return nil
}
