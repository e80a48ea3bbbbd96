package xmpp

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

func TestDispatchError(t *testing.T) {
	tests := []struct {
		err  error
		want stanza.Error
	}{
		{fmt.Errorf("route alice: %w", bridges.ErrNoRoute), stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound}},
		{fmt.Errorf("route alice: %w", bridges.ErrRefused), stanza.Error{Type: stanza.Auth, Condition: stanza.Forbidden}},
		{errors.New("disk full"), stanza.Error{Type: stanza.Wait, Condition: stanza.InternalServerError}},
		{context.DeadlineExceeded, stanza.Error{Type: stanza.Wait, Condition: stanza.InternalServerError}},
	}
	for _, tt := range tests {
		if got := dispatchError(tt.err); got.Type != tt.want.Type || got.Condition != tt.want.Condition {
			t.Errorf("dispatchError(%v) = %s/%s, want %s/%s", tt.err, got.Type, got.Condition, tt.want.Type, tt.want.Condition)
		}
	}
}

func TestFailureError(t *testing.T) {
	tests := []struct {
		cond event.Condition
		want stanza.Error
	}{
		{event.NoRecipient, stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound}},
		{event.Refused, stanza.Error{Type: stanza.Auth, Condition: stanza.Forbidden}},
		{event.Undeliverable, stanza.Error{Type: stanza.Cancel, Condition: stanza.RecipientUnavailable}},
		{event.Condition(200), stanza.Error{Type: stanza.Cancel, Condition: stanza.UndefinedCondition}},
	}
	for _, tt := range tests {
		got := failureError(&event.Failure{Condition: tt.cond, Reason: "why"})
		if got.Type != tt.want.Type || got.Condition != tt.want.Condition || got.Text[""] != "why" {
			t.Errorf("failureError(%d) = %+v, want %s/%s with the reason", tt.cond, got, tt.want.Type, tt.want.Condition)
		}
	}
	if got := failureError(&event.Failure{}); got.Text != nil {
		t.Errorf("failureError without a reason has text %v", got.Text)
	}
}
