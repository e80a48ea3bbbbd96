package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// Presence (Matrix spec, Client-Server API, "Presence", and Application
// Service API, "Pushing events" with MSC2409 ephemeral events).
//
// Outbound: Matrix presence is global per user, not per watcher, so a
// Presence from the core sets the ghost's own presence with
// PUT /_matrix/client/v3/presence/{ghost}/status as the ghost; Parley's
// states map to online, unavailable (with a status_msg that names the
// nuance) and offline. Matrix has no subscription handshake: whoever shares
// a room with the ghost sees its presence, so a Subscription is a no-op.
//
// Inbound: the homeserver pushes m.presence as an ephemeral event of a
// transaction, or, where it does not, the adapter polls it; the adapter
// dispatches it broadcast (To zero) and the core sends it to every
// recorded watcher of the user. What each homeserver does,
// measured against the real servers (TestIntegration*Presence) and read in
// their source:
//
//   - Synapse (1.163) pushes m.presence to an appservice whose registration
//     sets receive_ephemeral (under "ephemeral", and also under
//     "de.sorunome.msc2409.ephemeral" when the unstable flag is set too, as
//     Registration does: synapse/appservice/api.py sends the same list
//     under both, so only one is read). It pushes a user's presence when
//     the user is in the appservice's namespaces (our own ghosts: ignored
//     here) or shares a room with one of them
//     (ApplicationService.is_interested_in_presence), so a Matrix user's
//     presence reaches Parley once they have a DM with a ghost.
//     Synapse times out the presence of a user that does not sync: a ghost
//     set online was measured offline 34 s later
//     (presence.sync_online_timeout, 30 s by default, plus its 5 s timer;
//     per handle_timeout the same holds for unavailable).
//     So the adapter sets the presence of every ghost that is not offline
//     again every presenceRefresh (refreshPresence); when Parley stops, its
//     ghosts go offline by themselves half a minute later.
//     A real user whose client syncs with the default set_presence=online is
//     set online again by their next /sync right after a PUT of
//     unavailable: Parley sees (and dispatches) both changes.
//   - Dendrite (0.15) pushes no ephemeral events to appservices at all
//     (measured with presence enabled: no "ephemeral" in any transaction).
//     With its default config (global.presence.enable_outbound false, as in
//     internal/peertest unless HomeserverOptions.Presence) it answers a
//     presence PUT with 200 and drops it, and a /sync sets nothing, so every
//     user's presence reads as "" and /sync carries none. With enable_outbound
//     (enable_inbound only concerns federation), a PUT is stored and read back
//     by GET /presence/{userId}/status, and a /sync with set_presence=online
//     sets the user online; a /sync with set_presence=offline does not undo a
//     PUT (measured 12 s after an unavailable PUT: still unavailable; per
//     syncapi/sync/requestpool.go a sync only publishes a change of what syncs
//     set), except the first /sync of a user since Dendrite started, which
//     publishes its state (measured: a PUT before it was lost). A PUT without status_msg (or with null) keeps the previous one, so
//     the adapter always sends one, "" to clear it. A PUT is applied
//     asynchronously: a GET right after it may still read the previous state.
//     Dendrite answers that GET to any user of the appservice, shared room or
//     not (clientapi/routing/presence.go), reads a user who never had presence
//     as "", and a remote user as "unavailable" (measured with federation off:
//     the answer of its error path), so remote users are not polled. So Parley
//     polls (presencepoll.go): for each real user of the homeserver's server
//     with a DM with a ghost, it GETs the presence as that ghost (Synapse
//     would refuse the bot: it answers 403 to users who share no room,
//     synapse/rest/client/presence.py) every Config.PresencePollInterval, and
//     a change of presence or status_msg is dispatched like a pushed
//     m.presence. "auto" (the default) polls every 30 s until the first
//     m.presence push, so on Synapse it stops as soon as presence is pushed,
//     and on Dendrite it never stops; observePresence de-duplicates what is
//     both pushed and polled. A /sync per ghost was the other way: Dendrite
//     gives a ghost's /sync the presence of the users it shares a DM with, but
//     it needs one long-poll per ghost and each sets the syncing ghost's
//     presence, clobbering what Parley set. e2e/presence_dendrite_test.go
//     carries it to XMPP and SIP watchers.

// presenceRefresh is how often the adapter sets the presence of its ghosts
// that are not offline again, below Synapse's default
// presence.sync_online_timeout (30 s) after which a user that does not sync
// is offline.
const presenceRefresh = 20 * time.Second

// presenceOf is what the adapter last set as a ghost's presence.
type presenceOf struct {
	presence mevent.Presence
	status   string
}

// matrixPresence maps a Parley state and status text to Matrix presence and
// status_msg: the states Matrix has no word for become unavailable, with
// the state named in status_msg when the status text is empty.
func matrixPresence(state event.PresenceState, status string) presenceOf {
	var (
		p      mevent.Presence
		prefix string
	)
	switch state {
	case event.Available:
		p = mevent.PresenceOnline
	case event.Away:
		p, prefix = mevent.PresenceUnavailable, "Away"
	case event.ExtendedAway:
		p, prefix = mevent.PresenceUnavailable, "Extended away"
	case event.DoNotDisturb:
		p, prefix = mevent.PresenceUnavailable, "Do not disturb"
	case event.OnThePhone:
		p, prefix = mevent.PresenceUnavailable, "On the phone"
	default:
		p = mevent.PresenceOffline
	}
	if status == "" {
		status = prefix
	}
	return presenceOf{p, status}
}

// parleyPresence maps Matrix presence to a Parley state; ok is false for an
// unknown value.
func parleyPresence(p mevent.Presence) (state event.PresenceState, ok bool) {
	switch p {
	case mevent.PresenceOnline:
		return event.Available, true
	case mevent.PresenceUnavailable:
		return event.Away, true
	case mevent.PresenceOffline:
		return event.Offline, true
	}
	return event.Offline, false
}

// sendPresence sets the presence of the ghost p.From. p.To (the watcher the
// core delivers to) does not matter: Matrix presence is one per user. The
// request is skipped when the ghost's presence is already what p asks, as
// far as this process knows: the core sends the same update once per
// watcher.
func (a *Adapter) sendPresence(ctx context.Context, p *event.Presence) (string, error) {
	ghost := id.UserID(p.From.ID)
	if p.From.Network != event.Matrix || !a.owns(ghost) || !validUserID(ghost.String()) || ghost == a.bot {
		return "", bridges.Permanent(fmt.Errorf("send presence to matrix: sender %s is not a ghost of the appservice", p.From))
	}
	want := matrixPresence(p.State, p.Status)

	unlock := a.pairs.Lock("presence:" + ghost.String())
	defer unlock()
	a.mu.Lock()
	cur, known := a.presence[ghost]
	a.mu.Unlock()
	if known && cur == want {
		return "", nil
	}
	if !known && want == (presenceOf{presence: mevent.PresenceOffline}) {
		// A ghost not yet registered is offline already: registering
		// it to say so would cost the homeserver an account for every
		// XMPP or SIP user who merely watches someone.
		if registered, err := a.isRegistered(ctx, ghost); err != nil {
			return "", a.classify(err)
		} else if !registered {
			return "", nil
		}
	}
	if err := a.ensureRegistered(ctx, ghost); err != nil {
		return "", a.classify(fmt.Errorf("register ghost %s: %w", ghost, err))
	}
	a.ensureDisplayName(ctx, ghost, p.FromName)
	if err := a.setPresence(ctx, ghost, want); err != nil {
		return "", a.classify(err)
	}
	a.mu.Lock()
	a.presence[ghost] = want
	a.mu.Unlock()
	return "", nil
}

// setPresence sets the presence of ghost. The caller holds the ghost's
// presence lock.
func (a *Adapter) setPresence(ctx context.Context, ghost id.UserID, p presenceOf) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	// status_msg is always sent, "" included: Dendrite keeps the previous
	// one when it is absent (mautrix's ReqPresence omits an empty one).
	c := a.client(ghost)
	body := struct {
		Presence  mevent.Presence `json:"presence"`
		StatusMsg string          `json:"status_msg"`
	}{p.presence, p.status}
	_, err := c.MakeRequest(ctx, http.MethodPut, c.BuildClientURL("v3", "presence", ghost, "status"), body, nil)
	if err != nil {
		return fmt.Errorf("set presence of %s: %w", ghost, err)
	}
	return nil
}

// refreshPresence sets the presence of every ghost that is not offline
// again every a.refreshing, so that Synapse does not time it out, until ctx
// is done; then it closes done. Failures are logged: the next round tries
// again.
func (a *Adapter) refreshPresence(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(a.refreshing)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.mu.Lock()
		ghosts := make(map[id.UserID]presenceOf, len(a.presence))
		for g, p := range a.presence {
			if p.presence != mevent.PresenceOffline {
				ghosts[g] = p
			}
		}
		a.mu.Unlock()
		for ghost, p := range ghosts {
			if ctx.Err() != nil {
				return
			}
			a.refreshOne(ctx, ghost, p)
		}
	}
}

// refreshOne sets the presence of ghost to p again, unless a Send changed
// it meanwhile.
func (a *Adapter) refreshOne(ctx context.Context, ghost id.UserID, p presenceOf) {
	unlock := a.pairs.Lock("presence:" + ghost.String())
	defer unlock()
	a.mu.Lock()
	cur, ok := a.presence[ghost]
	a.mu.Unlock()
	if !ok || cur != p {
		return
	}
	if err := a.setPresence(ctx, ghost, p); err != nil && ctx.Err() == nil {
		a.log.Debug("ghost presence not refreshed", "ghost", ghost.String(), "err", err)
	}
}

// presenceEvent is an m.presence ephemeral event as a homeserver pushes it.
type presenceEvent struct {
	Sender  id.UserID       `json:"sender"`
	Content presenceContent `json:"content"`
}

// presenceContent is the content of an m.presence event, and the body of
// GET /presence/{userId}/status.
type presenceContent struct {
	Presence  mevent.Presence `json:"presence"`
	StatusMsg *string         `json:"status_msg"`
}

// parseEphemeral reads the m.presence events of a transaction's ephemeral
// list. Other types (typing, receipts) are passed over; entries that are not
// objects or whose fields have the wrong types are said in skipped.
func parseEphemeral(raw json.RawMessage) (presence []presenceEvent, skipped []error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, []error{errors.New("ephemeral is not an array")}
	}
	for i, entry := range entries {
		var head struct {
			Type string `json:"type"`
		}
		if !isObject(entry) || json.Unmarshal(entry, &head) != nil {
			skipped = append(skipped, fmt.Errorf("ephemeral[%d]: not an event object", i))
			continue
		}
		if head.Type != mevent.EphemeralEventPresence.Type {
			continue
		}
		var p presenceEvent
		if err := json.Unmarshal(entry, &p); err != nil {
			skipped = append(skipped, fmt.Errorf("ephemeral[%d]: %w", i, err))
			continue
		}
		presence = append(presence, p)
	}
	return presence, skipped
}

// handlePresence dispatches the presence of a real Matrix user, pushed by
// the homeserver, as broadcast presence (observePresence). Any m.presence
// pushed, even of our own ghosts, tells the poller that the homeserver
// pushes presence.
func (a *Adapter) handlePresence(ctx context.Context, p presenceEvent) {
	a.poll.pushed.Store(true)
	a.observePresence(ctx, p, true, 0)
}

// observePresence dispatches the presence of a real Matrix user as
// broadcast presence, when it differs from the one last dispatched for the
// user: the same change pushed and polled (Synapse with polling on) is
// dispatched once. pushed says the homeserver pushed p; otherwise a poll
// read it with a request that began after push number since, and p is
// dropped when a push of the user came meanwhile (it may be older).
// Presence of our ghosts and bot (Synapse pushes it too) is ignored.
// Presence is not durable: a Dispatch error is logged, never returned, so
// that it does not hold a transaction back; the same presence is then
// dispatched again when next seen.
func (a *Adapter) observePresence(ctx context.Context, p presenceEvent, pushed bool, since uint64) {
	if a.owns(p.Sender) {
		a.log.Debug("ignored presence of our own user", "user", p.Sender.String(), "presence", string(p.Content.Presence))
		return
	}
	if !validUserID(p.Sender.String()) {
		a.log.Warn("skipped presence of an invalid user ID", "sender", p.Sender.String())
		return
	}
	state, ok := parleyPresence(p.Content.Presence)
	if !ok {
		a.log.Warn("skipped presence with an unknown state", "sender", p.Sender.String(), "presence", string(p.Content.Presence))
		return
	}
	got := presenceOf{presence: p.Content.Presence}
	if p.Content.StatusMsg != nil {
		got.status = *p.Content.StatusMsg
	}
	unlock := a.pairs.Lock("presence-of:" + p.Sender.String())
	defer unlock()
	pp := a.poll
	pp.mu.Lock()
	last := pp.seen[p.Sender]
	switch {
	case pushed:
		pp.seq++
		last.pushSeq = pp.seq
		pp.seen[p.Sender] = last
	case last.pushSeq > since:
		pp.mu.Unlock()
		a.log.Debug("polled presence dropped: pushed meanwhile", "from", p.Sender.String())
		return
	}
	pp.mu.Unlock()
	if last.known && last.p == got {
		a.log.Debug("presence unchanged", "from", p.Sender.String(), "pushed", pushed)
		return
	}
	evt := &event.Presence{
		Header: event.Header{From: event.Address{Network: event.Matrix, ID: p.Sender.String()}},
		State:  state,
		Status: got.status,
	}
	host, _ := a.started()
	err := host.Dispatch(ctx, evt)
	switch {
	case err == nil:
		a.log.Debug("presence dispatched", "from", p.Sender.String(), "state", state.String(), "pushed", pushed)
	case errors.Is(err, bridges.ErrNoRoute), errors.Is(err, bridges.ErrRefused):
		a.log.Debug("presence not routed", "from", p.Sender.String(), "err", err)
	default:
		a.log.Warn("presence not dispatched", "from", p.Sender.String(), "err", err)
		return
	}
	pp.mu.Lock()
	cur := pp.seen[p.Sender]
	cur.p, cur.known = got, true
	pp.seen[p.Sender] = cur
	pp.mu.Unlock()
}
