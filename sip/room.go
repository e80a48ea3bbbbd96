package sip

import (
	"context"
	"strings"
	"unicode"

	"github.com/emiago/sipgo/sip"

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
//   - "/who" is answered at once, not through the outbox, by a MESSAGE
//     from the room that lists who is in the portal (RosterHost);
//   - a membership change the core Sends to a phone is the phone's own
//     (others' joins and leaves are not sent to phones), confirmed in a
//     short MESSAGE from the room that says how to leave or come back.

// The room commands a phone may write to a room.
const (
	commandLeave = "/leave"
	commandJoin  = "/join"
	commandWho   = "/who"
)

// roomCommand is what a phone's MESSAGE to a room asks for.
type roomCommand uint8

const (
	// post: the body is a post in the room.
	post roomCommand = iota
	// leave the room.
	leave
	// join the room.
	join
	// who: the phone asks who is in the room.
	who
)

// parseRoomCommand reads body, a phone's MESSAGE to a room: "/leave",
// "/join" and "/who" (any case, surrounding white space ignored) are
// commands, anything else is a post.
func parseRoomCommand(body string) roomCommand {
	switch strings.ToLower(strings.TrimFunc(body, unicode.IsSpace)) {
	case commandLeave:
		return leave
	case commandJoin:
		return join
	case commandWho:
		return who
	}
	return post
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
// for (a /who is answered by answerWho, not dispatched). A phone without a display name is named by its user part.
func roomEvent(m *event.Message) event.Event {
	m.Room = true
	if m.FromName == "" {
		m.FromName = userPart(m.From.ID)
	}
	switch parseRoomCommand(m.Body) {
	case leave:
		return &event.Member{Header: m.Header, Change: event.MemberLeft}
	case join:
		return &event.Member{Header: m.Header, Change: event.MemberJoined}
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

// answerWho answers m, a phone's /who to the room m.To: 202 at once, then
// a MESSAGE from the room that lists who is in it. The answer is not
// durable: a phone that does not get it asks again.
func (a *Adapter) answerWho(host bridges.Host, m *event.Message) *reply {
	rh, ok := host.(bridges.RosterHost)
	if !ok {
		return newReply(501, "Not Implemented")
	}
	ctx, cancel := context.WithTimeout(a.dispatchCtx, dispatchTimeout)
	members, err := rh.RoomMembers(ctx, m.To)
	cancel()
	if err != nil {
		a.log.Info("sip room members not known", "room", m.To.ID, "from", m.From.ID, "err", err)
		return dispatchReply(err)
	}
	if !a.enter() {
		return newReply(503, "Service Unavailable", sip.NewHeader("Retry-After", "10"))
	}
	h := event.Header{ID: m.ID, From: m.To, To: m.From, Room: true, Time: a.now()}
	o := outboundMessage{from: m.To.ID, to: m.From.ID, fromName: userPart(m.To.ID), body: whoText(m.To, m.From, members),
		sourceID: "who|" + m.ID}
	go func() {
		defer a.inflight.Done()
		ctx, cancel := context.WithTimeout(a.dispatchCtx, a.sendTimeout)
		defer cancel()
		if _, err := a.deliver(ctx, &h, o); err != nil {
			a.log.Info("sip room members not sent", "room", m.To.ID, "to", m.From.ID, "err", err)
		}
	}()
	return newReply(202, "Accepted")
}

// whoText lists members, who is in room, for the phone asker: the
// participants of the other networks by name, then the phones.
func whoText(room, asker event.Address, members []bridges.RoomMember) string {
	var people, phones []string
	for _, mb := range members {
		name := mb.Name
		if mb.Address.Network == event.SIP {
			if name == "" {
				name = userPart(mb.Address.ID)
			}
			if mb.Address == asker {
				name += " (you)"
			}
			phones = append(phones, name)
			continue
		}
		if name == "" {
			name = mb.Address.ID
		}
		people = append(people, name)
	}
	var b strings.Builder
	b.WriteString("In " + userPart(room.ID) + ": ")
	if len(people) == 0 && len(phones) == 0 {
		b.WriteString("no one yet.")
		return b.String()
	}
	b.WriteString(strings.Join(people, ", "))
	if len(phones) > 0 {
		if len(people) > 0 {
			b.WriteString("; ")
		}
		b.WriteString("phones: " + strings.Join(phones, ", "))
	}
	b.WriteString(".")
	return b.String()
}
