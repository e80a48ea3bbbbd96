package media

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"

	"github.com/parleygw/parley/event"
)

// The session descriptions of plain RTP legs (SIP): one audio stream over
// RTP/AVP (RFC 8866, RFC 3264 offer/answer, RFC 3551 profile). SDP is read
// and written with pion/sdp; this file turns it into what a leg needs.

// Direction is the direction attribute of an audio stream (RFC 8866 §6.7),
// as its sender wrote it.
type Direction string

// The directions. A stream without a direction attribute is SendRecv.
const (
	SendRecv Direction = "sendrecv"
	SendOnly Direction = "sendonly"
	RecvOnly Direction = "recvonly"
	Inactive Direction = "inactive"
)

// Reverse returns the direction an answer gives for an offer's d (RFC 3264
// §6.1): sendonly is answered recvonly and the other way round.
func (d Direction) Reverse() Direction {
	switch d {
	case SendOnly:
		return RecvOnly
	case RecvOnly:
		return SendOnly
	case Inactive:
		return Inactive
	}
	return SendRecv
}

// AudioSDP is what Parley reads of a session description, and writes into
// its own, for one plain RTP audio leg.
type AudioSDP struct {
	// Addr is where the sender receives RTP (RTCP on the next port). It is
	// not valid when the sender gave the address 0.0.0.0 (RFC 3264 §8.4:
	// hold, in older phones) or the port 0 (the stream is refused).
	Addr netip.AddrPort
	// Port0 is set when the audio stream's port is 0: refused, or, in an
	// offer, disabled.
	Port0 bool
	// Media are the stream's codecs, in the sender's order of preference.
	Media event.Media
	// Direction is the stream's direction.
	Direction Direction
	// Ptime is the packet time in milliseconds (a=ptime), 0 when not given.
	Ptime int
	// SessionID and Version are the origin's session ID and version (o=),
	// so that a re-offer can be told from a repeated one.
	SessionID, Version uint64
}

// ErrNoAudio is returned by ParseSDP when the description has no RTP/AVP
// audio stream Parley can take.
var ErrNoAudio = errors.New("sdp: no RTP/AVP audio stream")

// maxSDP bounds the size of a description ParseSDP reads.
const maxSDP = 64 << 10

// staticCodecs are the RFC 3551 static payload types an offer may list
// without a=rtpmap.
var staticCodecs = map[uint8]event.Codec{
	0:  {Name: "PCMU", ClockRate: 8000, PayloadType: 0},
	3:  {Name: "GSM", ClockRate: 8000, PayloadType: 3},
	4:  {Name: "G723", ClockRate: 8000, PayloadType: 4},
	8:  {Name: "PCMA", ClockRate: 8000, PayloadType: 8},
	9:  {Name: "G722", ClockRate: 8000, PayloadType: 9},
	18: {Name: "G729", ClockRate: 8000, PayloadType: 18},
}

// ParseSDP reads the first audio stream of a session description. It takes
// the stream's connection address (media level, else session level), port,
// codecs (a=rtpmap and a=fmtp; the static payload types without rtpmap),
// direction (media level, else session level, else sendrecv) and ptime.
// Codecs with payload types it cannot describe (a dynamic type without
// rtpmap) are left out. Errors name the line: "sdp: m=audio line 4: ...".
//
// An audio stream over another profile (RTP/SAVP, UDP/TLS/RTP/SAVPF) is
// not one Parley can take: ParseSDP then returns an error wrapping
// ErrNoAudio.
func ParseSDP(b []byte) (AudioSDP, error) {
	var out AudioSDP
	if len(b) == 0 {
		return out, errors.New("sdp: empty body")
	}
	if len(b) > maxSDP {
		return out, fmt.Errorf("sdp: %d bytes, more than %d", len(b), maxSDP)
	}
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(b); err != nil {
		if !strings.HasPrefix(err.Error(), "sdp:") {
			err = fmt.Errorf("sdp: %w", err)
		}
		return out, err
	}
	out.SessionID, out.Version = sd.Origin.SessionID, sd.Origin.SessionVersion
	lines := mLines(b)
	var md *sdp.MediaDescription
	line := 0
	var other []string
	for i, m := range sd.MediaDescriptions {
		if m.MediaName.Media != "audio" {
			continue
		}
		proto := strings.Join(m.MediaName.Protos, "/")
		if proto != "RTP/AVP" && proto != "RTP/AVPF" {
			other = append(other, proto)
			continue
		}
		md = m
		if i < len(lines) {
			line = lines[i]
		}
		break
	}
	if md == nil {
		if len(other) > 0 {
			return out, fmt.Errorf("%w: audio is offered over %s only", ErrNoAudio, strings.Join(other, ", "))
		}
		return out, ErrNoAudio
	}
	fail := func(format string, args ...any) (AudioSDP, error) {
		return AudioSDP{}, fmt.Errorf("sdp: m=audio line %d: "+format, append([]any{line}, args...)...)
	}

	port := md.MediaName.Port.Value
	if port < 0 || port > 65535 {
		return fail("port %d out of range", port)
	}
	out.Port0 = port == 0
	ci := md.ConnectionInformation
	if ci == nil {
		ci = sd.ConnectionInformation
	}
	if ci == nil || ci.Address == nil {
		if !out.Port0 {
			return fail("no connection address (c=) at media or session level")
		}
	} else {
		if ci.NetworkType != "IN" || (ci.AddressType != "IP4" && ci.AddressType != "IP6") {
			return fail("connection %s %s is not IN IP4 or IN IP6", ci.NetworkType, ci.AddressType)
		}
		host, _, _ := strings.Cut(ci.Address.Address, "/") // a multicast TTL or range
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return fail("connection address %q is not an IP address (Parley does not resolve names in SDP)", ci.Address.Address)
		}
		if (ci.AddressType == "IP4") != ip.Is4() {
			return fail("connection address %s is not an %s address", ip, ci.AddressType)
		}
		if ip.IsMulticast() {
			return fail("multicast connection address %s", ip)
		}
		if !ip.IsUnspecified() && !out.Port0 {
			out.Addr = netip.AddrPortFrom(ip, uint16(port))
		}
	}

	codecs, err := codecsOf(md)
	if err != nil {
		return fail("%v", err)
	}
	out.Media = event.Media{Codecs: codecs}
	if !out.Port0 {
		if err := out.Media.Validate(); err != nil {
			return fail("%v", err)
		}
	}

	out.Direction = SendRecv
	for _, attrs := range [][]sdp.Attribute{sd.Attributes, md.Attributes} {
		for _, a := range attrs {
			switch d := Direction(a.Key); d {
			case SendRecv, SendOnly, RecvOnly, Inactive:
				out.Direction = d
			}
		}
	}
	if v, ok := md.Attribute("ptime"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n <= 0 || n > 1000 {
			return fail("a=ptime:%s is not a packet time in milliseconds", v)
		}
		out.Ptime = n
	}
	return out, nil
}

// codecsOf returns the codecs of md's format list, in its order.
func codecsOf(md *sdp.MediaDescription) ([]event.Codec, error) {
	maps := map[uint8]event.Codec{}
	fmtps := map[uint8]string{}
	for _, a := range md.Attributes {
		switch a.Key {
		case "rtpmap":
			c, err := readRtpmap(a.Value)
			if err != nil {
				return nil, err
			}
			maps[c.PayloadType] = c
		case "fmtp":
			pt, params, _ := strings.Cut(a.Value, " ")
			n, err := strconv.ParseUint(pt, 10, 8)
			if err != nil || n > 127 {
				return nil, fmt.Errorf("a=fmtp:%s has no payload type", a.Value)
			}
			fmtps[uint8(n)] = strings.TrimSpace(params)
		}
	}
	if len(md.MediaName.Formats) == 0 {
		return nil, errors.New("no payload type in the format list")
	}
	var out []event.Codec
	seen := map[uint8]bool{}
	for _, f := range md.MediaName.Formats {
		n, err := strconv.ParseUint(f, 10, 8)
		if err != nil || n > 127 {
			return nil, fmt.Errorf("format %q is not an RTP payload type", f)
		}
		pt := uint8(n)
		if seen[pt] {
			return nil, fmt.Errorf("payload type %d is listed twice", pt)
		}
		seen[pt] = true
		c, ok := maps[pt]
		if !ok {
			if c, ok = staticCodecs[pt]; !ok {
				continue // a dynamic type without rtpmap, or an unknown static one
			}
		}
		c.FMTP = fmtps[pt]
		out = append(out, c)
	}
	return out, nil
}

// readRtpmap reads "<pt> <name>/<rate>[/<channels>]".
func readRtpmap(v string) (event.Codec, error) {
	bad := func() (event.Codec, error) { return event.Codec{}, fmt.Errorf("a=rtpmap:%s is malformed", v) }
	pt, enc, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok {
		return bad()
	}
	n, err := strconv.ParseUint(pt, 10, 8)
	if err != nil || n > 127 {
		return bad()
	}
	parts := strings.Split(strings.TrimSpace(enc), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
		return bad()
	}
	rate, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil || rate == 0 {
		return bad()
	}
	c := event.Codec{Name: parts[0], ClockRate: uint32(rate), PayloadType: uint8(n)}
	if len(parts) == 3 {
		ch, err := strconv.ParseUint(parts[2], 10, 8)
		if err != nil || ch == 0 {
			return bad()
		}
		if ch > 1 {
			c.Channels = uint8(ch) // 1 is the default, kept as 0
		}
	}
	if err := c.Validate(); err != nil {
		return bad()
	}
	return c, nil
}

// mLines returns the line numbers (from 1) of the m= lines of b.
func mLines(b []byte) []int {
	var out []int
	for i, l := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(l, []byte("m=")) {
			out = append(out, i+1)
		}
	}
	return out
}

// WriteSDP returns the session description of s for a leg whose RTP address
// is s.Addr (RTCP on the next port): one RTP/AVP audio stream with
// s.Media's codecs, rtpmap and fmtp lines for each, s.Direction and
// s.Ptime when set. An invalid s.Addr, or Port0, writes port 0 (a refused
// or disabled stream).
// The origin's user is "parley"; SessionID and Version make its session ID
// and version.
func WriteSDP(s AudioSDP) []byte {
	addr := s.Addr.Addr()
	if !addr.IsValid() {
		addr = netip.IPv4Unspecified()
	}
	addrType := "IP4"
	if addr.Is6() && !addr.Is4In6() {
		addrType = "IP6"
	}
	host := addr.Unmap().String()
	port := int(s.Addr.Port())
	if !s.Addr.IsValid() || s.Port0 {
		port = 0
	}
	md := &sdp.MediaDescription{
		MediaName: sdp.MediaName{Media: "audio", Port: sdp.RangedPort{Value: port}, Protos: []string{"RTP", "AVP"}},
	}
	for _, c := range s.Media.Codecs {
		md.MediaName.Formats = append(md.MediaName.Formats, strconv.Itoa(int(c.PayloadType)))
		md.Attributes = append(md.Attributes, sdp.NewAttribute("rtpmap", c.String()))
		if c.FMTP != "" {
			md.Attributes = append(md.Attributes, sdp.NewAttribute("fmtp", strconv.Itoa(int(c.PayloadType))+" "+c.FMTP))
		}
	}
	if s.Ptime > 0 {
		md.Attributes = append(md.Attributes, sdp.NewAttribute("ptime", strconv.Itoa(s.Ptime)))
	}
	dir := s.Direction
	if dir == "" {
		dir = SendRecv
	}
	md.Attributes = append(md.Attributes, sdp.NewPropertyAttribute(string(dir)))
	sd := sdp.SessionDescription{
		Origin: sdp.Origin{
			Username: "parley", SessionID: s.SessionID, SessionVersion: s.Version,
			NetworkType: "IN", AddressType: addrType, UnicastAddress: host,
		},
		SessionName: "parley",
		ConnectionInformation: &sdp.ConnectionInformation{
			NetworkType: "IN", AddressType: addrType, Address: &sdp.Address{Address: host},
		},
		TimeDescriptions:  []sdp.TimeDescription{{}},
		MediaDescriptions: []*sdp.MediaDescription{md},
	}
	out, err := sd.Marshal()
	if err != nil { // pion's Marshal does not fail on a description built like this
		return nil
	}
	return out
}

// Forwardable are the codecs Parley's legs can carry between networks
// without transcoding: what SIP phones, WebRTC (Matrix) and Jingle clients
// have in common, and RFC 4733 telephone events.
var Forwardable = []event.Codec{
	{Name: "opus", ClockRate: 48000, Channels: 2},
	{Name: "G722", ClockRate: 8000},
	{Name: "PCMU", ClockRate: 8000},
	{Name: "PCMA", ClockRate: 8000},
	{Name: event.TelephoneEvent, ClockRate: 8000},
	{Name: event.TelephoneEvent, ClockRate: 48000},
}

// AnswerCodecs picks the codecs of an answer to offer (RFC 3264 §6.1): the
// first audio codec of the offer that supported has (whatever payload type
// supported numbers it with), and the offer's telephone-event of the same
// clock rate, if supported has telephone-event too. The codecs keep the
// offer's payload types and format parameters. It returns false when no
// audio codec of the offer is supported.
func AnswerCodecs(offer event.Media, supported []event.Codec) (event.Media, bool) {
	has := func(c event.Codec) bool {
		for _, s := range supported {
			if c.Same(s) {
				return true
			}
		}
		return false
	}
	var audio *event.Codec
	for i := range offer.Codecs {
		if c := offer.Codecs[i]; !c.IsDTMF() && has(c) {
			audio = &offer.Codecs[i]
			break
		}
	}
	if audio == nil {
		return event.Media{}, false
	}
	out := event.Media{Codecs: []event.Codec{*audio}}
	for _, c := range offer.Codecs {
		if c.IsDTMF() && c.ClockRate == audio.ClockRate && has(c) {
			out.Codecs = append(out.Codecs, c)
			break
		}
	}
	return out, true
}
