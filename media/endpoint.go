package media

import "time"

// Endpoint is the media of one call leg, as the routing core sees it: what
// the leg's party sends comes out of the endpoint into its peer, and what is
// written to the endpoint goes to its party. A Leg (plain RTP for SIP) is an
// Endpoint, and so is a WebRTC leg (ICE and DTLS-SRTP for Matrix and Jingle
// clients). The adapter of a leg makes its endpoint and uses it for its
// offers and answers; the core connects the caller's endpoint with the
// answering callee's (Connect) and closes both when the call ends.
//
// Payloads pass untouched: an endpoint carries the RTP packets of the codec
// both legs agreed on, RFC 4733 telephone events included, and RTCP where
// the leg has it.
type Endpoint interface {
	// SetPeer makes the endpoint forward what its party sends to peer, or
	// drop it when peer is nil. It may be called at any time, also from
	// another goroutine than the one forwarding.
	SetPeer(peer Endpoint)
	// WriteRTP sends one RTP packet (header and payload) to the party.
	WriteRTP(pkt []byte) error
	// WriteRTCP sends one RTCP compound packet to the party. An endpoint
	// whose transport makes its own RTCP (WebRTC) may drop it.
	WriteRTCP(pkt []byte) error
	// LastPacket returns when the party last sent a packet that the
	// endpoint accepted (RTP or RTCP), or the endpoint's creation time when
	// none came yet: the core hangs up a call whose legs are all silent
	// for longer than its media timeout.
	LastPacket() time.Time
	// Stats returns the endpoint's counters.
	Stats() Stats
	// Close stops the endpoint and releases its sockets and ports.
	Close() error
}

// Connect joins the media of two legs both ways. Connect(a, nil) stops
// forwarding from a; a and b stay open.
func Connect(a, b Endpoint) {
	if a != nil {
		a.SetPeer(b)
	}
	if b != nil {
		b.SetPeer(a)
	}
}
