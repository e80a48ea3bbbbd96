package matrix

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/event"
)

// errUnsupported marks a Matrix event Parley cannot translate (an image, a
// poll...). The sender is told in the room.
var errUnsupported = errors.New("not supported by the gateway")

// messageFromMatrix translates an m.room.message event sent by sender in a
// DM room with ghost into a Message from sender to ghost.
//
// m.text, m.notice and m.emote are translated (an emote becomes "/me ...");
// formatted_body becomes HTML when format is org.matrix.custom.html. An edit
// (m.relates_to rel_type m.replace) takes its text from m.new_content and
// sets Replaces; a reply (m.in_reply_to that is not a thread fallback) sets
// ReplyTo. Any other msgtype gives an error wrapping errUnsupported.
func messageFromMatrix(evt *mevent.Event, ghost id.UserID) (*event.Message, error) {
	var content mevent.MessageEventContent
	if err := json.Unmarshal(evt.Content.VeryRaw, &content); err != nil {
		return nil, fmt.Errorf("parse content of %s: %w", evt.ID, err)
	}
	msg := &event.Message{Header: event.Header{
		ID:   evt.ID.String(),
		From: event.Address{Network: event.Matrix, ID: evt.Sender.String()},
		To:   event.Address{Network: event.Matrix, ID: ghost.String()},
	}}
	if evt.Timestamp > 0 {
		msg.Time = time.UnixMilli(evt.Timestamp).UTC()
	}
	text := &content
	if rel := content.RelatesTo; rel != nil {
		if edited := rel.GetReplaceID(); edited != "" {
			msg.Replaces = edited.String()
			if content.NewContent != nil {
				text = content.NewContent
			}
		}
		msg.ReplyTo = rel.GetNonFallbackReplyTo().String()
	}
	switch text.MsgType {
	case mevent.MsgText, mevent.MsgNotice, mevent.MsgEmote:
	case "":
		return nil, fmt.Errorf("message %s without msgtype: %w", evt.ID, errUnsupported)
	default:
		return nil, fmt.Errorf("%s messages are %w", text.MsgType, errUnsupported)
	}
	msg.Body = text.Body
	if text.Format == mevent.FormatHTML && text.FormattedBody != "" {
		msg.HTML = text.FormattedBody
	}
	switch text.MsgType {
	case mevent.MsgNotice:
		msg.Notice = true
	case mevent.MsgEmote:
		msg.Body = "/me " + msg.Body
		if msg.HTML != "" {
			msg.HTML = "/me " + msg.HTML
		}
	}
	return msg, nil
}

// messageContent is the m.room.message content that delivers msg: m.text, or
// m.notice when msg.Notice, with formatted_body when msg.HTML is set.
//
// ReplyTo and Replaces are not sent: they hold IDs of the source network.
func messageContent(msg *event.Message) *mevent.MessageEventContent {
	c := &mevent.MessageEventContent{MsgType: mevent.MsgText, Body: msg.Body}
	if msg.Notice {
		c.MsgType = mevent.MsgNotice
	}
	if msg.HTML != "" {
		c.Format = mevent.FormatHTML
		c.FormattedBody = msg.HTML
	}
	return c
}

// noticeContent is an m.notice with text.
func noticeContent(text string) *mevent.MessageEventContent {
	return &mevent.MessageEventContent{MsgType: mevent.MsgNotice, Body: text}
}

// sourceKey is the content key with which Parley marks every event it
// sends into Matrix. Its value is the event's transaction ID (txnID), a
// digest of the source ID, so it says nothing of the source network's
// addresses. It lets Parley find an event it sent in an attempt whose
// answer it never had (sentBefore in room.go): homeservers do not all
// recognise a resent transaction ID (Dendrite forgets the ID of a request
// that did not complete). The namespace is the reverse of the project's
// home, parleygw.github.io.
const sourceKey = "io.github.parleygw.source"

// markedContent is content with sourceKey set to marker; an empty marker
// leaves content as it is.
func markedContent(content *mevent.MessageEventContent, marker string) any {
	if marker == "" {
		return content
	}
	return &mevent.Content{Parsed: content, Raw: map[string]any{sourceKey: marker}}
}

// markerOf returns the sourceKey of evt's content, or "".
func markerOf(evt *mevent.Event) string {
	var c struct {
		Marker string `json:"io.github.parleygw.source"`
	}
	if len(evt.Content.VeryRaw) == 0 || json.Unmarshal(evt.Content.VeryRaw, &c) != nil {
		return ""
	}
	return c.Marker
}

// txnID derives a client-server transaction ID from the source ID of what is
// sent ("parley-" and the first 128 bits of its SHA-256, in hex), so that
// sending it again (after a crash, on retry) reuses the ID, and a homeserver
// that remembers it answers with the event it already created instead of a
// duplicate. Not every homeserver does in every case, so Parley does not
// rely on it alone (sourceKey). An empty sourceID gives "": mautrix then
// picks a unique ID.
func txnID(sourceID string) string {
	if sourceID == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(sourceID))
	return "parley-" + hex.EncodeToString(sum[:16])
}
