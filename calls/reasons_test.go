package calls_test

import (
	"testing"

	"github.com/parleygw/parley/calls"
	"github.com/parleygw/parley/event"
)

// TestReasonTable checks every row both ways. Where a network has fewer words
// than Parley, the way back names the reason that word stands for (back*).
func TestReasonTable(t *testing.T) {
	n, m := event.HangupNormal, event.HangupFailure
	tests := []struct {
		reason                 event.HangupReason
		status                 int
		backStatus             event.HangupReason // 0: the row has no status
		header                 string
		matrix                 string
		backMatrix, backJingle event.HangupReason
		jingle                 string
	}{
		{event.HangupNormal, 0, 0, "Q.850;cause=16", "m.call.hangup user_hangup", n, n, "success"},
		{event.HangupBusy, 486, event.HangupBusy, "Q.850;cause=17", "m.call.hangup user_busy", event.HangupBusy, event.HangupBusy, "busy"},
		{event.HangupDeclined, 603, event.HangupDeclined, "Q.850;cause=21", "m.call.reject ", event.HangupDeclined, event.HangupDeclined, "decline"},
		{event.HangupNoAnswer, 408, event.HangupNoAnswer, "Q.850;cause=19", "m.call.hangup invite_timeout", event.HangupNoAnswer, event.HangupNoAnswer, "timeout"},
		// Matrix says user_hangup for a cancel; the state machine makes it one.
		{event.HangupCancelled, 487, event.HangupCancelled, "SIP;cause=487", "m.call.hangup user_hangup", n, event.HangupCancelled, "cancel"},
		{event.HangupAnsweredElsewhere, 0, 0, "SIP;cause=200", "m.call.hangup user_hangup", n, event.HangupCancelled, "cancel"},
		{event.HangupMediaTimeout, 0, 0, "Q.850;cause=102", "m.call.hangup ice_timeout", event.HangupMediaTimeout, event.HangupMediaTimeout, "connectivity-error"},
		{event.HangupMediaFailed, 0, 0, "Q.850;cause=47", "m.call.hangup ice_failed", event.HangupMediaFailed, event.HangupMediaFailed, "failed-transport"},
		{event.HangupNotFound, 404, event.HangupNotFound, "Q.850;cause=1", "m.call.hangup unknown_error", m, event.HangupUnavailable, "gone"},
		{event.HangupUnavailable, 480, event.HangupUnavailable, "Q.850;cause=20", "m.call.hangup unknown_error", m, event.HangupUnavailable, "gone"},
		{event.HangupForbidden, 403, event.HangupForbidden, "SIP;cause=403", "m.call.hangup unknown_error", m, event.HangupForbidden, "security-error"},
		{event.HangupIncompatibleMedia, 488, event.HangupIncompatibleMedia, "Q.850;cause=88", "m.call.hangup unknown_error", m, event.HangupIncompatibleMedia, "incompatible-parameters"},
		{event.HangupFailure, 500, event.HangupFailure, "Q.850;cause=41", "m.call.hangup unknown_error", m, m, "general-error"},
	}
	if len(tests) != len(event.HangupReasons) || len(calls.Reasons) != len(event.HangupReasons) {
		t.Fatalf("%d test rows and %d table rows for %d reasons", len(tests), len(calls.Reasons), len(event.HangupReasons))
	}
	for _, tc := range tests {
		t.Run(tc.reason.String(), func(t *testing.T) {
			row := calls.For(tc.reason)
			if row.Reason != tc.reason {
				t.Fatalf("For(%v) is the row of %v", tc.reason, row.Reason)
			}
			// Parley → networks.
			if row.SIPStatus != tc.status {
				t.Errorf("SIP status %d, want %d", row.SIPStatus, tc.status)
			}
			if got := row.SIPReasonProtocol + ";cause=" + itoa(row.SIPReasonCause); got != tc.header {
				t.Errorf("Reason header %s, want %s", got, tc.header)
			}
			if got := row.MatrixEvent + " " + row.MatrixReason; got != tc.matrix {
				t.Errorf("Matrix %q, want %q", got, tc.matrix)
			}
			if row.Jingle != tc.jingle {
				t.Errorf("Jingle %q, want %q", row.Jingle, tc.jingle)
			}
			// Networks → Parley.
			if tc.status != 0 {
				if got, ok := calls.FromSIPStatus(tc.status); !ok || got != tc.backStatus {
					t.Errorf("FromSIPStatus(%d) = %v, %v, want %v", tc.status, got, ok, tc.backStatus)
				}
			}
			if got, ok := calls.FromSIPReason(row.SIPReasonProtocol, row.SIPReasonCause); !ok || got != tc.reason {
				t.Errorf("FromSIPReason(%s) = %v, %v, want %v (the Reason header is exact both ways)", tc.header, got, ok, tc.reason)
			}
			if got := calls.FromMatrix(row.MatrixEvent, row.MatrixReason); got != tc.backMatrix {
				t.Errorf("FromMatrix(%s) = %v, want %v", tc.matrix, got, tc.backMatrix)
			}
			if got := calls.FromJingle(row.Jingle); got != tc.backJingle {
				t.Errorf("FromJingle(%s) = %v, want %v", tc.jingle, got, tc.backJingle)
			}
		})
	}
}

func TestReasonsFromOtherWords(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   event.HangupReason
		ok     bool
	}{
		{180, 0, false}, {200, 0, false}, {302, event.HangupFailure, true}, {600, event.HangupBusy, true},
		{604, event.HangupNotFound, true}, {606, event.HangupIncompatibleMedia, true}, {407, event.HangupForbidden, true},
		{503, event.HangupFailure, true}, {700, 0, false},
	} {
		if got, ok := calls.FromSIPStatus(tc.status); got != tc.want || ok != tc.ok {
			t.Errorf("FromSIPStatus(%d) = %v, %v, want %v, %v", tc.status, got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := calls.FromSIPReason("Q.850", 999); ok {
		t.Error("an unknown Q.850 cause was mapped")
	}
	if _, ok := calls.FromSIPReason("RELEASE", 16); ok {
		t.Error("an unknown protocol was mapped")
	}
	if got, _ := calls.FromSIPReason("q.850", 16); got != event.HangupNormal {
		t.Errorf("the protocol is case-sensitive: %v", got)
	}
	if got := calls.FromMatrix(calls.MatrixHangup, ""); got != event.HangupNormal {
		t.Errorf("a hangup without reason is %v", got)
	}
	if got := calls.FromJingle("no-such-condition"); got != event.HangupFailure {
		t.Errorf("an unknown Jingle condition is %v", got)
	}
	if got := calls.For(0); got.Reason != event.HangupFailure {
		t.Errorf("For(0) is the row of %v", got.Reason)
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}
