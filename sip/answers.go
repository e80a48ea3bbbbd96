package sip

import (
	"hash/maphash"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Retransmissions over UDP, without keeping transactions (RFC 3261 §17.2.2).
//
// A server transaction over UDP must answer a retransmission of its request
// with its final response again for Timer J (64·T1, 32 s) after sending it.
// sipgo does so by keeping the transaction for that long, with the parsed
// request and response: about 2.5 KB each, so 1,000 MESSAGEs a second (two
// transactions each, the challenge and the MESSAGE) kept some 150 MB alive.
// The adapter instead ends each transaction of a request other than INVITE
// as soon as it has answered, and keeps only what the answer needs to be
// sent again: its status, reason, extra headers and To tag, under a hash of
// the transaction's key (the top Via's branch and sent-by, and the method:
// what sipgo matches a retransmission by). A retransmission starts a new
// transaction, which the handler answers from there, without handling the
// request again.
//
// Challenges (401, 407) are not kept: answering them is stateless (RFC 3261
// §8.2.7: that role exists for challenges, so that a flood of
// unauthenticated requests creates no state), and a retransmission is
// simply challenged again.

// answerGenerations is how many generations of answers are kept; each
// covers ttl/(answerGenerations-1), so an answer is kept between ttl and
// ttl·answerGenerations/(answerGenerations-1).
const answerGenerations = 5

// maxAnswers bounds the answers kept; beyond it (a flood of requests),
// generations end early and a late retransmission is handled again, as a
// new request.
const maxAnswers = 1 << 17

// answer is what a final response needs to be sent again.
type answer struct {
	code    int
	reason  string
	headers []sip.Header
	toTag   string
}

// answers keeps the recent final responses of the adapter over UDP.
type answers struct {
	seed   maphash.Seed
	period time.Duration

	mu      sync.Mutex
	gens    [answerGenerations]map[uint64]answer // gens[0] is the newest
	count   int
	rotated time.Time
}

func newAnswers(ttl time.Duration) *answers {
	s := &answers{seed: maphash.MakeSeed(), period: ttl / (answerGenerations - 1)}
	for i := range s.gens {
		s.gens[i] = map[uint64]answer{}
	}
	return s
}

// txKey returns the key of tx when its request is one whose answer is kept
// here: a request other than INVITE (whose transaction also waits for an
// ACK) over an unreliable transport. Otherwise it returns "".
func txKey(req *sip.Request, tx sip.ServerTransaction) string {
	if req.IsInvite() || sip.IsReliable(req.Transport()) {
		return ""
	}
	if k, ok := tx.(interface{ Key() string }); ok {
		return k.Key()
	}
	return ""
}

// tag returns the To tag of the responses to the transaction key: derived
// from it, so that a response sent again carries the same tag (RFC 3261
// §8.2.6.2), and keyed by a random seed, so that no one can predict it.
func (s *answers) tag(key string) string {
	return strconv.FormatUint(maphash.String(s.seed, key), 16)
}

// get returns the answer kept for the transaction key.
func (s *answers) get(key string, now time.Time) (answer, bool) {
	h := maphash.String(s.seed, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rotateLocked(now)
	for _, g := range s.gens {
		if a, ok := g[h]; ok {
			return a, true
		}
	}
	return answer{}, false
}

// put keeps r, the final response to the transaction key.
func (s *answers) put(key string, r *reply, now time.Time) {
	h := maphash.String(s.seed, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rotateLocked(now)
	if s.count >= maxAnswers {
		s.shiftLocked()
		s.rotated = now
	}
	if _, ok := s.gens[0][h]; !ok {
		s.count++
	}
	s.gens[0][h] = answer{code: r.code, reason: r.reason, headers: r.headers, toTag: r.toTag}
}

// rotateLocked starts a new generation, dropping the oldest, for each
// period since the newest started.
func (s *answers) rotateLocked(now time.Time) {
	if s.rotated.IsZero() {
		s.rotated = now
		return
	}
	n := int(now.Sub(s.rotated) / s.period)
	if n <= 0 {
		return
	}
	if n >= answerGenerations {
		n, s.rotated = answerGenerations, now
	} else {
		s.rotated = s.rotated.Add(time.Duration(n) * s.period)
	}
	for range n {
		s.shiftLocked()
	}
}

// shiftLocked drops the oldest generation and starts a new one.
func (s *answers) shiftLocked() {
	oldest := s.gens[answerGenerations-1]
	s.count -= len(oldest)
	copy(s.gens[1:], s.gens[:answerGenerations-1])
	s.gens[0] = make(map[uint64]answer, len(oldest))
}

// resend answers req with the answer kept for its transaction, if any, and
// reports whether it did: req is then a retransmission, already handled.
func (a *Adapter) resend(req *sip.Request, tx sip.ServerTransaction) bool {
	key := txKey(req, tx)
	if key == "" {
		return false
	}
	ans, ok := a.answers.get(key, a.now())
	if !ok {
		return false
	}
	a.log.Debug("sip retransmission answered again", "method", string(req.Method), "status", ans.code, "source", req.Source())
	a.respond(req, tx, &reply{code: ans.code, reason: ans.reason, headers: ans.headers, toTag: ans.toTag})
	return true
}
