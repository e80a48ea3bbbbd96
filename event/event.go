package event

import "time"

// Kind is the closed set of event kinds. A switch over Kind is exhaustive: a
// new capability is a new Kind (and a new struct), never an untyped extra.
type Kind uint8

// The event kinds.
const (
	KindMessage Kind = iota + 1
	KindFailure
	KindPresence
	KindSubscription
	KindCallInvite
	KindCallRinging
	KindCallAnswer
	KindCallHangup
	KindCallUpdate
	KindMember
	KindTopic
)

var kindNames = [...]string{
	KindMessage: "message", KindFailure: "failure", KindPresence: "presence", KindSubscription: "subscription",
	KindCallInvite: "call-invite", KindCallRinging: "call-ringing", KindCallAnswer: "call-answer", KindCallHangup: "call-hangup",
	KindCallUpdate: "call-update",
	KindMember:     "member", KindTopic: "topic",
}

// Kinds lists every Kind, for metrics and exhaustive tests.
var Kinds = []Kind{
	KindMessage, KindFailure, KindPresence, KindSubscription,
	KindCallInvite, KindCallRinging, KindCallAnswer, KindCallHangup, KindCallUpdate,
	KindMember, KindTopic,
}

// String returns the lowercase name of k, as used in metrics and the store.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "unknown"
}

// ParseKind reverses Kind.String.
func ParseKind(s string) (Kind, bool) {
	for _, k := range Kinds {
		if kindNames[k] == s {
			return k, true
		}
	}
	return 0, false
}

// Event is implemented by every event type of this package (and only by them:
// the unexported method closes the set).
type Event interface {
	Kind() Kind
	// Head returns the common header. The pointer lets the routing core
	// rewrite addresses in place while it translates an event.
	Head() *Header
	sealed()
}

// Header is what every event carries.
type Header struct {
	// ID is the stable ID of the event on its source network (a stanza ID, a
	// Matrix event ID, a SIP Call-ID...). With From.Network it identifies the
	// event across retries and restarts.
	ID string
	// From and To are the sender and the recipient. An adapter fills them
	// with addresses on its own network; the routing core rewrites them to
	// addresses on the destination network before Send.
	From Address
	To   Address
	// FromName is the sender's display name, if known. The routing core sets
	// it from the YAML identity of the sender when there is one.
	FromName string
	// Room is set when To is a group chat (a Matrix room, an XMPP
	// multi-user chat) rather than a person: From is the participant who
	// wrote in it. The routing core carries such events through the portal
	// that joins the room with its counterparts on the other networks, and
	// rewrites From to the participant's appearance there. SIP has no group
	// chats: an event the core sends to a phone in a portal's SIP room has
	// Room set, From the room, To the phone and FromName the speaker.
	Room bool
	// Time is when the source network says the event happened.
	Time time.Time
}

// Message is a chat message.
type Message struct {
	Header
	// Body is the plain-text body; always set.
	Body string
	// HTML is an optional formatted body (XHTML-IM, Matrix org.matrix.custom.html).
	HTML string
	// Notice marks an automated message (Matrix m.notice).
	Notice bool
	// ReplyTo and Replaces hold source IDs of earlier messages on the
	// sender's network: the message this one answers, or the one it edits.
	ReplyTo  string
	Replaces string
}

// Failure tells a sender that an event they sent could not be delivered. The
// routing core addresses it to the original sender on the original network:
// To is the sender, From is the address they wrote to.
type Failure struct {
	Header
	// EventID is the source ID of the event that failed.
	EventID string
	// Reason is a short human-readable explanation.
	Reason string
	// Condition says why, in terms each adapter maps to its protocol's error
	// (an XMPP stanza error condition, a SIP status code).
	Condition Condition
}

// Explanation returns Reason, or when there is none a sentence that
// explains Condition to the sender.
func (f *Failure) Explanation() string {
	if f.Reason != "" {
		return f.Reason
	}
	switch f.Condition {
	case NoRecipient:
		return "the address maps to nobody"
	case Refused:
		return "you may not use the gateway to reach this recipient"
	default:
		return "the destination did not accept it"
	}
}

// Condition classifies a delivery failure.
type Condition uint8

// Failure conditions.
const (
	// Undeliverable: the destination refused or could not take the event.
	Undeliverable Condition = iota
	// NoRecipient: the address maps to nobody.
	NoRecipient
	// Refused: the sender may not use the gateway for this recipient.
	Refused
)

// Kind implements Event.
func (*Message) Kind() Kind { return KindMessage }

// Kind implements Event.
func (*Failure) Kind() Kind { return KindFailure }

// Head implements Event.
func (h *Header) Head() *Header { return h }

func (*Header) sealed() {}
