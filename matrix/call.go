package matrix

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/calls"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/ratelimit"
	"github.com/parleygw/parley/media"
)

// Calls: Matrix VoIP, version "1" (client-server spec, "Voice over IP"),
// in the DM room of a Matrix user and a ghost.
//
//   - Inbound: an m.call.invite from the user to the ghost becomes an
//     event.CallInvite handed to the core (CallHost.Call) with a WebRTC
//     leg; the core's CallAnswer makes the leg's answer, sent as the
//     ghost's m.call.answer; the user's m.call.hangup or m.call.reject
//     becomes a CallHangup.
//   - Outbound: Invite sends the ghost's m.call.invite with the leg's
//     offer (every candidate in it: Parley does not trickle); the user's
//     first m.call.answer is selected (m.call.select_answer) and reported
//     as CallAnswer; m.call.reject or m.call.hangup as CallHangup; an
//     invite nobody answers within its lifetime is hung up (invite_timeout).
//
// Each live call is recorded in Links as "call:<call_id>" → callRecord, so
// that the next Start hangs up the calls a crash left behind. Events the
// appservice's own users sent come back in transactions and are ignored,
// as are events of another party than the selected one, and invites that
// are older than their lifetime. Malformed call events get a hangup with a
// reason, when they name a call.
//
// Glare (both sides invite each other at once): the call with the
// lexicographically lower call_id wins, as the spec says. When the user's
// invite has the lower ID, the ghost's own unanswered invite is hung up
// and the user's invite is handed to the core; otherwise the user's invite
// is ignored (the user's client answers the ghost's).

// Timings of calls.
const (
	// inviteLifetime is the lifetime of the invites Parley sends, in ms.
	inviteLifetime = 60000
	// callVersion is the Matrix VoIP version Parley speaks.
	callVersion = "1"
	// signalTimeout bounds the homeserver requests of one call signal.
	signalTimeout = 15 * time.Second
)

// Call keys in Links.
func callKey(callID string) string { return "call:" + callID }

// callRecord is what Links keeps of a live call: enough to hang it up.
type callRecord struct {
	Room    id.RoomID `json:"room"`
	Ghost   id.UserID `json:"ghost"`
	PartyID string    `json:"party_id"`
}

// mcall is one live Matrix call leg.
type mcall struct {
	id       string // Matrix call_id, also the leg's ID for the core
	room     id.RoomID
	ghost    id.UserID
	user     id.UserID
	party    string // our party_id
	outbound bool
	leg      *media.WebRTCLeg
	offer    string // inbound: the user's offer, answered on CallAnswer

	mu       sync.Mutex
	selected string // the remote party_id: the inviter's, or the answer selected
	answered bool
	ended    bool
	early    map[string][]mevent.CallCandidate // outbound: candidates before an answer, per party
	timer    *time.Timer
}

// callState is the adapter's table of live calls.
type callState struct {
	mu    sync.Mutex
	byID  map[string]*mcall
	media media.WebRTCConfig
	on    bool
	// invites limits the call invites of each Matrix user.
	invites *ratelimit.Limiter[id.UserID]
	// turn, with hsTURN, caches the homeserver's TURN servers
	// (/voip/turnServer) until turnUntil.
	hsTURN    bool
	turnMu    sync.Mutex
	turn      []media.ICEServer
	turnUntil time.Time
}

// WithCalls lets the adapter carry calls, with WebRTC legs made from cfg
// (cfg.Ports must be set). Without it the adapter ignores m.call.* events
// and refuses Invite.
func WithCalls(cfg media.WebRTCConfig) Option {
	return func(a *Adapter) {
		a.calls.media = cfg
		a.calls.on = cfg.Ports != nil
		a.calls.invites = ratelimit.New[id.UserID](calls.InvitesPerSecond, calls.InviteBurst, maxInviters)
	}
}

// What an outbound call keeps of the candidates of devices that have not
// answered yet.
const (
	maxEarlyParties    = 8
	maxEarlyCandidates = 32
)

// maxInviters is how many Matrix users the limit of call invites
// (calls.InviteBurst, calls.InvitesPerSecond) tracks at once.
const maxInviters = 16384

// WithHomeserverTURN adds the homeserver's TURN servers (its
// /voip/turnServer answer, asked as the bot and kept for half its TTL) to
// the ICE servers of every call's WebRTC leg.
func WithHomeserverTURN() Option { return func(a *Adapter) { a.calls.hsTURN = true } }

var _ bridges.CallNetwork = (*Adapter)(nil)

// legConfig is the configuration of a new WebRTC leg: WithCalls's, plus the
// homeserver's TURN servers when asked for. A homeserver without TURN, or
// one that fails to answer, leaves the configured servers alone.
func (a *Adapter) legConfig(ctx context.Context) media.WebRTCConfig {
	cfg := a.calls.media
	if !a.calls.hsTURN {
		return cfg
	}
	a.calls.turnMu.Lock()
	defer a.calls.turnMu.Unlock()
	if time.Now().After(a.calls.turnUntil) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := a.client(a.bot).TurnServer(ctx)
		switch {
		case err != nil:
			a.log.Debug("no TURN servers from the homeserver", "err", err)
			a.calls.turn, a.calls.turnUntil = nil, time.Now().Add(time.Minute)
		case len(resp.URIs) == 0:
			a.calls.turn, a.calls.turnUntil = nil, time.Now().Add(10*time.Minute)
		default:
			a.calls.turn = []media.ICEServer{{URLs: resp.URIs, Username: resp.Username, Credential: resp.Password}}
			a.calls.turnUntil = time.Now().Add(time.Duration(max(resp.TTL, 60)) * time.Second / 2)
		}
	}
	cfg.ICEServers = append(append([]media.ICEServer(nil), cfg.ICEServers...), a.calls.turn...)
	return cfg
}

func (a *Adapter) callHost() (bridges.CallHost, bool) {
	host, _ := a.started()
	ch, ok := host.(bridges.CallHost)
	return ch, ok && a.calls.on
}

func (a *Adapter) lookupCall(callID string) *mcall {
	a.calls.mu.Lock()
	defer a.calls.mu.Unlock()
	return a.calls.byID[callID]
}

func (a *Adapter) addCall(ctx context.Context, c *mcall) error {
	a.calls.mu.Lock()
	if a.calls.byID == nil {
		a.calls.byID = map[string]*mcall{}
	}
	if a.calls.byID[c.id] != nil {
		a.calls.mu.Unlock()
		return fmt.Errorf("call %s exists", c.id)
	}
	a.calls.byID[c.id] = c
	a.calls.mu.Unlock()
	_, links := a.started()
	rec, _ := json.Marshal(callRecord{Room: c.room, Ghost: c.ghost, PartyID: c.party})
	if err := links.Put(ctx, callKey(c.id), string(rec)); err != nil {
		a.log.Warn("call not recorded", "call", c.id, "err", err)
	}
	return nil
}

// endCall forgets c; it reports false when c had ended already.
func (a *Adapter) endCall(c *mcall) bool {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return false
	}
	c.ended = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	a.calls.mu.Lock()
	if a.calls.byID[c.id] == c {
		delete(a.calls.byID, c.id)
	}
	a.calls.mu.Unlock()
	_, links := a.started()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if err := links.Delete(ctx, callKey(c.id)); err != nil {
		a.log.Warn("call record not deleted", "call", c.id, "err", err)
	}
	return true
}

func newPartyID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "parley-" + hex.EncodeToString(b[:])
}

// validCallID reports whether s can be a Matrix call_id Parley sends.
func validCallID(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// sendCall sends a call event of type t as c's ghost into c's room.
func (a *Adapter) sendCall(ctx context.Context, c *mcall, t mevent.Type, content map[string]any) error {
	content["call_id"] = c.id
	content["party_id"] = c.party
	content["version"] = callVersion
	ctx, cancel := context.WithTimeout(ctx, signalTimeout)
	defer cancel()
	_, err := a.client(c.ghost).SendMessageEvent(ctx, c.room, t, content)
	if err != nil {
		return fmt.Errorf("send %s as %s in %s: %w", t.Type, c.ghost, c.room, err)
	}
	return nil
}

// hangup ends c towards the Matrix user for reason: an m.call.reject when
// the user's invite is refused before an answer and the reason says so, an
// m.call.hangup otherwise.
func (a *Adapter) hangup(ctx context.Context, c *mcall, reason event.HangupReason) error {
	m := calls.For(reason)
	c.mu.Lock()
	answered := c.answered
	c.mu.Unlock()
	if m.MatrixEvent == calls.MatrixReject && !c.outbound && !answered {
		return a.sendCall(ctx, c, mevent.CallReject, map[string]any{})
	}
	r := m.MatrixReason
	if r == "" {
		r = string(mevent.CallHangupUserHangup)
	}
	return a.sendCall(ctx, c, mevent.CallHangup, map[string]any{"reason": r})
}

// Invite implements bridges.CallNetwork: inv.From, a ghost, calls inv.To, a
// Matrix user, in their DM room.
func (a *Adapter) Invite(ctx context.Context, inv *event.CallInvite) (media.Endpoint, error) {
	if _, ok := a.callHost(); !ok {
		return nil, bridges.Permanent(errors.New("matrix call: calls are not enabled"))
	}
	ghost, user, err := a.pair(inv.Header)
	if err != nil {
		return nil, err
	}
	if err := a.ensureRegistered(ctx, ghost); err != nil {
		return nil, a.classify(fmt.Errorf("register ghost %s: %w", ghost, err))
	}
	a.ensureDisplayName(ctx, ghost, inv.FromName)
	unlock := a.pairs.Lock(dmKey(ghost, user))
	room, _, err := a.dmRoom(ctx, ghost, user)
	unlock()
	if err != nil {
		return nil, err
	}
	callID := inv.Call
	if !validCallID(callID) {
		return nil, bridges.Permanent(fmt.Errorf("matrix call: leg ID %q cannot be a call_id", inv.Call))
	}
	leg, err := media.NewWebRTCLeg(a.legConfig(ctx), inv.Offer)
	if err != nil {
		return nil, fmt.Errorf("matrix call %s: %w", callID, err)
	}
	sdp, err := leg.Offer(ctx)
	if err != nil {
		_ = leg.Close()
		return nil, fmt.Errorf("matrix call %s: %w", callID, err)
	}
	c := &mcall{id: callID, room: room, ghost: ghost, user: user, party: newPartyID(), outbound: true, leg: leg,
		early: map[string][]mevent.CallCandidate{}}
	if err := a.addCall(ctx, c); err != nil {
		_ = leg.Close()
		return nil, bridges.Permanent(fmt.Errorf("matrix call: %w", err))
	}
	err = a.sendCall(ctx, c, mevent.CallInvite, map[string]any{
		"lifetime": inviteLifetime,
		"invitee":  user.String(),
		"offer":    map[string]any{"type": "offer", "sdp": sdp},
	})
	if err != nil {
		a.endCall(c)
		_ = leg.Close()
		return nil, a.classify(err)
	}
	c.mu.Lock()
	c.timer = time.AfterFunc(inviteLifetime*time.Millisecond, func() { a.inviteExpired(c) })
	c.mu.Unlock()
	go a.watchMedia(c)
	a.log.Info("call invite sent", "call", c.id, "room", room.String(), "ghost", ghost.String(), "user", user.String())
	return leg, nil
}

// inviteExpired hangs up an outbound call nobody answered in time.
func (a *Adapter) inviteExpired(c *mcall) {
	c.mu.Lock()
	answered := c.answered
	c.mu.Unlock()
	if answered {
		return
	}
	a.endLocally(c, event.HangupNoAnswer)
}

// endLocally ends c from Parley's side: the user gets a hangup, the core a
// CallHangup.
func (a *Adapter) endLocally(c *mcall, reason event.HangupReason) {
	if !a.endCall(c) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), signalTimeout)
	defer cancel()
	if err := a.hangup(ctx, c, reason); err != nil {
		a.log.Warn("call hangup not sent", "call", c.id, "err", err)
	}
	a.report(ctx, &event.CallHangup{Header: c.header(""), Call: c.id, Reason: reason})
	a.log.Info("call ended", "call", c.id, "reason", reason.String())
}

// watchMedia ends c when its WebRTC leg fails; it returns when the leg
// is closed.
func (a *Adapter) watchMedia(c *mcall) {
	select {
	case <-c.leg.Failed():
	case <-c.leg.Done():
		return
	}
	c.mu.Lock()
	ended := c.ended
	c.mu.Unlock()
	if !ended {
		a.log.Warn("call media failed", "call", c.id, "err", c.leg.FailErr())
		a.endLocally(c, event.HangupMediaFailed)
	}
}

// header is the header of an event of c to the core: From the user, To the
// ghost (the direction of the call does not matter to CallEvent).
func (c *mcall) header(eventID string) event.Header {
	return event.Header{
		ID:   eventID,
		From: event.Address{Network: event.Matrix, ID: c.user.String()},
		To:   event.Address{Network: event.Matrix, ID: c.ghost.String()},
		Time: time.Now(),
	}
}

// report tells the core about a leg's progress; a leg the core has
// forgotten is no error.
func (a *Adapter) report(ctx context.Context, evt event.Event) {
	host, ok := a.callHost()
	if !ok {
		return
	}
	if err := host.CallEvent(ctx, evt); err != nil && !errors.Is(err, bridges.ErrUnknownCall) {
		a.log.Warn("call event not taken", "kind", evt.Kind().String(), "err", err)
	}
}

// Signal implements bridges.CallNetwork.
func (a *Adapter) Signal(ctx context.Context, evt event.Event) error {
	switch e := evt.(type) {
	case *event.CallRinging:
		return nil // Matrix VoIP v1 has no ringing event
	case *event.CallAnswer:
		return a.answer(ctx, e)
	case *event.CallHangup:
		c := a.lookupCall(e.Call)
		if c == nil || !a.endCall(c) {
			return nil
		}
		a.log.Info("call ended by the other side", "call", c.id, "reason", e.Reason.String())
		return a.hangup(ctx, c, e.Reason)
	default:
		return bridges.Permanent(fmt.Errorf("matrix call: unsupported signal %s", evt.Kind()))
	}
}

// answer answers the user's invite with the codecs the core chose.
func (a *Adapter) answer(ctx context.Context, e *event.CallAnswer) error {
	c := a.lookupCall(e.Call)
	if c == nil {
		return fmt.Errorf("matrix call %s: %w", e.Call, bridges.ErrUnknownCall)
	}
	if c.outbound {
		return bridges.Permanent(fmt.Errorf("matrix call %s: an answer for a call Parley placed", e.Call))
	}
	sdp, _, err := c.leg.Answer(ctx, c.offer, e.Answer)
	if err != nil {
		a.log.Warn("call answer failed", "call", c.id, "err", err)
		a.endLocally(c, event.HangupIncompatibleMedia)
		return nil
	}
	c.mu.Lock()
	c.answered = true
	c.mu.Unlock()
	if err := a.sendCall(ctx, c, mevent.CallAnswer, map[string]any{
		"answer": map[string]any{"type": "answer", "sdp": sdp},
	}); err != nil {
		a.log.Warn("call answer not sent", "call", c.id, "err", err)
		a.endLocally(c, event.HangupFailure)
		return nil
	}
	a.log.Info("call answered", "call", c.id)
	return nil
}

// callContent is the part of every m.call.* content Parley reads.
type callContent struct {
	CallID   string          `json:"call_id"`
	PartyID  string          `json:"party_id"`
	Version  json.RawMessage `json:"version"`
	Lifetime int64           `json:"lifetime"`
	Invitee  string          `json:"invitee"`
	Offer    *struct {
		Type string `json:"type"`
		SDP  string `json:"sdp"`
	} `json:"offer"`
	Answer *struct {
		Type string `json:"type"`
		SDP  string `json:"sdp"`
	} `json:"answer"`
	// Description is the SDP of an m.call.negotiate.
	Description *struct {
		Type string `json:"type"`
		SDP  string `json:"sdp"`
	} `json:"description"`
	Candidates      []mevent.CallCandidate `json:"candidates"`
	Reason          string                 `json:"reason"`
	SelectedPartyID string                 `json:"selected_party_id"`
}

// parseCallContent reads the content of an m.call.* event; an error says
// what is wrong. A content without a call_id cannot be answered at all
// (id is then "").
func parseCallContent(raw []byte) (c callContent, err error) {
	if err := json.Unmarshal(raw, &c); err != nil {
		// Keep whatever call_id there is, to hang that call up.
		var only struct {
			CallID string `json:"call_id"`
		}
		c = callContent{}
		if json.Unmarshal(raw, &only) == nil && validCallID(only.CallID) {
			c.CallID = only.CallID
		}
		return c, fmt.Errorf("call content: %w", err)
	}
	if !validCallID(c.CallID) {
		c.CallID = ""
		return c, errors.New("call content: no usable call_id")
	}
	return c, nil
}

// isCallEvent reports whether t is an m.call.* event type Parley handles.
func isCallEvent(t string) bool {
	switch t {
	case mevent.CallInvite.Type, mevent.CallAnswer.Type, mevent.CallCandidates.Type, mevent.CallHangup.Type,
		mevent.CallReject.Type, mevent.CallSelectAnswer.Type, mevent.CallNegotiate.Type:
		return true
	}
	return false
}

// handleCall handles an m.call.* event from a transaction. It never fails
// the transaction: calls are sessions, and a retry would come too late.
func (a *Adapter) handleCall(ctx context.Context, evt *mevent.Event) error {
	if a.owns(evt.Sender) {
		return nil // our own echo
	}
	content, perr := parseCallContent(evt.Content.VeryRaw)
	if _, ok := a.callHost(); !ok {
		a.refuseCall(ctx, evt, content)
		return nil
	}
	if content.CallID == "" {
		a.log.Warn("skipped call event without a call_id", "event", evt.ID.String(), "type", evt.Type.Type, "err", perr)
		return nil
	}
	log := a.log.With("call", content.CallID, "event", evt.ID.String(), "type", evt.Type.Type)
	if evt.Type.Type == mevent.CallInvite.Type {
		a.handleInvite(ctx, evt, content, perr, log)
		return nil
	}
	c := a.lookupCall(content.CallID)
	if c == nil || c.room != evt.RoomID || c.user != evt.Sender {
		log.Debug("call event for no live call")
		return nil
	}
	if perr != nil {
		log.Warn("malformed call event; hanging up", "err", perr)
		a.endLocally(c, event.HangupFailure)
		return nil
	}
	c.mu.Lock()
	selected := c.selected
	c.mu.Unlock()
	if selected != "" && content.PartyID != selected && evt.Type.Type != mevent.CallSelectAnswer.Type {
		log.Debug("call event of another party than the selected one", "party", content.PartyID)
		return nil
	}
	switch evt.Type.Type {
	case mevent.CallAnswer.Type:
		a.handleAnswer(ctx, c, content, log)
	case mevent.CallCandidates.Type:
		a.handleCandidates(c, content, selected, log)
	case mevent.CallHangup.Type, mevent.CallReject.Type:
		if !a.endCall(c) {
			return nil
		}
		reason := calls.FromMatrix(evt.Type.Type, content.Reason)
		log.Info("call ended by the matrix user", "reason", reason.String())
		a.report(ctx, &event.CallHangup{Header: c.header(evt.ID.String()), Call: c.id, Reason: reason, Text: content.Reason})
	case mevent.CallSelectAnswer.Type:
		// The caller chose an answer: another device's than ours ends our
		// side of the call.
		if !c.outbound && content.SelectedPartyID != "" && content.SelectedPartyID != c.party {
			if a.endCall(c) {
				a.report(ctx, &event.CallHangup{Header: c.header(evt.ID.String()), Call: c.id, Reason: event.HangupAnsweredElsewhere})
			}
		}
	case mevent.CallNegotiate.Type:
		a.handleNegotiate(ctx, c, content, log)
	}
	return nil
}

// handleNegotiate answers the user's m.call.negotiate offer (a client puts
// the call on hold, or changes its media, during the call) with the leg's
// new answer. The media toward the other leg goes on unchanged: its codecs
// stay the call's.
func (a *Adapter) handleNegotiate(ctx context.Context, c *mcall, content callContent, log *slog.Logger) {
	d := content.Description
	if d == nil || d.SDP == "" {
		log.Warn("call renegotiation without sdp; ignored")
		return
	}
	if d.Type != "offer" {
		log.Debug("call renegotiation answer to no offer of ours; ignored", "sdp_type", d.Type)
		return
	}
	c.mu.Lock()
	live := c.answered // before the answer, the call's own offer and answer are under way
	c.mu.Unlock()
	if !live {
		log.Debug("call renegotiation before the call is up; ignored")
		return
	}
	answer, err := c.leg.Renegotiate(ctx, d.SDP)
	if err != nil {
		log.Warn("call renegotiation unusable; hanging up", "err", err)
		a.endLocally(c, event.HangupIncompatibleMedia)
		return
	}
	if err := a.sendCall(ctx, c, mevent.CallNegotiate, map[string]any{
		"description": map[string]any{"type": "answer", "sdp": answer}, "lifetime": inviteLifetime,
	}); err != nil {
		log.Warn("call renegotiation answer not sent", "err", err)
	}
}

// refuseCall answers a call invite to a ghost when this gateway carries no
// calls (no calls section): the user's client stops ringing at once, with
// a hangup, instead of waiting out the invite's lifetime.
func (a *Adapter) refuseCall(ctx context.Context, evt *mevent.Event, content callContent) {
	if evt.Type.Type != mevent.CallInvite.Type || content.CallID == "" {
		return
	}
	ghost, user, ok, err := a.roomPair(ctx, evt.RoomID)
	if err != nil || !ok || user != evt.Sender {
		return
	}
	c := &mcall{id: content.CallID, room: evt.RoomID, ghost: ghost, user: user, party: newPartyID()}
	if err := a.hangup(ctx, c, event.HangupUnavailable); err != nil {
		a.log.Info("call invite not refused", "call", content.CallID, "err", err)
		return
	}
	a.log.Info("call refused: this gateway carries no calls (no calls section)", "call", content.CallID, "from", user.String())
}

// handleInvite takes the user's m.call.invite to a ghost.
func (a *Adapter) handleInvite(ctx context.Context, evt *mevent.Event, content callContent, perr error, log *slog.Logger) {
	if a.lookupCall(content.CallID) != nil {
		log.Debug("repeated call invite")
		return
	}
	ghost, user, ok, err := a.roomPair(ctx, evt.RoomID)
	if err != nil || !ok || user != evt.Sender {
		log.Debug("call invite outside a dm with a ghost", "err", err)
		return
	}
	if content.Invitee != "" && content.Invitee != ghost.String() {
		log.Debug("call invite for someone else", "invitee", content.Invitee)
		return
	}
	if age := evt.Unsigned.Age; perr == nil && content.Lifetime > 0 && age > content.Lifetime {
		log.Info("call invite expired before it came", "age_ms", age)
		return
	}
	c := &mcall{id: content.CallID, room: evt.RoomID, ghost: ghost, user: user, party: newPartyID()}
	// Only the homeserver's own users place calls through Parley, as only
	// a SIP domain's authenticated users do: a user of another server
	// could otherwise dial any number through the gateway (toll fraud).
	if user.Homeserver() != a.cfg.ServerName {
		log.Info("call from a user of another homeserver refused", "user", user.String())
		_ = a.hangup(ctx, c, event.HangupForbidden)
		return
	}
	// A user places a few calls a minute; a flood of invites would take
	// media ports and ring phones.
	if ok, _ := a.calls.invites.Allow(user, time.Now()); !ok {
		log.Info("call invites from this user come too fast; refused", "user", user.String())
		_ = a.hangup(ctx, c, event.HangupBusy)
		return
	}
	if perr == nil {
		c.selected = content.PartyID
	}
	if perr == nil && (content.Offer == nil || content.Offer.SDP == "" || (content.Offer.Type != "" && content.Offer.Type != "offer")) {
		perr = errors.New("call invite without an offer")
	}
	if perr != nil {
		log.Warn("malformed call invite; hanging up", "err", perr)
		_ = a.hangup(ctx, c, event.HangupFailure)
		return
	}
	if a.glare(ctx, c, log) {
		return
	}
	offer, err := media.ParseWebRTCMedia(content.Offer.SDP)
	if err != nil {
		log.Warn("call invite with unusable media; hanging up", "err", err)
		_ = a.hangup(ctx, c, event.HangupIncompatibleMedia)
		return
	}
	leg, err := media.NewWebRTCLeg(a.legConfig(ctx), offer)
	if err != nil {
		log.Warn("no media for the call; hanging up", "err", err)
		_ = a.hangup(ctx, c, event.HangupFailure)
		return
	}
	c.leg, c.offer = leg, content.Offer.SDP
	if err := a.addCall(ctx, c); err != nil {
		_ = leg.Close()
		return
	}
	host, _ := a.callHost()
	inv := &event.CallInvite{Header: c.header(evt.ID.String()), Call: c.id, Offer: offer}
	if ts := evt.Timestamp; ts > 0 {
		inv.Time = time.UnixMilli(ts)
	}
	if err := host.Call(ctx, inv, leg); err != nil {
		reason := refusalReason(err)
		log.Info("call refused", "reason", reason.String(), "err", err)
		if a.endCall(c) {
			_ = a.hangup(ctx, c, reason)
		}
		return
	}
	go a.watchMedia(c)
	log.Info("call invite taken", "ghost", ghost.String(), "user", user.String())
}

// refusalReason maps the core's refusal of a call to a hangup reason.
func refusalReason(err error) event.HangupReason {
	switch {
	case errors.Is(err, bridges.ErrNoRoute):
		return event.HangupNotFound
	case errors.Is(err, bridges.ErrRefused):
		return event.HangupForbidden
	case errors.Is(err, bridges.ErrCallLimit):
		return event.HangupBusy
	}
	return event.HangupFailure
}

// glare handles the user's invite c while the ghost's own invite to the
// same user in the same room is unanswered: the lower call_id wins. It
// reports whether c is to be ignored.
func (a *Adapter) glare(ctx context.Context, c *mcall, log *slog.Logger) bool {
	var ours *mcall
	a.calls.mu.Lock()
	for _, o := range a.calls.byID {
		if o.outbound && o.room == c.room && o.ghost == c.ghost && o.user == c.user {
			o.mu.Lock()
			if !o.answered && !o.ended {
				ours = o
			}
			o.mu.Unlock()
		}
	}
	a.calls.mu.Unlock()
	if ours == nil {
		return false
	}
	if ours.id < c.id {
		log.Info("glare: our invite has the lower call_id; ignoring theirs", "ours", ours.id)
		return true
	}
	log.Info("glare: their invite has the lower call_id; replacing ours", "ours", ours.id)
	if a.endCall(ours) {
		_ = a.hangup(ctx, ours, event.HangupCancelled)
		a.report(ctx, &event.CallHangup{Header: ours.header(""), Call: ours.id, Reason: event.HangupCancelled})
	}
	return false
}

// handleAnswer takes the user's answer to the ghost's invite: the first
// one is selected.
func (a *Adapter) handleAnswer(ctx context.Context, c *mcall, content callContent, log *slog.Logger) {
	if !c.outbound {
		log.Debug("answer to a call the user placed")
		return
	}
	c.mu.Lock()
	if c.answered {
		c.mu.Unlock()
		log.Debug("second answer ignored", "party", content.PartyID)
		return
	}
	if content.Answer == nil || content.Answer.SDP == "" {
		c.mu.Unlock()
		log.Warn("call answer without sdp; hanging up")
		a.endLocally(c, event.HangupFailure)
		return
	}
	c.answered, c.selected = true, content.PartyID
	early := c.early[content.PartyID]
	c.early = nil
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	codecs, err := c.leg.SetAnswer(content.Answer.SDP)
	if err != nil {
		log.Warn("call answer unusable; hanging up", "err", err)
		a.endLocally(c, event.HangupIncompatibleMedia)
		return
	}
	for _, cand := range early {
		a.addCandidate(c, cand, log)
	}
	if err := a.sendCall(ctx, c, mevent.CallSelectAnswer, map[string]any{"selected_party_id": content.PartyID}); err != nil {
		log.Warn("select_answer not sent", "err", err)
	}
	log.Info("call answered by the matrix user", "party", content.PartyID)
	a.report(ctx, &event.CallAnswer{Header: c.header(""), Call: c.id, Answer: codecs})
}

func (a *Adapter) handleCandidates(c *mcall, content callContent, selected string, log *slog.Logger) {
	if c.outbound && selected == "" {
		c.mu.Lock()
		// Kept per answering device until one answer is selected; bounded,
		// as the devices and their candidates are the remote's to choose.
		if _, known := c.early[content.PartyID]; c.early != nil && (known || len(c.early) < maxEarlyParties) {
			kept := c.early[content.PartyID]
			room := max(0, maxEarlyCandidates-len(kept))
			c.early[content.PartyID] = append(kept, content.Candidates[:min(room, len(content.Candidates))]...)
		}
		c.mu.Unlock()
		return
	}
	for _, cand := range content.Candidates {
		a.addCandidate(c, cand, log)
	}
}

func (a *Adapter) addCandidate(c *mcall, cand mevent.CallCandidate, log *slog.Logger) {
	var index *uint16
	if cand.SDPMLineIndex >= 0 && cand.SDPMLineIndex < 1<<16 {
		i := uint16(cand.SDPMLineIndex)
		index = &i
	}
	if err := c.leg.AddCandidate(cand.Candidate, cand.SDPMID, index); err != nil {
		log.Warn("call candidate skipped", "err", err)
	}
}

// endLeftoverCalls hangs up the calls an earlier run left live (its
// records in Links): their media is gone with that run.
func (a *Adapter) endLeftoverCalls(ctx context.Context, left map[string]string) {
	_, links := a.started()
	for key, v := range left {
		var rec callRecord
		callID := strings.TrimPrefix(key, "call:")
		if err := json.Unmarshal([]byte(v), &rec); err == nil && rec.Room != "" && rec.Ghost != "" {
			c := &mcall{id: callID, room: rec.Room, ghost: rec.Ghost, party: rec.PartyID, outbound: true}
			if err := a.hangup(ctx, c, event.HangupFailure); err != nil && isTransient(err) {
				a.log.Warn("leftover call not hung up; trying at the next start", "call", callID, "err", err)
				continue
			}
			a.log.Info("leftover call hung up", "call", callID, "room", rec.Room.String())
		}
		if err := links.Delete(ctx, key); err != nil {
			a.log.Warn("leftover call record not deleted", "call", callID, "err", err)
		}
	}
}

// leftoverCalls lists the call records of an earlier run.
func (a *Adapter) leftoverCalls(ctx context.Context, links bridges.Links) map[string]string {
	left, err := links.List(ctx, "call:")
	if err != nil {
		a.log.Warn("could not list leftover calls", "err", err)
		return nil
	}
	return left
}
