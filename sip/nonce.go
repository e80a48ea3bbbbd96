package sip

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash"
	"sync"
	"time"
)

// nonceSlots is how many nonces the adapter tracks at once. A nonce whose
// slot a newer nonce took is no longer known: a client that uses it is
// challenged again with stale=true and retries with a new one, as after a
// restart. 16384 slots (24 bytes each) hold every nonce of their 5-minute
// life up to about 54 challenges a second.
const nonceSlots = 1 << 14

// ncWindow is how far below the highest nonce count of a nonce a request may
// come (requests sent at once with one nonce may arrive out of order).
const ncWindow = 64

// nonceUse is what the nonce table says of one use of a nonce.
type nonceUse uint8

const (
	// nonceFresh: first use of this nonce count (or of this one-time
	// nonce).
	nonceFresh nonceUse = iota
	// nonceReplayed: the nonce count, or the one-time nonce, was used
	// before.
	nonceReplayed
	// nonceForgotten: the nonce is well formed and signed but no longer
	// known (its slot was taken by a newer nonce).
	nonceForgotten
)

// nonceTable issues nonces and remembers, for each, which nonce counts
// were used (RFC 2617 §3.2.2: "nc"), so that credentials cannot be
// replayed: with qop=auth each nonce count is accepted once, and without
// qop (RFC 2069 clients) a nonce is accepted once. It is what Kamailio's
// auth module does with nc_enabled and one_time_nonce_enabled.
//
// A nonce is base64url(issued ‖ id ‖ HMAC-SHA-256(issued ‖ id ‖ realm)[:16])
// under a key drawn at start: it cannot be forged, and one from before a
// restart is recognised as not ours. Its state lives in slot id mod
// nonceSlots, so memory is fixed whatever a client sends. Safe for
// concurrent use.
type nonceTable struct {
	key   []byte
	realm string
	macs  sync.Pool // of hash.Hash: HMAC-SHA256 keyed with key

	mu    sync.Mutex
	next  uint64
	slots []nonceSlot
}

// nonceSlot is the state of the nonce id: the highest nonce count used and a
// bitmap of the ncWindow counts at and below it (bit i: max-i was used).
// used marks a one-time nonce (no qop) as spent.
type nonceSlot struct {
	id   uint64
	max  uint32
	used bool
	seen uint64
}

func newNonceTable(key []byte, realm string) *nonceTable {
	return &nonceTable{key: key, realm: realm, next: 1, slots: make([]nonceSlot, nonceSlots)}
}

// issue returns a new nonce, issued at now.
func (t *nonceTable) issue(now time.Time) string {
	t.mu.Lock()
	id := t.next
	t.next++
	t.slots[id%nonceSlots] = nonceSlot{id: id}
	t.mu.Unlock()
	var raw [32]byte
	binary.BigEndian.PutUint64(raw[:8], uint64(now.UnixNano()))
	binary.BigEndian.PutUint64(raw[8:16], id)
	copy(raw[16:], t.mac(raw[:16]))
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// mac signs b: the first 16 bytes of HMAC-SHA256 over b and the realm. The
// HMAC states are pooled (keyed once), as every authenticated request
// checks a nonce.
func (t *nonceTable) mac(b []byte) []byte {
	m, _ := t.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, t.key)
	}
	m.Reset()
	m.Write(b)
	m.Write([]byte(t.realm))
	var sum [sha256.Size]byte
	out := m.Sum(sum[:0])[:16]
	t.macs.Put(m)
	return out
}

// open checks that nonce is one of this table's (signed with its key) and
// returns its id and when it was issued.
func (t *nonceTable) open(nonce string) (id uint64, issued time.Time, ok bool) {
	if base64.RawURLEncoding.DecodedLen(len(nonce)) != 32 {
		return 0, time.Time{}, false
	}
	var raw [32]byte
	if n, err := base64.RawURLEncoding.Strict().Decode(raw[:], []byte(nonce)); err != nil || n != 32 {
		return 0, time.Time{}, false
	}
	if !hmac.Equal(raw[16:], t.mac(raw[:16])) {
		return 0, time.Time{}, false
	}
	return binary.BigEndian.Uint64(raw[8:16]), time.Unix(0, int64(binary.BigEndian.Uint64(raw[:8]))), true
}

// use records one use of nonce id with nonce count nc (0 for a request
// without qop, which spends the nonce) and says whether it is the first.
func (t *nonceTable) use(id uint64, nc uint32) nonceUse {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &t.slots[id%nonceSlots]
	if s.id != id {
		return nonceForgotten
	}
	if nc == 0 {
		if s.used || s.max != 0 {
			return nonceReplayed
		}
		s.used = true
		return nonceFresh
	}
	if s.used {
		return nonceReplayed
	}
	switch {
	case nc > s.max:
		if shift := nc - s.max; shift >= ncWindow {
			s.seen = 1
		} else {
			s.seen = s.seen<<shift | 1
		}
		s.max = nc
		return nonceFresh
	case s.max-nc >= ncWindow:
		return nonceReplayed
	default:
		bit := uint64(1) << (s.max - nc)
		if s.seen&bit != 0 {
			return nonceReplayed
		}
		s.seen |= bit
		return nonceFresh
	}
}
