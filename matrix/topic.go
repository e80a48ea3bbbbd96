package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix"
	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// A portal room's topic (m.room.topic) crosses the portal as event.Topic:
// a real user's change is dispatched; the other side's change is set as the
// participant's ghost, or as the bot when the room lets only its moderators
// change the topic and the bot is one. A change by the appservice's own
// users is never dispatched back.

// handleTopic dispatches a change of a portal room's topic by a real user.
func (a *Adapter) handleTopic(ctx context.Context, evt *mevent.Event) error {
	name, ok := a.portalOf(evt.RoomID)
	if !ok || a.owns(evt.Sender) || evt.StateKey == nil || *evt.StateKey != "" {
		return nil
	}
	var content mevent.TopicEventContent
	if err := json.Unmarshal(evt.Content.VeryRaw, &content); err != nil {
		a.log.Warn("skipped malformed topic event", "event", evt.ID.String(), "err", err)
		return nil
	}
	t := &event.Topic{
		Header: event.Header{
			ID:       evt.ID.String(),
			From:     event.Address{Network: event.Matrix, ID: evt.Sender.String()},
			To:       event.Address{Network: event.Matrix, ID: name},
			FromName: a.memberName(ctx, evt.RoomID, evt.Sender),
			Room:     true,
			Time:     time.UnixMilli(evt.Timestamp),
		},
		Text: content.Topic,
	}
	host, _ := a.started()
	err := host.Dispatch(ctx, t)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bridges.ErrNoRoute), errors.Is(err, bridges.ErrRefused):
		a.log.Info("topic not bridged", "room", name, "event", evt.ID.String(), "err", err)
		return nil
	default:
		return fmt.Errorf("dispatch %s: %w", evt.ID, err)
	}
}

// sendTopic sets the topic of the portal room t.To as the ghost t.From,
// which joins first, or as the bot when the room refuses the ghost. It
// returns the state event's ID.
func (a *Adapter) sendTopic(ctx context.Context, t *event.Topic) (string, error) {
	if !t.Room {
		return "", bridges.Permanent(fmt.Errorf("send to matrix: topic %s → %s is not in a room", t.From, t.To))
	}
	ghost, name, room, via, err := a.portalTarget(ctx, t.Header, "topic")
	if err != nil {
		return "", err
	}
	if err := a.joinAsGhost(ctx, name, room, via, ghost, t.FromName); err != nil {
		return "", err
	}
	content := mevent.TopicEventContent{Topic: t.Text}
	evt, err := a.setTopicAs(ctx, ghost, room, &content)
	if errors.Is(err, mautrix.MForbidden) {
		// Only moderators may: the bot may be one.
		evt, err = a.setTopicAs(ctx, a.bot, room, &content)
		if errors.Is(err, mautrix.MForbidden) {
			return "", bridges.Permanent(fmt.Errorf("set the topic of portal room %s: neither %s nor the bot may: %w", name, ghost, err))
		}
	}
	if err != nil {
		return "", a.classify(fmt.Errorf("set the topic of portal room %s: %w", name, err))
	}
	return evt, nil
}

// setTopicAs sets room's topic as user.
func (a *Adapter) setTopicAs(ctx context.Context, user id.UserID, room id.RoomID, content *mevent.TopicEventContent) (string, error) {
	sctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := a.client(user).SendStateEvent(sctx, room, mevent.StateTopic, "", content)
	if err != nil {
		return "", err
	}
	return resp.EventID.String(), nil
}
