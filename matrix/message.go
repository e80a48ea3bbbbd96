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

// txnID derives a client-server transaction ID from the source ID of what is
// sent ("parley-" and the first 128 bits of its SHA-256, in hex), so that
// sending it again (after a crash, on retry) reuses the ID and the homeserver
// answers with the event it already created instead of a duplicate. An
// empty sourceID gives "": mautrix then picks a unique ID.
func txnID(sourceID string) string {
	if sourceID == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(sourceID))
	return "parley-" + hex.EncodeToString(sum[:16])
}
