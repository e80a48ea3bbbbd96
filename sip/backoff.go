package sip

import (
	"net/netip"
	"sync"
	"time"
)

// Back-off after failed digest authentications, per username and per
// source (see authBackoff).
const (
	// backoffFree is how many failures a username or a source may have
	// before it is backed off.
	backoffFree = 5
	// backoffBase is the first back-off; each further failure doubles it,
	// up to backoffMax.
	backoffBase = time.Second
	backoffMax  = 5 * time.Minute
	// backoffForget is how long after its last failure a key is forgotten
	// (its count starts again from zero).
	backoffForget = time.Hour
	// backoffKeys bounds the keys each table remembers.
	backoffKeys = 4096
	// backoffSample is how many keys are looked at to choose one to forget
	// when a table is full.
	backoffSample = 8
	// maxBackoffUser bounds the bytes of a username used as a key.
	maxBackoffUser = 64
	// goodSourceTTL is how long a source that authenticated as a user is
	// spared that user's back-off.
	goodSourceTTL = 24 * time.Hour
)

// failures counts the failed authentications of one key.
type failures struct {
	n     int
	last  time.Time
	until time.Time // backed off until then
}

// failureTable counts failures per key, for at most max keys: a full table
// forgets first the keys whose last failure is older than backoffForget,
// then, among a few keys taken at random, the one with the fewest failures.
// So an attacker who sprays new keys pushes out other sprayed keys (one
// failure each) before a key under a sustained attack. Not safe for
// concurrent use: authBackoff locks.
type failureTable[K comparable] struct {
	max     int
	entries map[K]*failures
	swept   time.Time // when evict last looked at every key
}

func newFailureTable[K comparable](max int) *failureTable[K] {
	return &failureTable[K]{max: max, entries: make(map[K]*failures)}
}

// blockedUntil returns when the back-off of key ends (the zero time or a
// past time when it is not backed off).
func (t *failureTable[K]) blockedUntil(key K, now time.Time) time.Time {
	f := t.entries[key]
	if f == nil {
		return time.Time{}
	}
	if now.Sub(f.last) > backoffForget {
		delete(t.entries, key)
		return time.Time{}
	}
	return f.until
}

// fail counts a failure of key at now and returns the back-off it starts
// (zero when none).
func (t *failureTable[K]) fail(key K, now time.Time) time.Duration {
	f := t.entries[key]
	if f != nil && now.Sub(f.last) > backoffForget {
		f = nil
	}
	if f == nil {
		if _, ok := t.entries[key]; !ok && len(t.entries) >= t.max {
			t.evict(now)
		}
		f = &failures{}
		t.entries[key] = f
	}
	f.n++
	f.last = now
	if f.n <= backoffFree {
		return 0
	}
	d := backoffMax
	if shift := f.n - backoffFree - 1; shift < 20 {
		d = min(backoffMax, backoffBase<<shift)
	}
	f.until = now.Add(d)
	return d
}

// forget drops key.
func (t *failureTable[K]) forget(key K) { delete(t.entries, key) }

// evict makes room for one key. It looks at every key for forgotten ones
// at most once a minute, so that a flood of new keys costs a few map reads
// each.
func (t *failureTable[K]) evict(now time.Time) {
	if now.Sub(t.swept) > time.Minute || now.Before(t.swept) {
		t.swept = now
		for k, f := range t.entries {
			if now.Sub(f.last) > backoffForget {
				delete(t.entries, k)
			}
		}
		if len(t.entries) < t.max {
			return
		}
	}
	var victim K
	fewest, seen := -1, 0
	for k, f := range t.entries { // map order: a random start
		if fewest < 0 || f.n < fewest {
			victim, fewest = k, f.n
		}
		if seen++; seen >= backoffSample {
			break
		}
	}
	delete(t.entries, victim)
}

// goodSource is a source that authenticated as user.
type goodSource struct {
	user   string
	source netip.Addr
}

// authBackoff slows password guessing: after backoffFree failed digest
// authentications of one username (existing or not: the key is the name
// the client sent, so that back-off tells nothing of who exists) or from
// one source (an IPv4 address or an IPv6 /64), further credentials of that
// username or from that source are not checked for a back-off that starts
// at backoffBase and doubles with each failure up to backoffMax. A source
// that authenticated as a user in the last goodSourceTTL is spared that
// user's back-off, so that an attacker guessing a user's password does not
// lock out the user's registered phone. Memory is bounded: backoffKeys keys
// per table. Safe for concurrent use.
type authBackoff struct {
	mu      sync.Mutex
	users   *failureTable[string]
	sources *failureTable[netip.Addr]
	good    map[goodSource]time.Time
	swept   time.Time // when pruneGood last looked at every good source
}

func newAuthBackoff() *authBackoff {
	return &authBackoff{users: newFailureTable[string](backoffKeys), sources: newFailureTable[netip.Addr](backoffKeys),
		good: make(map[goodSource]time.Time)}
}

// sourceKey is the key of a source address: IPv4 as is, IPv6 by its /64
// (one subscriber's network has many addresses).
func sourceKey(src netip.Addr) netip.Addr {
	src = src.Unmap()
	if src.Is6() {
		p, _ := src.Prefix(64)
		return p.Addr()
	}
	return src
}

func userKey(user string) string {
	if len(user) > maxBackoffUser {
		return user[:maxBackoffUser]
	}
	return user
}

// blocked reports whether credentials of user from src must not be checked
// at now, and until when.
func (b *authBackoff) blocked(user string, src netip.Addr, now time.Time) (bool, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var until time.Time
	if src.IsValid() {
		until = b.sources.blockedUntil(sourceKey(src), now)
	}
	if u := b.users.blockedUntil(userKey(user), now); u.After(until) && !b.isGood(user, src, now) {
		until = u
	}
	return until.After(now), until
}

// fail counts a failed authentication of user from src at now and returns
// the longest back-off it starts (zero when none).
func (b *authBackoff) fail(user string, src netip.Addr, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.users.fail(userKey(user), now)
	if src.IsValid() {
		d = max(d, b.sources.fail(sourceKey(src), now))
	}
	return d
}

// succeed records that src authenticated as user at now: the source's
// failures are forgotten, and it is spared the user's back-off.
func (b *authBackoff) succeed(user string, src netip.Addr, now time.Time) {
	if !src.IsValid() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sources.forget(sourceKey(src))
	g := goodSource{user: user, source: sourceKey(src)}
	if _, ok := b.good[g]; !ok && len(b.good) >= backoffKeys {
		b.pruneGood(now)
	}
	b.good[g] = now
}

func (b *authBackoff) isGood(user string, src netip.Addr, now time.Time) bool {
	if !src.IsValid() {
		return false
	}
	at, ok := b.good[goodSource{user: user, source: sourceKey(src)}]
	return ok && now.Sub(at) <= goodSourceTTL
}

// pruneGood makes room for one good source: it forgets the expired ones
// (looking at all at most once a minute) or else the oldest of a few taken
// at random.
func (b *authBackoff) pruneGood(now time.Time) {
	if now.Sub(b.swept) > time.Minute || now.Before(b.swept) {
		b.swept = now
		for g, at := range b.good {
			if now.Sub(at) > goodSourceTTL {
				delete(b.good, g)
			}
		}
		if len(b.good) < backoffKeys {
			return
		}
	}
	var victim goodSource
	var oldest time.Time
	seen := 0
	for g, at := range b.good {
		if seen == 0 || at.Before(oldest) {
			victim, oldest = g, at
		}
		if seen++; seen >= backoffSample {
			break
		}
	}
	delete(b.good, victim)
}
