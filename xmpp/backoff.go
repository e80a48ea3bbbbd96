package xmpp

import (
	"math/rand/v2"
	"time"
)

// backoff is the reconnection policy: delays double from min up to max, with
// jitter, and start again from min after a connection that stayed up for
// reset.
type backoff struct {
	min, max, reset time.Duration
}

var defaultBackoff = backoff{min: 500 * time.Millisecond, max: 30 * time.Second, reset: time.Minute}

// delay returns how long to wait before reconnection attempt n (from 0): a
// random duration in [d/2, d], where d = min·2ⁿ capped at max.
func (b backoff) delay(n int) time.Duration {
	d := b.max
	if n < 32 {
		if x := b.min << n; x > 0 && x < b.max {
			d = x
		}
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(d-half+1)
}
