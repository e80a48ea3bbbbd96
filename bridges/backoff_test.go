package bridges

import (
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	tests := []struct {
		attempt int
		base    time.Duration
	}{
		{0, 500 * time.Millisecond},
		{1, time.Second},
		{2, 2 * time.Second},
		{5, 16 * time.Second},
		{6, 30 * time.Second},
		{40, 30 * time.Second},
		{1000, 30 * time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			d := b.Delay(tt.attempt)
			if d < tt.base/2 || d > tt.base {
				t.Fatalf("delay(%d) = %v, want in [%v, %v]", tt.attempt, d, tt.base/2, tt.base)
			}
		}
	}
}

func TestBackoffJitter(t *testing.T) {
	b := Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	seen := map[time.Duration]bool{}
	for range 20 {
		seen[b.Delay(3)] = true
	}
	if len(seen) < 2 {
		t.Errorf("delay(3) gave %d distinct values in 20 draws, want jitter", len(seen))
	}
}

func TestBackoffTiny(t *testing.T) {
	b := Backoff{Min: 1, Max: 1}
	if d := b.Delay(0); d != 1 {
		t.Errorf("delay = %v, want 1ns", d)
	}
}
