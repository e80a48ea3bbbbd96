package sip

import (
	"math"
	"net/netip"
	"sync"
	"time"
)

// maxBuckets bounds the source addresses the rate limiter remembers. Beyond
// it, buckets that have refilled (sources that went quiet) are forgotten.
const maxBuckets = 16384

// rateLimiter is a token bucket per source IP address: each request takes a
// token; tokens come back at rate per second up to burst.
type rateLimiter struct {
	rate  float64
	burst float64

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), buckets: make(map[netip.Addr]*bucket)}
}

// allow takes a token for ip at now. When there is none, it returns false
// and how long until there is one.
func (l *rateLimiter) allow(ip netip.Addr, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[ip]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[ip] = b
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration(math.Ceil((1 - b.tokens) / l.rate * float64(time.Second)))
	return false, wait
}

func (l *rateLimiter) refill(b *bucket, now time.Time) {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = math.Min(l.burst, b.tokens+dt*l.rate)
		b.last = now
	}
}

// prune forgets the buckets that are full again and, if that is not
// enough, half of the others (in map order), so that the map stays bounded
// even under a flood of new sources.
func (l *rateLimiter) prune(now time.Time) {
	for ip, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, ip)
		}
	}
	if len(l.buckets) < maxBuckets {
		return
	}
	n := 0
	for ip := range l.buckets {
		delete(l.buckets, ip)
		if n++; n >= maxBuckets/2 {
			break
		}
	}
}
