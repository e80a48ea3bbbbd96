package event_test

import (
	"testing"

	"github.com/parleygw/parley/event"
)

func TestMerge(t *testing.T) {
	tests := []struct {
		name string
		in   []event.PresenceState
		want event.PresenceState
	}{
		{"nothing is offline", nil, event.Offline},
		{"all offline", []event.PresenceState{event.Offline, event.Offline}, event.Offline},
		{"most available wins", []event.PresenceState{event.DoNotDisturb, event.Away, event.Offline}, event.Away},
		{"available beats everything but a call", []event.PresenceState{event.ExtendedAway, event.Available, event.DoNotDisturb}, event.Available},
		{"on the phone wins", []event.PresenceState{event.Available, event.OnThePhone}, event.OnThePhone},
		{"dnd beats offline", []event.PresenceState{event.Offline, event.DoNotDisturb}, event.DoNotDisturb},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := event.Merge(tc.in...); got != tc.want {
				t.Errorf("Merge(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestKindsAreNamed(t *testing.T) {
	for _, k := range event.Kinds {
		if got, ok := event.ParseKind(k.String()); !ok || got != k {
			t.Errorf("kind %d does not round-trip through %q", k, k.String())
		}
	}
}
