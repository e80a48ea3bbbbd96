package matrix

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
)

// Presence polling: the fallback for homeservers that push no m.presence
// to appservices (Dendrite 0.15; presence.go has the measurements).
//
// The users polled are the real users of the homeserver's own server name
// who have a DM with a ghost: those whose presence Synapse would push. The
// adapter keeps them in memory, learned from its DM links (storeDM,
// forgetDM, and any DM room it reads or sends to, which covers DMs linked
// before polling existed), and durably in the link "presence:dms" (one
// "<ghost>|<user>" per line), read once before the first round, so that a
// restart polls the same users at once.
//
// Each round reads every such user's presence once, as a ghost that shares
// the DM (Synapse answers 403 to anyone else; Dendrite answers anyone), with
// at most pollConcurrency requests at a time, spread evenly over the
// interval. A round in which the homeserver failed (no answer, 429, 5xx,
// token refused) ends at once and the next starts after a backoff instead
// of the interval. A user whose presence or status_msg differs from the
// last seen, by a poll or a push, is dispatched like a pushed m.presence
// (observePresence); a poll whose request began before a push of the same
// user arrived is discarded, so that a slow answer never undoes a newer
// push. Remote users are not polled: Dendrite reads their presence as
// "unavailable".

// pollConcurrency bounds the presence requests in flight.
const pollConcurrency = 4

// dmsKey is the link that lists the DMs whose users are polled.
const dmsKey = "presence:dms"

// presencePoll is the state of presence polling and of the de-duplication
// of users' presence, shared by polls and pushes.
type presencePoll struct {
	every time.Duration // 0: polling is off
	auto  bool          // stop polling once the homeserver pushes presence

	writeMu sync.Mutex // serialises the changes of the "presence:dms" link

	mu     sync.Mutex
	dms    map[id.UserID]map[id.UserID]bool // user → ghosts with a DM with them
	loaded bool                             // dms holds what the link held
	seen   map[id.UserID]seenPresence       // what was last dispatched of each user
	seq    uint64                           // counts pushes
	fresh  []pollTarget                     // users whose first DM appeared, to poll at once
	wake   chan struct{}                    // says that fresh has users
	pushed atomic.Bool                      // the homeserver pushed m.presence
}

// seenPresence is a user's presence as last dispatched (when known), and
// the number of the last push of the user.
type seenPresence struct {
	p       presenceOf
	known   bool
	pushSeq uint64
}

func newPresencePoll(cfg Config) *presencePoll {
	every, auto, _ := cfg.presencePoll() // checked by Validate
	return &presencePoll{
		every: every,
		auto:  auto,
		dms:   map[id.UserID]map[id.UserID]bool{},
		seen:  map[id.UserID]seenPresence{},
		wake:  make(chan struct{}, 1),
	}
}

// running reports whether the poll loop runs (or will): it is on, and not
// stopped by a push in auto mode.
func (pp *presencePoll) running() bool {
	return pp.every > 0 && (!pp.auto || !pp.pushed.Load())
}

// polled reports whether the presence of user is polled: a real user of
// the homeserver's own server.
func (a *Adapter) polled(user id.UserID) bool {
	return a.poll.every > 0 && !a.owns(user) && validUserID(user.String()) && user.Homeserver() == a.cfg.ServerName
}

// trackDM records that ghost and user have a DM (active) or no longer have
// one (the pair's "dm:" link is gone), in memory and in the "presence:dms"
// link. It costs one map
// look-up when nothing changes. Store failures are logged: the next change
// writes the whole list again.
func (a *Adapter) trackDM(ctx context.Context, ghost, user id.UserID, active bool) {
	if !a.polled(user) || !a.owns(ghost) || ghost == a.bot {
		return
	}
	pp := a.poll
	pp.mu.Lock()
	unchanged := pp.loaded && pp.dms[user][ghost] == active
	pp.mu.Unlock()
	if unchanged {
		return
	}
	_, links := a.started()
	if !active {
		// An older room of the pair ended; a newer one may remain.
		if v, ok, err := links.Get(ctx, dmKey(ghost, user)); err == nil && ok && v != "" {
			return
		}
	}
	pp.writeMu.Lock()
	defer pp.writeMu.Unlock()
	a.loadDMs(ctx)
	pp.mu.Lock()
	changed := pp.dms[user][ghost] != active
	if active && len(pp.dms[user]) == 0 && pp.running() {
		pp.fresh = append(pp.fresh, pollTarget{user, ghost})
		select {
		case pp.wake <- struct{}{}:
		default:
		}
	}
	if active {
		if pp.dms[user] == nil {
			pp.dms[user] = map[id.UserID]bool{}
		}
		pp.dms[user][ghost] = true
	} else {
		delete(pp.dms[user], ghost)
		if len(pp.dms[user]) == 0 {
			delete(pp.dms, user)
			delete(pp.seen, user)
		}
	}
	value, loaded := pp.dmsValue(), pp.loaded
	pp.mu.Unlock()
	if !changed || !loaded {
		return
	}
	if err := links.Put(ctx, dmsKey, value); err != nil {
		a.log.Warn("presence polling: dm list not stored", "err", err)
	}
}

// loadDMs merges the "presence:dms" link into memory, once. The caller
// holds writeMu.
func (a *Adapter) loadDMs(ctx context.Context) {
	pp := a.poll
	pp.mu.Lock()
	loaded := pp.loaded
	pp.mu.Unlock()
	if loaded {
		return
	}
	_, links := a.started()
	v, _, err := links.Get(ctx, dmsKey)
	if err != nil {
		a.log.Warn("presence polling: dm list not read", "err", err)
		return
	}
	pp.mu.Lock()
	defer pp.mu.Unlock()
	for line := range strings.SplitSeq(v, "\n") {
		ghost, user, ok := parsePair(line)
		if !ok || !a.polled(user) || !a.owns(ghost) || ghost == a.bot {
			continue
		}
		if pp.dms[user] == nil {
			pp.dms[user] = map[id.UserID]bool{}
		}
		pp.dms[user][ghost] = true
	}
	pp.loaded = true
}

// dmsValue is the "presence:dms" link's value for dms, sorted. The caller
// holds mu.
func (pp *presencePoll) dmsValue() string {
	var pairs []string
	for user, ghosts := range pp.dms {
		for ghost := range ghosts {
			pairs = append(pairs, pairValue(ghost, user))
		}
	}
	slices.Sort(pairs)
	return strings.Join(pairs, "\n")
}

// pollTarget is a user to poll and the ghost to ask as.
type pollTarget struct{ user, ghost id.UserID }

// targets returns the users to poll, each with the first of their ghosts.
// The users waiting to be polled at once are among them: that list is
// emptied.
func (pp *presencePoll) targets() []pollTarget {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.fresh = nil
	out := make([]pollTarget, 0, len(pp.dms))
	for user, ghosts := range pp.dms {
		var first id.UserID
		for g := range ghosts {
			if first == "" || g < first {
				first = g
			}
		}
		if first != "" {
			out = append(out, pollTarget{user, first})
		}
	}
	slices.SortFunc(out, func(x, y pollTarget) int { return strings.Compare(string(x.user), string(y.user)) })
	return out
}

// pollPresence polls users' presence round after round until ctx is done,
// or, in auto mode, until the homeserver pushes presence. It closes done
// when it returns, after the requests in flight.
func (a *Adapter) pollPresence(ctx context.Context, done chan struct{}) {
	defer close(done)
	pp := a.poll
	if pp.every <= 0 {
		return
	}
	a.log.Info("presence polling on", "interval", pp.every, "auto", pp.auto)
	backoff := bridges.Backoff{Min: pp.every, Max: 10 * pp.every}
	failures := 0
	for ctx.Err() == nil {
		if !pp.running() {
			a.log.Info("presence polling off: the homeserver pushes presence")
			return
		}
		pp.writeMu.Lock()
		a.loadDMs(ctx)
		pp.writeMu.Unlock()
		err := a.pollRound(ctx, pp.targets())
		if err == nil {
			failures = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		delay := backoff.Delay(failures)
		failures++
		a.log.Warn("presence polling: homeserver failed", "err", err, "retry_in", delay)
		if !sleep(ctx, delay) {
			return
		}
	}
}

// pollRound polls each target once, one every interval/len(targets), so
// that the round lasts about the interval (a round with no targets just
// waits for it), at most pollConcurrency at a time. Users whose first DM
// appears meanwhile are polled at once. It returns the first failure of the
// homeserver, after which it starts no more requests; it returns once its
// requests are done.
func (a *Adapter) pollRound(ctx context.Context, targets []pollTarget) error {
	every := a.poll.every
	r := &pollRun{a: a, sem: make(chan struct{}, pollConcurrency)}
	defer r.wg.Wait()
	if len(targets) == 0 {
		r.wait(ctx, every)
		return r.err()
	}
	step := every / time.Duration(len(targets))
	for _, tg := range targets {
		if !r.start(ctx, tg) || !r.wait(ctx, step) {
			return ctx.Err()
		}
		if err := r.err(); err != nil {
			return err
		}
	}
	r.wg.Wait()
	return r.err()
}

// pollRun is the requests of one round.
type pollRun struct {
	a   *Adapter
	sem chan struct{}
	wg  sync.WaitGroup

	mu     sync.Mutex
	failed error
}

func (r *pollRun) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// start polls tg in the background once fewer than pollConcurrency
// requests are in flight; it reports false when ctx ended first.
func (r *pollRun) start(ctx context.Context, tg pollTarget) bool {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() { <-r.sem }()
		if err := r.a.pollOne(ctx, tg); err != nil {
			r.mu.Lock()
			if r.failed == nil {
				r.failed = err
			}
			r.mu.Unlock()
		}
	}()
	return true
}

// wait waits d, polling meanwhile the users whose first DM appeared; it
// reports false when ctx ended first.
func (r *pollRun) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	pp := r.a.poll
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-pp.wake:
			pp.mu.Lock()
			fresh := pp.fresh
			pp.fresh = nil
			pp.mu.Unlock()
			for _, tg := range fresh {
				if !r.start(ctx, tg) {
					return false
				}
			}
		}
	}
}

// pollOne reads the presence of tg.user as tg.ghost and dispatches it if it
// changed. It returns an error only when the homeserver failed as a whole;
// an answer about this user alone (403, 404) is logged.
func (a *Adapter) pollOne(ctx context.Context, tg pollTarget) error {
	pp := a.poll
	pp.mu.Lock()
	since := pp.seq
	pp.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := a.client(tg.ghost).GetPresence(rctx, tg.user)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		err = fmt.Errorf("get presence of %s as %s: %w", tg.user, tg.ghost, err)
		if isTokenError(err) || !hasResponse(err) {
			a.checkAgain() // the state shows it
		}
		if isTransient(err) || isTokenError(err) {
			return err
		}
		a.log.Debug("presence not polled", "user", tg.user.String(), "err", err)
		return nil
	}
	if resp.Presence == "" {
		// Dendrite with presence disabled, or a user who never had any.
		a.log.Debug("polled presence unknown", "user", tg.user.String())
		return nil
	}
	status := resp.StatusMsg
	a.observePresence(ctx, presenceEvent{Sender: tg.user, Content: presenceContent{
		Presence: resp.Presence, StatusMsg: &status,
	}}, false, since)
	return nil
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
