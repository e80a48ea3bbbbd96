package event

import (
	"errors"
	"fmt"
	"strings"
)

// A call is a session, not history: call events are not put in the outbox.
// Each network's adapter turns its signalling into these four kinds (SIP
// INVITE/180/183/200/CANCEL/BYE, Matrix m.call.*, Jingle and JMI), and the
// call state machine (package calls) drives every leg from them. A fifth,
// CallUpdate, changes the codec of an answered call on both legs at once.
//
// Header.ID is the ID of the event itself; Call is the ID of the call on the
// sender's network (a SIP Call-ID, a Matrix call_id, a Jingle sid), the same
// for every event of one leg.

// Codec is one RTP payload format of a media offer or answer, the
// network-neutral content of an SDP rtpmap/fmtp pair (RFC 8866 §6.6, RFC
// 3551), a Jingle <payload-type/> (XEP-0167) or a WebRTC codec.
type Codec struct {
	// Name is the encoding name as registered for RTP, e.g. "PCMU", "PCMA",
	// "opus", "telephone-event". Compared without regard to case.
	Name string
	// ClockRate is the RTP clock rate in Hz (8000 for G.711, 48000 for Opus).
	ClockRate uint32
	// Channels is the number of audio channels; 0 means 1.
	Channels uint8
	// PayloadType is the RTP payload type the sender of the offer or answer
	// uses for this codec, 0–127 (0 and 8 are static for PCMU and PCMA;
	// 96–127 are dynamic).
	PayloadType uint8
	// FMTP holds the format parameters as written in SDP a=fmtp, e.g.
	// "0-16" for telephone-event or "minptime=10;useinbandfec=1" for Opus.
	FMTP string
}

// TelephoneEvent is the encoding name of RFC 4733 DTMF events. An offer that
// carries DTMF lists a Codec with this name next to its audio codecs.
const TelephoneEvent = "telephone-event"

// IsDTMF reports whether c carries RFC 4733 telephone events rather than
// audio.
func (c Codec) IsDTMF() bool { return strings.EqualFold(c.Name, TelephoneEvent) }

// Same reports whether c and o are the same format (name, clock rate and
// channels), whatever payload type each side numbers it with.
func (c Codec) Same(o Codec) bool {
	return strings.EqualFold(c.Name, o.Name) && c.ClockRate == o.ClockRate && c.channels() == o.channels()
}

func (c Codec) channels() uint8 {
	if c.Channels == 0 {
		return 1
	}
	return c.Channels
}

// String returns the codec as SDP writes it in a=rtpmap, with the payload
// type: "0 PCMU/8000", "111 opus/48000/2".
func (c Codec) String() string {
	if c.Channels > 1 {
		return fmt.Sprintf("%d %s/%d/%d", c.PayloadType, c.Name, c.ClockRate, c.Channels)
	}
	return fmt.Sprintf("%d %s/%d", c.PayloadType, c.Name, c.ClockRate)
}

// Validate checks the codec's fields. Adapters call it on what they parsed
// from a peer, so the error says which field is wrong.
func (c Codec) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("codec has no name")
	case strings.ContainsAny(c.Name, " /\r\n\t"):
		return fmt.Errorf("codec name %q has a space or a slash", c.Name)
	case c.ClockRate == 0:
		return fmt.Errorf("codec %s has no clock rate", c.Name)
	case c.PayloadType > 127:
		return fmt.Errorf("codec %s has payload type %d, above 127", c.Name, c.PayloadType)
	case strings.ContainsAny(c.FMTP, "\r\n"):
		return fmt.Errorf("codec %s has a line break in its format parameters", c.Name)
	}
	return nil
}

// Media is a network-neutral media description: the codecs of an offer or an
// answer, in order of preference. It is not SDP text; each adapter writes and
// reads its own protocol's form (SDP, Jingle, WebRTC).
type Media struct {
	Codecs []Codec
}

// Validate checks every codec and that no payload type is used twice.
func (m Media) Validate() error {
	if len(m.Codecs) == 0 {
		return errors.New("media has no codec")
	}
	var seen [128]bool
	audio := false
	for _, c := range m.Codecs {
		if err := c.Validate(); err != nil {
			return err
		}
		if seen[c.PayloadType] {
			return fmt.Errorf("payload type %d is used twice", c.PayloadType)
		}
		seen[c.PayloadType] = true
		audio = audio || !c.IsDTMF()
	}
	if !audio {
		return errors.New("media has no audio codec, only telephone-event")
	}
	return nil
}

// String lists m's codecs as SDP's rtpmap writes them: "8 PCMA/8000, 101
// telephone-event/8000".
func (m Media) String() string {
	names := make([]string, len(m.Codecs))
	for i, c := range m.Codecs {
		names[i] = c.String()
	}
	return strings.Join(names, ", ")
}

// DTMF returns the telephone-event codec of m, if any.
func (m Media) DTMF() (Codec, bool) {
	for _, c := range m.Codecs {
		if c.IsDTMF() {
			return c, true
		}
	}
	return Codec{}, false
}

// CallInvite starts a call: From calls To. Header.ID is the event's source
// ID; Call identifies the call on the sender's network.
type CallInvite struct {
	Header
	Call string
	// Offer is the caller's media offer.
	Offer Media
}

// CallRinging says the callee's device is alerting (SIP 180, JMI ringing).
// With EarlyMedia set it also sends media before the answer (SIP 183 with
// SDP), in the format of Media.
type CallRinging struct {
	Header
	Call       string
	EarlyMedia bool
	// Media is the early media's answer; set only with EarlyMedia.
	Media Media
}

// CallAnswer says the callee answered (SIP 200, m.call.answer, Jingle
// session-accept), with the codecs chosen from the offer.
type CallAnswer struct {
	Header
	Call   string
	Answer Media
}

// CallHangup ends a leg, in any state: before an answer it is a cancel, a
// refusal or a timeout; after it a hangup.
type CallHangup struct {
	Header
	Call   string
	Reason HangupReason
	// Text is an optional human-readable explanation (a SIP reason phrase,
	// the text of a Jingle <reason/>).
	Text string
}

// CallUpdate is a new offer in an answered call that the leg cannot answer
// alone: a SIP re-INVITE (or, later, a Jingle content-modify) that changes
// the codec. Parley forwards media untouched, so the other leg must change
// to the same codec first: the core offers it there (bridges.CallUpdater)
// and the leg answers with what that leg accepted. A re-offer that keeps
// the call's codec (a hold, a new address) is the leg's own business and
// never becomes a CallUpdate.
type CallUpdate struct {
	Header
	Call string
	// Offer is the leg's new offer, numbered as its party numbers it.
	Offer Media
}

// Kind implements Event.
func (*CallInvite) Kind() Kind { return KindCallInvite }

// Kind implements Event.
func (*CallRinging) Kind() Kind { return KindCallRinging }

// Kind implements Event.
func (*CallAnswer) Kind() Kind { return KindCallAnswer }

// Kind implements Event.
func (*CallHangup) Kind() Kind { return KindCallHangup }

// Kind implements Event.
func (*CallUpdate) Kind() Kind { return KindCallUpdate }

// HangupReason is the closed set of reasons a call or a leg ends. Each network
// has its own words for them; package calls holds the one table that maps
// them to SIP status codes and Reason headers, Matrix hangup reasons and
// Jingle <reason/> conditions (docs/calls.md).
type HangupReason uint8

// The hangup reasons. The zero value is not a reason: a hangup always says
// why.
const (
	// HangupNormal: a party hung up an answered call.
	HangupNormal HangupReason = iota + 1
	// HangupBusy: the callee is busy (SIP 486, Matrix user_busy).
	HangupBusy
	// HangupDeclined: the callee refused the call (SIP 603, m.call.reject).
	HangupDeclined
	// HangupNoAnswer: the callee rang but nobody answered in time.
	HangupNoAnswer
	// HangupCancelled: the caller gave up before the answer.
	HangupCancelled
	// HangupAnsweredElsewhere: another device of the callee answered.
	HangupAnsweredElsewhere
	// HangupMediaTimeout: no media flowed for the configured time.
	HangupMediaTimeout
	// HangupMediaFailed: no media path could be set up (ICE or DTLS failed,
	// or a client could not capture audio).
	HangupMediaFailed
	// HangupNotFound: the callee does not exist.
	HangupNotFound
	// HangupUnavailable: the callee exists but no device of theirs can be
	// reached now.
	HangupUnavailable
	// HangupForbidden: the caller may not make this call.
	HangupForbidden
	// HangupIncompatibleMedia: the legs share no codec.
	HangupIncompatibleMedia
	// HangupFailure: anything else went wrong (a server error, a crash).
	HangupFailure
)

var hangupNames = [...]string{
	HangupNormal:            "normal",
	HangupBusy:              "busy",
	HangupDeclined:          "declined",
	HangupNoAnswer:          "no-answer",
	HangupCancelled:         "cancelled",
	HangupAnsweredElsewhere: "answered-elsewhere",
	HangupMediaTimeout:      "media-timeout",
	HangupMediaFailed:       "media-failed",
	HangupNotFound:          "not-found",
	HangupUnavailable:       "unavailable",
	HangupForbidden:         "forbidden",
	HangupIncompatibleMedia: "incompatible-media",
	HangupFailure:           "failure",
}

// HangupReasons lists every HangupReason, for metrics and exhaustive tests.
var HangupReasons = []HangupReason{
	HangupNormal, HangupBusy, HangupDeclined, HangupNoAnswer, HangupCancelled, HangupAnsweredElsewhere,
	HangupMediaTimeout, HangupMediaFailed, HangupNotFound, HangupUnavailable, HangupForbidden,
	HangupIncompatibleMedia, HangupFailure,
}

// Valid reports whether r is one of the hangup reasons.
func (r HangupReason) Valid() bool { return r > 0 && int(r) < len(hangupNames) }

// String returns the lowercase name of r, as used in metrics.
func (r HangupReason) String() string {
	if r.Valid() {
		return hangupNames[r]
	}
	return "unknown"
}

// ParseHangupReason reverses HangupReason.String.
func ParseHangupReason(s string) (HangupReason, bool) {
	for _, r := range HangupReasons {
		if hangupNames[r] == s {
			return r, true
		}
	}
	return 0, false
}

// CallOf returns the leg ID (Call) of a call event, and false for any other
// event.
func CallOf(evt Event) (string, bool) {
	switch e := evt.(type) {
	case *CallInvite:
		return e.Call, true
	case *CallRinging:
		return e.Call, true
	case *CallAnswer:
		return e.Call, true
	case *CallHangup:
		return e.Call, true
	case *CallUpdate:
		return e.Call, true
	}
	return "", false
}
