package event

// Presence is a person's availability, as one of their accounts reports it or
// as the routing core merged it from all their accounts. Presence is state,
// not history: a newer Presence from the same sender replaces an older one
// not yet delivered.
//
// An adapter dispatches presence either directed (To is a ghost or alias,
// as an XMPP server delivers a user's presence to each subscribed contact)
// or broadcast (To is zero, as a Matrix presence change or a SIP PUBLISH
// concerns everyone): the core then sends it to every recorded watcher of
// From. Either way the core delivers it to each watcher's adapter with To
// set.
type Presence struct {
	Header
	State PresenceState
	// Status is free text ("in a meeting until 3"), may be empty.
	Status string
}

// PresenceState is the closed set of availability states Parley carries. Each
// adapter maps its protocol's states to these: XMPP <show/>, Matrix
// presence, SIP PIDF with RPID activities.
type PresenceState uint8

// The presence states, from most to least available. OnThePhone is set apart:
// it says the person is busy in a call on some device.
const (
	Offline PresenceState = iota
	Available
	Away
	ExtendedAway
	DoNotDisturb
	OnThePhone
)

var presenceNames = [...]string{
	Offline:      "offline",
	Available:    "available",
	Away:         "away",
	ExtendedAway: "xa",
	DoNotDisturb: "dnd",
	OnThePhone:   "on-the-phone",
}

// String returns the lowercase name of s.
func (s PresenceState) String() string {
	if int(s) < len(presenceNames) {
		return presenceNames[s]
	}
	return "unknown"
}

// availability ranks states for Merge: higher is more available.
var availability = [...]int{
	Offline:      0,
	DoNotDisturb: 1,
	ExtendedAway: 2,
	Away:         3,
	Available:    4,
}

// Merge folds the states of one person's accounts into the one state shown
// everywhere. The rule: if any account is on the phone, the person is on the
// phone (a call is the one thing other devices cannot know); otherwise the
// most available state wins (available > away > xa > dnd > offline), because
// a person reachable on one device is reachable.
func Merge(states ...PresenceState) PresenceState {
	best := Offline
	for _, s := range states {
		if s == OnThePhone {
			return OnThePhone
		}
		if int(s) < len(availability) && availability[s] > availability[best] {
			best = s
		}
	}
	return best
}

// Kind implements Event.
func (*Presence) Kind() Kind { return KindPresence }

// Subscription says that From, a watcher, starts (Active) or stops watching
// the presence of To, addressed as the watcher's network shows it (a ghost
// or an alias). The routing core records watchers durably, answers a new
// subscription with the last known presence, and tells the presentity's
// network so that its adapter can ask for that presence where the protocol
// needs it (an XMPP subscription request from the watcher's ghost).
type Subscription struct {
	Header
	Active bool
}

// Kind implements Event.
func (*Subscription) Kind() Kind { return KindSubscription }
