package event_test

import (
	"strings"
	"testing"

	"github.com/parleygw/parley/event"
)

func TestCallEventKinds(t *testing.T) {
	for _, tc := range []struct {
		evt  event.Event
		want event.Kind
	}{
		{&event.CallInvite{}, event.KindCallInvite},
		{&event.CallRinging{}, event.KindCallRinging},
		{&event.CallAnswer{}, event.KindCallAnswer},
		{&event.CallHangup{}, event.KindCallHangup},
	} {
		if got := tc.evt.Kind(); got != tc.want {
			t.Errorf("%T.Kind() = %v, want %v", tc.evt, got, tc.want)
		}
	}
}

func TestHangupReasonsAreNamed(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range event.HangupReasons {
		name := r.String()
		if name == "unknown" || seen[name] {
			t.Errorf("reason %d has name %q (unknown or twice)", r, name)
		}
		seen[name] = true
		if got, ok := event.ParseHangupReason(name); !ok || got != r {
			t.Errorf("reason %d does not round-trip through %q", r, name)
		}
	}
	if event.HangupReason(0).Valid() {
		t.Error("the zero HangupReason is valid")
	}
}

func TestMediaValidate(t *testing.T) {
	pcmu := event.Codec{Name: "PCMU", ClockRate: 8000, PayloadType: 0}
	dtmf := event.Codec{Name: "telephone-event", ClockRate: 8000, PayloadType: 101, FMTP: "0-16"}
	tests := []struct {
		name  string
		media event.Media
		err   string
	}{
		{"g711 with dtmf", event.Media{Codecs: []event.Codec{pcmu, dtmf}}, ""},
		{"opus stereo", event.Media{Codecs: []event.Codec{{Name: "opus", ClockRate: 48000, Channels: 2, PayloadType: 111}}}, ""},
		{"empty", event.Media{}, "no codec"},
		{"only dtmf", event.Media{Codecs: []event.Codec{dtmf}}, "no audio codec"},
		{"payload type twice", event.Media{Codecs: []event.Codec{pcmu, {Name: "PCMA", ClockRate: 8000}}}, "used twice"},
		{"payload type above 127", event.Media{Codecs: []event.Codec{{Name: "x", ClockRate: 8000, PayloadType: 200}}}, "above 127"},
		{"no clock rate", event.Media{Codecs: []event.Codec{{Name: "PCMU"}}}, "no clock rate"},
		{"no name", event.Media{Codecs: []event.Codec{{ClockRate: 8000}}}, "no name"},
		{"slash in name", event.Media{Codecs: []event.Codec{{Name: "PCMU/8000", ClockRate: 8000}}}, "slash"},
		{"line break in fmtp", event.Media{Codecs: []event.Codec{{Name: "PCMU", ClockRate: 8000, FMTP: "a\r\nb=c"}}}, "line break"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.media.Validate()
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Validate() = %v, want an error with %q", err, tc.err)
			}
		})
	}
	if c, ok := (event.Media{Codecs: []event.Codec{pcmu, dtmf}}).DTMF(); !ok || c.PayloadType != 101 {
		t.Errorf("DTMF() = %v, %v", c, ok)
	}
	if !pcmu.Same(event.Codec{Name: "pcmu", ClockRate: 8000, Channels: 1, PayloadType: 96}) {
		t.Error("PCMU/8000 and pcmu/8000/1 are not the same format")
	}
	if got := (event.Codec{Name: "opus", ClockRate: 48000, Channels: 2, PayloadType: 111}).String(); got != "111 opus/48000/2" {
		t.Errorf("String() = %q", got)
	}
}
