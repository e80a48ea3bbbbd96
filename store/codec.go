package store

import (
	"encoding/json"
	"fmt"

	"github.com/parleygw/parley/event"
)

// encodeEvent serialises evt for the outbox. The kind travels beside the
// payload (as Kind.String), so the format stays readable in the database.
func encodeEvent(evt event.Event) (kind string, payload []byte, err error) {
	payload, err = json.Marshal(evt)
	if err != nil {
		return "", nil, fmt.Errorf("encode %s event: %w", evt.Kind(), err)
	}
	return evt.Kind().String(), payload, nil
}

// decodeEvent reverses encodeEvent.
func decodeEvent(kind string, payload []byte) (event.Event, error) {
	k, ok := event.ParseKind(kind)
	if !ok {
		return nil, fmt.Errorf("decode event: unknown kind %q", kind)
	}
	var evt event.Event
	switch k {
	case event.KindMessage:
		evt = new(event.Message)
	case event.KindFailure:
		evt = new(event.Failure)
	case event.KindPresence:
		evt = new(event.Presence)
	case event.KindSubscription:
		evt = new(event.Subscription)
	case event.KindMember:
		evt = new(event.Member)
	case event.KindTopic:
		evt = new(event.Topic)
	default:
		return nil, fmt.Errorf("decode event: kind %q has no decoder", kind)
	}
	if err := json.Unmarshal(payload, evt); err != nil {
		return nil, fmt.Errorf("decode %s event: %w", kind, err)
	}
	return evt, nil
}
