// Package calls is the call state machine that every adapter drives: one
// caller leg, one or more callee legs (a fork to every device of the callee),
// ringing, early media, the first answer winning, timeouts and the hangup of
// every leg with its reason. It is pure logic: it does no I/O, keeps no
// goroutine and reads the time only from the clock it is given, so its
// driver (the routing core) owns timers and network sends.
//
// The package also holds the one table that maps event.HangupReason to SIP
// status codes and Reason headers, Matrix hangup reasons and Jingle reasons
// (reasons.go, docs/calls.md).
package calls

import (
	"errors"
	"fmt"
	"time"

	"github.com/parleygw/parley/event"
)

// State is the state of a call.
type State uint8

// The states of a call.
const (
	StateNew State = iota
	StateRinging
	StateEarlyMedia
	StateAnswered
	StateEnded
)

var stateNames = [...]string{"new", "ringing", "early-media", "answered", "ended"}

// String returns the lowercase name of s.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// LegID names a leg of a call, unique within the call.
type LegID string

// Op is what an Action asks the driver to do on a leg.
type Op uint8

// The operations.
const (
	// OpInvite: send the caller's invite to the callee leg.
	OpInvite Op = iota + 1
	// OpRinging: tell the caller leg that From rings.
	OpRinging
	// OpEarlyMedia: tell the caller leg that From sends early media, and
	// connect the media of the caller and From.
	OpEarlyMedia
	// OpAnswer: tell the caller leg that From answered, and connect (or keep)
	// the media of the caller and From.
	OpAnswer
	// OpHangup: end the leg with Reason (a final response, a CANCEL or a BYE
	// on SIP, depending on the leg's state).
	OpHangup
)

var opNames = [...]string{OpInvite: "invite", OpRinging: "ringing", OpEarlyMedia: "early-media", OpAnswer: "answer", OpHangup: "hangup"}

// String returns the lowercase name of o.
func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return "unknown"
}

// Action is one thing the driver must do, in the order returned.
type Action struct {
	Op     Op
	Leg    LegID
	From   LegID
	Reason event.HangupReason
}

func (a Action) String() string {
	s := a.Op.String() + " " + string(a.Leg)
	if a.From != "" {
		s += " from " + string(a.From)
	}
	if a.Reason != 0 {
		s += " " + a.Reason.String()
	}
	return s
}

// ErrUnknownLeg is returned for an event from a leg the call does not have.
var ErrUnknownLeg = errors.New("unknown call leg")

// Config sets the call's timers and clock.
type Config struct {
	// RingTimeout ends an unanswered call with HangupNoAnswer; 0 means 60 s.
	RingTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

type legState uint8

const (
	legNew legState = iota
	legRinging
	legAnswered
	legEnded
)

type leg struct {
	id     LegID
	state  legState
	reason event.HangupReason
}

// Call is the state of one call. It is not safe for concurrent use: its
// driver handles one call's events one at a time.
type Call struct {
	cfg      Config
	caller   LegID
	callees  []*leg
	state    State
	winner   LegID
	early    LegID
	reason   event.HangupReason
	deadline time.Time
}

// New returns a call from caller to the callee legs, in StateNew. Start
// sends the invites.
func New(cfg Config, caller LegID, callees ...LegID) (*Call, error) {
	if cfg.RingTimeout <= 0 {
		cfg.RingTimeout = 60 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if caller == "" || len(callees) == 0 {
		return nil, errors.New("new call: a call needs a caller and at least one callee")
	}
	c := &Call{cfg: cfg, caller: caller}
	seen := map[LegID]bool{caller: true}
	for _, id := range callees {
		if id == "" || seen[id] {
			return nil, fmt.Errorf("new call: callee leg %q is empty or repeated", id)
		}
		seen[id] = true
		c.callees = append(c.callees, &leg{id: id})
	}
	return c, nil
}

// Start invites every callee leg at once and starts the ring timer.
func (c *Call) Start() []Action {
	c.deadline = c.cfg.Now().Add(c.cfg.RingTimeout)
	out := make([]Action, 0, len(c.callees))
	for _, l := range c.callees {
		out = append(out, Action{Op: OpInvite, Leg: l.id})
	}
	return out
}

// State returns the call's state.
func (c *Call) State() State { return c.state }

// Winner returns the callee leg that answered, if any.
func (c *Call) Winner() LegID { return c.winner }

// Reason returns why the call ended; 0 while it has not.
func (c *Call) Reason() event.HangupReason { return c.reason }

// Deadline returns when Expire must be called: the end of the ring timer,
// while the call is unanswered.
func (c *Call) Deadline() (time.Time, bool) {
	if c.state == StateAnswered || c.state == StateEnded || c.deadline.IsZero() {
		return time.Time{}, false
	}
	return c.deadline, true
}

// Handle applies an event from one leg: CallRinging, CallAnswer or CallHangup
// (a CallInvite starts a call and is not handled here). Events that come too
// late (after the leg or the call ended) are normal in telephony; they give no
// action or, for a late answer, the hangup of that leg.
func (c *Call) Handle(from LegID, evt event.Event) ([]Action, error) {
	if from != c.caller && c.callee(from) == nil {
		return nil, fmt.Errorf("call event %s from %q: %w", evt.Kind(), from, ErrUnknownLeg)
	}
	switch e := evt.(type) {
	case *event.CallRinging:
		if from == c.caller {
			return nil, fmt.Errorf("call event ringing from the caller leg %q", from)
		}
		return c.ringing(from, e.EarlyMedia), nil
	case *event.CallAnswer:
		if from == c.caller {
			return nil, fmt.Errorf("call event answer from the caller leg %q", from)
		}
		return c.answer(from), nil
	case *event.CallHangup:
		reason := e.Reason
		if !reason.Valid() {
			reason = event.HangupFailure
		}
		return c.hangup(from, reason), nil
	default:
		return nil, fmt.Errorf("call event %s from %q: not a ringing, answer or hangup", evt.Kind(), from)
	}
}

// Expire ends the call with HangupNoAnswer if its ring timer has run out at
// the clock's time; otherwise it does nothing.
func (c *Call) Expire() []Action {
	d, ok := c.Deadline()
	if !ok || c.cfg.Now().Before(d) {
		return nil
	}
	return c.end(event.HangupNoAnswer, "")
}

// MediaTimeout ends the call with HangupMediaTimeout on every leg: the
// media relay saw no packet for its configured time.
func (c *Call) MediaTimeout() []Action { return c.End(event.HangupMediaTimeout) }

// End ends the call for reason on every live leg, in any state: the gateway
// stops, say. An ended call gives no action.
func (c *Call) End(reason event.HangupReason) []Action {
	if c.state == StateEnded {
		return nil
	}
	if !reason.Valid() {
		reason = event.HangupFailure
	}
	return c.end(reason, "")
}

func (c *Call) callee(id LegID) *leg {
	for _, l := range c.callees {
		if l.id == id {
			return l
		}
	}
	return nil
}

func (c *Call) ringing(from LegID, early bool) []Action {
	l := c.callee(from)
	if c.state == StateAnswered || c.state == StateEnded || l.state != legNew && l.state != legRinging {
		return nil
	}
	l.state = legRinging
	switch {
	case early && c.early == "":
		c.early, c.state = from, StateEarlyMedia
		return []Action{{Op: OpEarlyMedia, Leg: c.caller, From: from}}
	case c.state == StateNew:
		c.state = StateRinging
		return []Action{{Op: OpRinging, Leg: c.caller, From: from}}
	}
	return nil
}

func (c *Call) answer(from LegID) []Action {
	l := c.callee(from)
	switch {
	case c.state == StateEnded && l.state != legEnded:
		// Answered while the caller's cancel crossed it.
		l.state, l.reason = legEnded, c.reason
		return []Action{{Op: OpHangup, Leg: from, Reason: c.reason}}
	case c.state == StateEnded:
		// An answer from a leg already ended (a 200 that crossed the CANCEL).
		return []Action{{Op: OpHangup, Leg: from, Reason: l.reason}}
	case c.state == StateAnswered:
		if from == c.winner {
			return nil
		}
		l.state, l.reason = legEnded, event.HangupAnsweredElsewhere
		return []Action{{Op: OpHangup, Leg: from, Reason: event.HangupAnsweredElsewhere}}
	}
	c.state, c.winner = StateAnswered, from
	l.state = legAnswered
	out := []Action{{Op: OpAnswer, Leg: c.caller, From: from}}
	for _, o := range c.callees {
		if o != l && o.state != legEnded {
			o.state, o.reason = legEnded, event.HangupAnsweredElsewhere
			out = append(out, Action{Op: OpHangup, Leg: o.id, Reason: event.HangupAnsweredElsewhere})
		}
	}
	return out
}

func (c *Call) hangup(from LegID, reason event.HangupReason) []Action {
	if c.state == StateEnded {
		return nil
	}
	answered := c.state == StateAnswered
	if from == c.caller {
		if !answered && reason == event.HangupNormal {
			reason = event.HangupCancelled
		}
		return c.end(reason, from)
	}
	l := c.callee(from)
	if l.state == legEnded {
		return nil
	}
	if answered {
		if from != c.winner {
			return nil
		}
		return c.end(reason, from)
	}
	if reason == event.HangupNormal {
		// A callee that hangs up before answering refuses the call.
		reason = event.HangupDeclined
	}
	l.state, l.reason = legEnded, reason
	for _, o := range c.callees {
		if o.state != legEnded {
			return nil
		}
	}
	return c.end(best(c.callees), "")
}

// end ends the call and every live leg but skip (the leg that ended it).
func (c *Call) end(reason event.HangupReason, skip LegID) []Action {
	c.state, c.reason = StateEnded, reason
	var out []Action
	if skip != c.caller {
		out = append(out, Action{Op: OpHangup, Leg: c.caller, Reason: reason})
	}
	for _, l := range c.callees {
		if l.state == legEnded {
			continue
		}
		l.state, l.reason = legEnded, reason
		if l.id != skip {
			out = append(out, Action{Op: OpHangup, Leg: l.id, Reason: reason})
		}
	}
	return out
}

// best returns the reason to give the caller when every callee leg failed,
// after RFC 3261 §16.7: a person's decision (decline, busy) over what a
// device or the network says.
func best(legs []*leg) event.HangupReason {
	var out event.HangupReason
	for _, l := range legs {
		if out == 0 || rank(l.reason) > rank(out) {
			out = l.reason
		}
	}
	return out
}

func rank(r event.HangupReason) int {
	switch r {
	case event.HangupDeclined:
		return 10
	case event.HangupBusy:
		return 9
	case event.HangupForbidden:
		return 8
	case event.HangupIncompatibleMedia:
		return 7
	case event.HangupNoAnswer:
		return 6
	case event.HangupUnavailable:
		return 5
	case event.HangupNotFound:
		return 4
	case event.HangupMediaFailed:
		return 3
	default:
		return 1
	}
}

// The limit of new calls from one caller (a SIP source address, a Matrix
// user), the same on every network: a burst of InviteBurst, then
// InvitesPerSecond. Each adapter applies it to its own callers.
const (
	InvitesPerSecond = 1
	InviteBurst      = 10
)
