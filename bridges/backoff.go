package bridges

import (
	"math/rand/v2"
	"time"
)

// Backoff is the exponential backoff with jitter that Parley uses wherever it
// waits to try again: the router between Sends of one event, the adapters
// between reconnections.
type Backoff struct {
	Min, Max time.Duration
}

// Delay returns how long to wait before attempt n (from 0): a random duration
// in [d/2, d], where d = Min·2ⁿ capped at Max. The jitter keeps many
// conversations or connections that failed together from retrying together.
func (b Backoff) Delay(n int) time.Duration {
	d := b.Max
	if n >= 0 && n < 32 {
		if x := b.Min << n; x > 0 && x < b.Max {
			d = x
		}
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(d-half+1)
}
