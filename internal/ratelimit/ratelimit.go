// Package ratelimit is a token bucket per key, for the adapters' limits on
// what one source may send: SIP requests per source address, XMPP
// subscription requests and probes per sender.
package ratelimit

import (
	"math"
	"sync"
	"time"
)

// Limiter is a token bucket per key: each request takes a token, and tokens
// come back at rate per second up to burst. It remembers at most max keys:
// beyond them it forgets the buckets that are full again (sources that went
// quiet) and, if that is not enough, half of the others, so that it stays
// bounded even under a flood of new sources. Safe for concurrent use.
type Limiter[K comparable] struct {
	rate, burst float64
	max         int

	mu      sync.Mutex
	buckets map[K]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a Limiter of rate tokens per second, burst at most, for at
// most max keys.
func New[K comparable](rate, burst float64, max int) *Limiter[K] {
	return &Limiter[K]{rate: rate, burst: burst, max: max, buckets: make(map[K]*bucket)}
}

// Allow takes a token of key at now. When there is none, it returns false
// and how long until there is one.
func (l *Limiter[K]) Allow(key K, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration(math.Ceil((1 - b.tokens) / l.rate * float64(time.Second)))
}

// Len returns the number of keys remembered.
func (l *Limiter[K]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

func (l *Limiter[K]) refill(b *bucket, now time.Time) {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = math.Min(l.burst, b.tokens+dt*l.rate)
		b.last = now
	}
}

// prune forgets the buckets that are full again and, if that is not enough,
// half of the others (in map order).
func (l *Limiter[K]) prune(now time.Time) {
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) < l.max {
		return
	}
	n := 0
	for k := range l.buckets {
		delete(l.buckets, k)
		if n++; n >= l.max/2 {
			break
		}
	}
}
