package calls

import (
	"strings"

	"github.com/parleygw/parley/event"
)

// Mapping is how one hangup reason is said on each network. Reasons is the
// one table of them; docs/calls.md shows the same table.
type Mapping struct {
	Reason event.HangupReason
	// SIPStatus is the final response Parley gives an INVITE it refuses for
	// this reason; 0 where none applies (a normal hangup is a BYE).
	SIPStatus int
	// SIPReasonProtocol and SIPReasonCause make the Reason header (RFC 3326)
	// Parley puts in a BYE or CANCEL it sends for this reason, e.g.
	// "Q.850;cause=16" or "SIP;cause=200;text=\"Call completed elsewhere\"".
	SIPReasonProtocol string
	SIPReasonCause    int
	SIPReasonText     string
	// MatrixEvent is the Matrix VoIP event type that ends the leg
	// (m.call.hangup, or m.call.reject for a callee that refuses), and
	// MatrixReason its reason field (Matrix client-server spec, VoIP).
	MatrixEvent  string
	MatrixReason string
	// Jingle is the condition element of a Jingle <reason/> (XEP-0166 §7.4).
	Jingle string
}

// The Matrix VoIP event types that end a call.
const (
	MatrixHangup = "m.call.hangup"
	MatrixReject = "m.call.reject"
)

// Reasons maps every event.HangupReason to each network, in the order of
// event.HangupReasons.
var Reasons = []Mapping{
	{event.HangupNormal, 0, "Q.850", 16, "Normal call clearing", MatrixHangup, "user_hangup", "success"},
	{event.HangupBusy, 486, "Q.850", 17, "User busy", MatrixHangup, "user_busy", "busy"},
	{event.HangupDeclined, 603, "Q.850", 21, "Call rejected", MatrixReject, "", "decline"},
	{event.HangupNoAnswer, 408, "Q.850", 19, "No answer", MatrixHangup, "invite_timeout", "timeout"},
	{event.HangupCancelled, 487, "SIP", 487, "Request terminated", MatrixHangup, "user_hangup", "cancel"},
	{event.HangupAnsweredElsewhere, 0, "SIP", 200, "Call completed elsewhere", MatrixHangup, "user_hangup", "cancel"},
	{event.HangupMediaTimeout, 0, "Q.850", 102, "Media timeout", MatrixHangup, "ice_timeout", "connectivity-error"},
	{event.HangupMediaFailed, 0, "Q.850", 47, "Media failed", MatrixHangup, "ice_failed", "failed-transport"},
	{event.HangupNotFound, 404, "Q.850", 1, "Unallocated number", MatrixHangup, "unknown_error", "gone"},
	{event.HangupUnavailable, 480, "Q.850", 20, "Subscriber absent", MatrixHangup, "unknown_error", "gone"},
	{event.HangupForbidden, 403, "SIP", 403, "Forbidden", MatrixHangup, "unknown_error", "security-error"},
	{event.HangupIncompatibleMedia, 488, "Q.850", 88, "Incompatible destination", MatrixHangup, "unknown_error", "incompatible-parameters"},
	{event.HangupFailure, 500, "Q.850", 41, "Temporary failure", MatrixHangup, "unknown_error", "general-error"},
}

// For returns the mapping of r; an invalid r gets HangupFailure's.
func For(r event.HangupReason) Mapping {
	for _, m := range Reasons {
		if m.Reason == r {
			return m
		}
	}
	return Reasons[len(Reasons)-1]
}

// FromSIPStatus returns the reason for a final response to an INVITE a
// callee leg sent (RFC 3261 §21, RFC 3398 for the causes). A 2xx or 1xx is
// not a hangup and gives false.
func FromSIPStatus(status int) (event.HangupReason, bool) {
	switch status {
	case 404, 410, 484, 604:
		return event.HangupNotFound, true
	case 480:
		return event.HangupUnavailable, true
	case 486, 600:
		return event.HangupBusy, true
	case 603, 607, 608:
		return event.HangupDeclined, true
	case 408:
		return event.HangupNoAnswer, true
	case 487:
		return event.HangupCancelled, true
	case 401, 403, 407:
		return event.HangupForbidden, true
	case 415, 488, 606:
		return event.HangupIncompatibleMedia, true
	}
	if status >= 300 && status < 700 {
		return event.HangupFailure, true
	}
	return 0, false
}

// FromSIPReason returns the reason for a Reason header (RFC 3326) in a BYE or
// CANCEL, given its protocol ("SIP" or "Q.850", any case) and cause. An
// unknown cause gives false: the leg then ends for the reason its method
// says (a BYE is normal, a CANCEL cancelled).
func FromSIPReason(protocol string, cause int) (event.HangupReason, bool) {
	switch {
	case strings.EqualFold(protocol, "SIP") && cause == 200:
		return event.HangupAnsweredElsewhere, true
	case strings.EqualFold(protocol, "SIP"):
		return FromSIPStatus(cause)
	case !strings.EqualFold(protocol, "Q.850"):
		return 0, false
	}
	switch cause {
	case 16, 31:
		return event.HangupNormal, true
	case 17:
		return event.HangupBusy, true
	case 21:
		return event.HangupDeclined, true
	case 18, 19:
		return event.HangupNoAnswer, true
	case 102:
		return event.HangupMediaTimeout, true
	case 26:
		return event.HangupAnsweredElsewhere, true
	case 47:
		return event.HangupMediaFailed, true
	case 1, 3, 22:
		return event.HangupNotFound, true
	case 20, 27:
		return event.HangupUnavailable, true
	case 57:
		return event.HangupForbidden, true
	case 58, 65, 88:
		return event.HangupIncompatibleMedia, true
	case 34, 38, 41, 42:
		return event.HangupFailure, true
	}
	return 0, false
}

// FromMatrix returns the reason for a Matrix event that ends a call leg: an
// m.call.reject (no reason field), or an m.call.hangup with its reason. A
// hangup without a reason, or with one the spec does not list, is normal.
// Matrix says user_hangup both for a hangup and for a caller who gives up
// before the answer; the state machine tells them apart by state.
func FromMatrix(eventType, reason string) event.HangupReason {
	if eventType == MatrixReject {
		return event.HangupDeclined
	}
	switch reason {
	case "user_busy":
		return event.HangupBusy
	case "invite_timeout":
		return event.HangupNoAnswer
	case "ice_timeout":
		return event.HangupMediaTimeout
	case "ice_failed", "user_media_failed":
		return event.HangupMediaFailed
	case "unknown_error":
		return event.HangupFailure
	}
	return event.HangupNormal
}

// FromJingle returns the reason for the condition of a Jingle <reason/>
// (XEP-0166 §7.4). An unknown condition is a failure.
func FromJingle(condition string) event.HangupReason {
	switch condition {
	case "success", "expired":
		return event.HangupNormal
	case "busy":
		return event.HangupBusy
	case "decline":
		return event.HangupDeclined
	case "timeout":
		return event.HangupNoAnswer
	case "cancel":
		return event.HangupCancelled
	case "connectivity-error":
		return event.HangupMediaTimeout
	case "failed-transport", "media-error":
		return event.HangupMediaFailed
	case "gone":
		return event.HangupUnavailable
	case "security-error":
		return event.HangupForbidden
	case "incompatible-parameters", "failed-application", "unsupported-applications", "unsupported-transports":
		return event.HangupIncompatibleMedia
	}
	return event.HangupFailure
}
