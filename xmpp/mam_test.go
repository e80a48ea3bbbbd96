package xmpp

import (
	"context"
	"testing"
	"time"
)

// While the listener catches up, the posts it dispatches do not move the
// room's cursor: a crash then would lose what the archive had yet to give.
// The end of the catch-up moves it to the furthest of them.
func TestCursorHeldDuringCatchUp(t *testing.T) {
	a, err := New(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	a.host = newFakeHost()
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a.advanceCursor(ctx, testRoom, t0, testRoom+"/a")

	release := a.holdCursor(testRoom)
	a.advanceCursor(ctx, testRoom, t0.Add(2*time.Minute), testRoom+"/live")
	a.advanceCursor(ctx, testRoom, t0.Add(time.Minute), testRoom+"/archived")
	if at, id, _ := a.cursorOf(ctx, testRoom); !at.Equal(t0) || id != testRoom+"/a" {
		t.Fatalf("cursor moved during the catch-up to %s %s", at, id)
	}
	release(ctx)
	if at, id, _ := a.cursorOf(ctx, testRoom); !at.Equal(t0.Add(2*time.Minute)) || id != testRoom+"/live" {
		t.Fatalf("cursor after the catch-up at %s %s, want the live post", at, id)
	}
	a.advanceCursor(ctx, testRoom, t0.Add(3*time.Minute), testRoom+"/next")
	if _, id, _ := a.cursorOf(ctx, testRoom); id != testRoom+"/next" {
		t.Fatalf("cursor at %s after the catch-up, want the next post", id)
	}
}
