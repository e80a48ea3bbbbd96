package xmpp

import (
	"encoding/xml"
	"fmt"
	"strings"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// A post of a MUC occupant that the other side of the portal refused comes
// back as an event.Failure from the room (From is the room's bare JID) to
// the participant (To is their real bare JID, or room/nick when the room
// hides real JIDs). An error stanza from a component domain about a
// groupchat message would reach no client, so the listener tells the
// poster in a private message through the room, which every client shows
// and which reaches a participant known only by nick. When the poster is no
// longer in the room, a participant with a real JID gets the same text
// from the component domain directly.

// roomFailure translates f, a failure of a post in room, into the private
// message that tells its poster. It returns the stanza ID and the stanza.
func (a *Adapter) roomFailure(f *event.Failure, room jid.JID) (string, xml.TokenReader, error) {
	to, err := a.failureRecipient(room, f.To.ID)
	if err != nil {
		return "", nil, err
	}
	id := stableID(f.ID)
	msg := stanza.Message{ID: id, From: a.domain, To: to, Type: stanza.ChatMessage}
	text := roomFailureText(f, room)
	return id, msg.Wrap(element(xml.Name{Local: "body"}, nil, xmlstream.Token(xml.CharData(text)))), nil
}

// failureRecipient returns where the failure of participant's post in room
// goes: their nick in the room while the listener sees them there, else
// their real JID.
func (a *Adapter) failureRecipient(room jid.JID, participant string) (jid.JID, error) {
	bare := room.String()
	if nick, ok := strings.CutPrefix(participant, bare+"/"); ok {
		if _, present := a.rooms.presentNick(bare, participant); present {
			return room.WithResource(nick)
		}
		return jid.JID{}, bridges.Permanent(fmt.Errorf("send failure in room %s: %s has left", bare, participant))
	}
	if nick, ok := a.rooms.presentNick(bare, participant); ok {
		return room.WithResource(nick)
	}
	to, err := jid.Parse(participant)
	if err != nil || to.Localpart() == "" {
		return jid.JID{}, bridges.Permanent(fmt.Errorf("send failure in room %s to %q: not a participant's JID", bare, participant))
	}
	return to.Bare(), nil
}

// roomFailureText is what the poster of a refused post reads.
func roomFailureText(f *event.Failure, room jid.JID) string {
	return fmt.Sprintf("Your message in %s did not reach the other side of the room: %s.", room.String(), strings.TrimSuffix(f.Explanation(), "."))
}

// presentNick returns the nick of the occupant of room whom the listener
// sees as participant.
func (r *rooms) presentNick(room, participant string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rooms[room]
	if s == nil {
		return "", false
	}
	for nick, p := range s.present {
		if p == participant {
			return nick, true
		}
	}
	return "", false
}
