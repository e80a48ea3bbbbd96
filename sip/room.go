package sip

import (
	"strings"
	"unicode"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// Rooms. SIP has no group chats: a portal's SIP address (mapping.Portal's
// sip, under the adapter's domain) is a room that phones write to, and the
// routing core sends each phone in it the room's posts. The adapter's part:
//
//   - a MESSAGE to the room's address is dispatched as a post in the room
//     (Header.Room set, To the room, From the phone), authenticated and
//     answered 202 like any MESSAGE; a body that is a room command is a
//     membership change instead (see roomCommand);
//   - a post the core Sends to a phone (Room set, From the room, To the
//     phone, FromName the speaker) goes out as a MESSAGE from the room's
//     address, so that the phone's answer goes to the room, with the
//     speaker's name both in the From display name, "Alice (team)", and
//     before the text, "Alice: hello": phones show one or the other, and
//     many thread conversations by the From URI, so the room stays one
//     thread;
//   - a membership change the core Sends to a phone is the phone's own
//     (others' joins and leaves are not sent to phones), confirmed in a
//     short MESSAGE from the room that says how to leave or come back.

// The room commands a phone may write to a room.
const (
	commandLeave = "/leave"
	commandJoin  = "/join"
)

// roomCommand returns the membership change that body, a phone's MESSAGE
// to a room, asks for: MemberLeft for "/leave", MemberJoined for "/join"
// (any case, surrounding white space ignored), and 0 for anything else,
// which is a post.
func roomCommand(body string) event.MemberChange {
	switch strings.ToLower(strings.TrimFunc(body, unicode.IsSpace)) {
	case commandLeave:
		return event.MemberLeft
	case commandJoin:
		return event.MemberJoined
	}
	return 0
}

// isRoom reports whether aor is the SIP address of a portal.
func isRoom(host bridges.Host, aor string) bool {
	rh, ok := host.(bridges.RoomHost)
	if !ok {
		return false
	}
	for _, r := range rh.Rooms(event.SIP) {
		if r.ID == aor {
			return true
		}
	}
	return false
}

// roomEvent turns m, a phone's MESSAGE to the room m.To, into what the
// core takes: a post in the room, or the membership change its body asks
// for. A phone without a display name is named by its user part.
func roomEvent(m *event.Message) event.Event {
	m.Room = true
	if m.FromName == "" {
		m.FromName = userPart(m.From.ID)
	}
	if c := roomCommand(m.Body); c != 0 {
		return &event.Member{Header: m.Header, Change: c}
	}
	return m
}

// userPart returns the user part of a canonical AOR, unescaped, or the AOR
// itself when it has none.
func userPart(aor string) string {
	if user, _, err := (AddressCodec{}).Split(aor); err == nil {
		return user
	}
	return aor
}

// roomMessage is the MESSAGE that carries m, a post in the room m.From, to
// the phone m.To.
func roomMessage(m *event.Message) outboundMessage {
	room := userPart(m.From.ID)
	speaker := m.FromName
	if speaker == "" {
		speaker = "someone"
	}
	return outboundMessage{
		from: m.From.ID, to: m.To.ID, fromName: speaker + " (" + room + ")", body: speaker + ": " + m.Body,
		// Each phone gets its own request.
		sourceID: "room|" + m.ID + "|" + m.To.ID,
	}
}

// memberMessage is the MESSAGE that confirms to the phone mb.To its own
// membership change in the room mb.From.
func memberMessage(mb *event.Member) outboundMessage {
	room := userPart(mb.From.ID)
	body := "You are in " + room + ": what you write to this address goes to the room. Send " + commandLeave + " to leave."
	if mb.Change == event.MemberLeft {
		body = "You left " + room + ". Send " + commandJoin + ", or any message, to join again."
	}
	return outboundMessage{from: mb.From.ID, to: mb.To.ID, fromName: room, body: body, sourceID: "member|" + mb.ID + "|" + mb.To.ID}
}
