package event

import "fmt"

// Member is a change of a participant's presence in a room: Header.Room is
// set, To is the room and From the participant. The routing core carries it
// through the room's portal like a post, in the room's order, so that each
// participant on one side is a participant on the other, with the same name.
type Member struct {
	Header
	Change MemberChange
	// Name is the name the participant shows in the room after the change
	// (an XMPP nick, a Matrix display name); empty for MemberLeft.
	Name string
	// Reason is an optional human-readable explanation (a kick's reason).
	Reason string
}

// Kind implements Event.
func (*Member) Kind() Kind { return KindMember }

// Topic is a change of a room's topic (a Matrix room's m.room.topic, a
// MUC's subject): Header.Room is set, To is the room and From the
// participant who changed it. The routing core carries it through the
// room's portal like a post, in the room's order.
type Topic struct {
	Header
	// Text is the new topic; empty when it was cleared.
	Text string
}

// Kind implements Event.
func (*Topic) Kind() Kind { return KindTopic }

// MemberChange is the closed set of membership changes.
type MemberChange uint8

// The membership changes. The zero value is not a change.
const (
	// MemberJoined: the participant entered the room.
	MemberJoined MemberChange = iota + 1
	// MemberLeft: the participant left, or was removed (a kick or a
	// ban; Reason may say why).
	MemberLeft
	// MemberRenamed: the participant shows another name in the room.
	MemberRenamed
)

var memberChanges = [...]string{MemberJoined: "joined", MemberLeft: "left", MemberRenamed: "renamed"}

// Valid reports whether c is one of the membership changes.
func (c MemberChange) Valid() bool { return c > 0 && int(c) < len(memberChanges) }

// String returns the change's name.
func (c MemberChange) String() string {
	if !c.Valid() {
		return fmt.Sprintf("MemberChange(%d)", uint8(c))
	}
	return memberChanges[c]
}

// MarshalText implements encoding.TextMarshaler, so that the outbox stores
// the change by name.
func (c MemberChange) MarshalText() ([]byte, error) {
	if !c.Valid() {
		return nil, fmt.Errorf("membership change %d is not one of joined, left, renamed", uint8(c))
	}
	return []byte(memberChanges[c]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (c *MemberChange) UnmarshalText(b []byte) error {
	for i, n := range memberChanges {
		if n != "" && n == string(b) {
			*c = MemberChange(i)
			return nil
		}
	}
	return fmt.Errorf("membership change %q is not one of joined, left, renamed", b)
}
