package bridges

import (
	"context"
	"errors"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/media"
)

// Calls are sessions, not history: they never go through the outbox. An
// adapter that carries calls implements CallNetwork; the core implements
// CallHost (the Host given to Start is one when the gateway carries calls).
//
// The life of a call, with the names the core and the adapters use:
//
//   - A call arrives on a network (a SIP INVITE, an m.call.invite): the
//     caller's adapter makes the leg's media endpoint from the offer, and
//     hands the core an event.CallInvite with CallHost.Call. The invite's Call
//     field is the leg's ID on that network (a SIP Call-ID, a Matrix call_id).
//   - The core resolves the callee to one or more devices (every reachable
//     account of an identity) and invites each with CallNetwork.Invite. It
//     chooses the ID of each callee leg (CallInvite.Call), which the adapter
//     may use as its protocol's call ID; the adapter returns the leg's media
//     endpoint.
//   - Callee adapters report progress with CallHost.CallEvent (CallRinging,
//     CallAnswer, CallHangup, with Call set to the leg's ID); a caller leg
//     reports only its CallHangup (a CANCEL, a BYE).
//   - The core runs the call's state machine (package calls) and tells each
//     leg what happened on the other side with CallNetwork.Signal: the caller
//     leg gets CallRinging and CallAnswer; any leg may get CallHangup.
//   - In an answered call, a leg whose party re-offers with another codec
//     (a SIP re-INVITE from G.711 µ-law to A-law) asks the core with
//     CallHost.Update; the core offers the same codecs to the other leg
//     (CallUpdater.Update), and the first leg answers its party with what
//     the other accepted, or refuses the re-offer and keeps the call as it
//     was. Parley forwards media untouched, so both legs change together or
//     not at all.
//   - When a callee answers (or sends early media), the core connects its
//     media endpoint with the caller's; when a leg ends, the core closes its
//     endpoint. An adapter may use its endpoint until then (for a re-INVITE,
//     say), never after.
//
// A leg lives in the adapter's memory and in its Links: an adapter records
// what it needs to end each live leg, so that after a crash its next Start
// ends the legs left over (a BYE, an m.call.hangup) and no device keeps
// ringing or stays in a dead call.

// CallNetwork is a Network that carries calls.
type CallNetwork interface {
	Network
	// Invite places a callee leg: it calls inv.To as inv.From (both on the
	// adapter's network), offering inv.Offer, and returns the leg's media
	// endpoint at once, before the callee answers. The leg's progress comes
	// back through CallHost.CallEvent with Call set to inv.Call. An error
	// means the leg could not even be tried; wrap it with Permanent when the
	// callee cannot be reached at all (not registered, unknown).
	Invite(ctx context.Context, inv *event.CallInvite) (media.Endpoint, error)
	// Signal tells a leg what happened on the other side of its call:
	// CallRinging or CallAnswer for a caller leg, CallHangup for any leg.
	// The event's Call is the leg's ID; a CallAnswer carries the codecs the
	// leg's answer must give, numbered as the leg's own offer numbered them.
	// Signal must not block on the network for long: the core signals one
	// call's legs in order, from one goroutine per call.
	Signal(ctx context.Context, evt event.Event) error
}

// CallUpdater is a CallNetwork whose legs can take a new offer once
// answered (a SIP re-INVITE).
type CallUpdater interface {
	// Update offers upd.Offer to the leg upd.Call and returns the leg's
	// answer: the offered codecs its party accepted, numbered as upd.Offer
	// numbers them. It may wait for the party's final answer, within ctx.
	// After an error the leg keeps its media as they were; the error wraps
	// ErrUpdatePending when an offer of the party's own crossed this one.
	Update(ctx context.Context, upd *event.CallUpdate) (event.Media, error)
}

// Events of calls name their leg's party in Header.From: the caller for the
// caller leg, the device for a callee leg. The core finds a leg by that
// address's network and the event's Call.

// CallHost is what an adapter that carries calls may ask of the core, in
// addition to Host. Its methods are safe for concurrent use.
type CallHost interface {
	Host
	// Call hands the core a call that arrived on the adapter's network:
	// inv.From calls inv.To (an address Parley serves, or on a network that
	// calls its own users, such as SIP, one of that network's own users),
	// inv.Call is the leg's ID, m the leg's media endpoint, which the core
	// owns from now on. Call returns once the callees are being invited; the
	// call's progress comes back through CallNetwork.Signal. It returns an
	// error wrapping ErrNoRoute when To maps to nobody, ErrRefused when the
	// caller may not call To, or ErrCallLimit when a limit is reached; the
	// core has then closed m, and the adapter refuses the call.
	Call(ctx context.Context, inv *event.CallInvite, m media.Endpoint) error
	// CallEvent reports the progress of a leg: CallRinging, CallAnswer or
	// CallHangup from a callee leg, CallHangup from a caller leg. It queues
	// the event for the call and returns; it may be called from within
	// Signal. An event for a leg the core does not know (it ended already)
	// returns ErrUnknownCall.
	CallEvent(ctx context.Context, evt event.Event) error
	// Update asks the other leg of an answered call to take upd.Offer, a
	// new offer of the leg upd.Call (see CallUpdate), and returns its
	// answer, numbered as upd.Offer numbers it. It waits for the other
	// leg's party, within ctx. It returns an error wrapping ErrUnknownCall
	// for a leg the core does not know, ErrUpdatePending while another
	// update of the call is under way or crossed this one, and
	// ErrUpdateRefused when the call is not answered, the other leg's
	// network cannot update a leg, or its party refused the offer. The
	// call goes on as it was after any error.
	Update(ctx context.Context, upd *event.CallUpdate) (event.Media, error)
}

// ErrCallLimit is returned by CallHost.Call when the caller, the callee or
// the gateway has as many calls as the configuration allows.
var ErrCallLimit = errors.New("call limit reached")

// ErrUnknownCall is returned by CallHost.CallEvent for a leg the core does
// not know, or no longer.
var ErrUnknownCall = errors.New("unknown call")

// ErrUpdatePending is returned by CallHost.Update and CallUpdater.Update
// when another offer is under way in the call (SIP 491).
var ErrUpdatePending = errors.New("another offer is under way")

// ErrUpdateRefused is returned by CallHost.Update when the other leg cannot
// take the new offer (SIP 488).
var ErrUpdateRefused = errors.New("the other leg cannot take the offer")
