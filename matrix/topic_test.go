package matrix

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// topicEvent is an m.room.topic state event.
func topicEvent(eventID, sender, room, topic string) string {
	return fmt.Sprintf(`{"type":"m.room.topic","event_id":%q,"sender":%q,"room_id":%q,"state_key":"","origin_server_ts":1700000000000,"content":{"topic":%q}}`,
		eventID, sender, room, topic)
}

// A real user's topic change in a portal room is dispatched; one by a
// ghost, or in a room that is no portal, is not.
func TestPortalTopicDispatched(t *testing.T) {
	a, _, host, _ := portalAdapter(t, nil, teamAlias)
	status, _ := putTxn(t, a, "t1", txnBody(
		topicEvent("$t1", testUser, teamRoom, "Plans for May"),
		topicEvent("$t2", testGhost, teamRoom, "a ghost's"),
		topicEvent("$t3", testUser, "!other:localhost", "elsewhere"),
	))
	if status != http.StatusOK {
		t.Fatalf("transaction: %d", status)
	}
	var topics []*event.Topic
	for _, e := range host.events() {
		if tp, ok := e.(*event.Topic); ok {
			topics = append(topics, tp)
		}
	}
	if len(topics) != 1 {
		t.Fatalf("dispatched %d topics, want 1: %v", len(topics), topics)
	}
	tp := topics[0]
	want := event.Header{ID: "$t1", From: event.Address{Network: event.Matrix, ID: testUser}, To: event.Address{Network: event.Matrix, ID: teamAlias},
		FromName: tp.FromName, Room: true, Time: tp.Time}
	if tp.Header != want || tp.Text != "Plans for May" {
		t.Errorf("dispatched %+v %q, want %+v", tp.Header, tp.Text, want)
	}
}

// The other side's topic is set as the participant's ghost; when the room
// refuses the ghost, as the bot; when it refuses both, the error is final.
func TestPortalTopicSent(t *testing.T) {
	a, hs, _, _ := portalAdapter(t, nil, teamAlias)
	ctx := context.Background()
	topic := func(id string) *event.Topic {
		return &event.Topic{Header: event.Header{ID: id, From: event.Address{Network: event.Matrix, ID: testGhost},
			To: event.Address{Network: event.Matrix, ID: teamAlias}, FromName: "Bob", Room: true}, Text: "Plans for May"}
	}
	allow := map[string]bool{testGhost: true, testBot: true}
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if r.Method != http.MethodPut || !strings.Contains(r.Path, "/state/m.room.topic") {
			return 0, "", false
		}
		if r.Body["topic"] != "Plans for May" {
			return http.StatusBadRequest, `{"errcode":"M_BAD_JSON","error":"topic"}`, true
		}
		if !allow[r.Query["user_id"]] {
			return http.StatusForbidden, `{"errcode":"M_FORBIDDEN","error":"user_level (0) < state_default (50)"}`, true
		}
		return http.StatusOK, `{"event_id":"$topic"}`, true
	})
	setters := func() []string {
		var out []string
		for _, r := range hs.requests() {
			if r.Method == http.MethodPut && strings.Contains(r.Path, "/state/m.room.topic") {
				out = append(out, r.Query["user_id"])
			}
		}
		hs.reset()
		return out
	}

	if evt, err := a.Send(ctx, topic("x1")); err != nil || evt != "$topic" {
		t.Fatalf("Send = %q, %v", evt, err)
	}
	if got := setters(); len(got) != 1 || got[0] != testGhost {
		t.Errorf("topic set as %v, want the ghost", got)
	}
	allow[testGhost] = false
	if _, err := a.Send(ctx, topic("x2")); err != nil {
		t.Fatalf("Send as the bot: %v", err)
	}
	if got := setters(); len(got) != 2 || got[0] != testGhost || got[1] != testBot {
		t.Errorf("topic set as %v, want the ghost then the bot", got)
	}
	allow[testBot] = false
	if _, err := a.Send(ctx, topic("x3")); !bridges.IsPermanent(err) {
		t.Errorf("Send refused to both = %v, want a permanent error", err)
	}
}
