package media

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"

	"github.com/parleygw/parley/event"
)

// ParseWebRTCMedia returns the codecs of the first audio m-line of a WebRTC
// offer or answer (an m.call.invite's or m.call.answer's SDP), in the order
// the m-line lists them. Static payload types without an a=rtpmap (0 PCMU,
// 8 PCMA) get their registered names; other formats without one, and
// codecs that are not audio ones Parley carries, are skipped. It returns an
// error when the text is not SDP or has no usable audio.
func ParseWebRTCMedia(text string) (event.Media, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(text); err != nil {
		return event.Media{}, fmt.Errorf("sdp: %w", err)
	}
	for _, md := range sd.MediaDescriptions {
		if md == nil || md.MediaName.Media != "audio" {
			continue
		}
		if md.MediaName.Port.Value == 0 {
			continue // rejected m-line
		}
		m := audioCodecs(md)
		if err := m.Validate(); err != nil {
			return event.Media{}, fmt.Errorf("sdp audio: %w", err)
		}
		return m, nil
	}
	return event.Media{}, errors.New("sdp: no audio m-line")
}

func audioCodecs(md *sdp.MediaDescription) event.Media {
	rtpmap := map[uint64]event.Codec{}
	fmtp := map[uint64]string{}
	for _, a := range md.Attributes {
		pt, rest, ok := strings.Cut(strings.TrimSpace(a.Value), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(pt, 10, 7)
		if err != nil {
			continue
		}
		switch a.Key {
		case "rtpmap":
			if c, ok := parseRTPMap(strings.TrimSpace(rest)); ok {
				c.PayloadType = uint8(n)
				rtpmap[n] = c
			}
		case "fmtp":
			fmtp[n] = strings.TrimSpace(rest)
		}
	}
	var m event.Media
	seen := map[uint64]bool{}
	for _, f := range md.MediaName.Formats {
		n, err := strconv.ParseUint(f, 10, 7)
		if err != nil || seen[n] {
			continue
		}
		seen[n] = true
		c, ok := rtpmap[n]
		if !ok {
			switch n {
			case 0:
				c, ok = event.Codec{Name: "PCMU", ClockRate: 8000}, true
			case 8:
				c, ok = event.Codec{Name: "PCMA", ClockRate: 8000}, true
			}
		}
		if !ok || !carried(c) {
			continue
		}
		c.PayloadType = uint8(n)
		c.FMTP = fmtp[n]
		if c.Validate() != nil {
			continue
		}
		m.Codecs = append(m.Codecs, c)
	}
	return m
}

// carried reports whether Parley relays c between legs: whether its name is
// one of Forwardable's.
func carried(c event.Codec) bool {
	for _, f := range Forwardable {
		if strings.EqualFold(c.Name, f.Name) {
			return true
		}
	}
	return false
}

// parseRTPMap parses "name/rate[/channels]".
func parseRTPMap(s string) (event.Codec, bool) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
		return event.Codec{}, false
	}
	rate, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil || rate == 0 {
		return event.Codec{}, false
	}
	c := event.Codec{Name: parts[0], ClockRate: uint32(rate)}
	if len(parts) == 3 {
		ch, err := strconv.ParseUint(parts[2], 10, 8)
		if err != nil {
			return event.Codec{}, false
		}
		if ch > 1 {
			c.Channels = uint8(ch)
		}
	}
	return c, true
}
