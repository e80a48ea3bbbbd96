package peertest

import (
	"math"
	"testing"
)

func TestToneShare(t *testing.T) {
	const rate = 8000
	tone := func(hz float64) []float64 {
		s := make([]float64, rate)
		for i := range s {
			s[i] = 0.3 * math.Sin(2*math.Pi*hz*float64(i)/rate)
		}
		return s
	}
	if v := ToneShare(tone(440), rate, 440, 0); v < 0.9 {
		t.Errorf("440 Hz in a 440 Hz tone: %.3f", v)
	}
	if v := ToneShare(tone(1000), rate, 440, 0); v > 0.01 {
		t.Errorf("440 Hz in a 1 kHz tone: %.3f", v)
	}
	if v := ToneShare(make([]float64, rate), rate, 440, 0); v != 0 {
		t.Errorf("440 Hz in silence: %.3f", v)
	}
}
