package calls_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/parleygw/parley/calls"
	"github.com/parleygw/parley/event"
)

// step is one input to a call: an event from a leg, or the clock moving.
type step struct {
	leg     calls.LegID
	evt     event.Event
	advance time.Duration // move the clock and call Expire
	media   bool          // call MediaTimeout
	want    []string
}

func ring(early bool) event.Event          { return &event.CallRinging{EarlyMedia: early} }
func answer() event.Event                  { return &event.CallAnswer{} }
func bye(r event.HangupReason) event.Event { return &event.CallHangup{Reason: r} }

func TestCallEndings(t *testing.T) {
	tests := []struct {
		name    string
		callees []calls.LegID
		steps   []step
		state   calls.State
		reason  event.HangupReason
	}{
		{"callee hangs up", []calls.LegID{"b"}, []step{
			{leg: "b", evt: ring(false), want: []string{"ringing a from b"}},
			{leg: "b", evt: answer(), want: []string{"answer a from b"}},
			{leg: "b", evt: bye(event.HangupNormal), want: []string{"hangup a normal"}},
		}, calls.StateEnded, event.HangupNormal},
		{"caller hangs up", []calls.LegID{"b"}, []step{
			{leg: "b", evt: answer(), want: []string{"answer a from b"}},
			{leg: "a", evt: bye(event.HangupNormal), want: []string{"hangup b normal"}},
		}, calls.StateEnded, event.HangupNormal},
		{"busy", []calls.LegID{"b"}, []step{
			{leg: "b", evt: bye(event.HangupBusy), want: []string{"hangup a busy"}},
		}, calls.StateEnded, event.HangupBusy},
		{"decline", []calls.LegID{"b"}, []step{
			{leg: "b", evt: ring(false), want: []string{"ringing a from b"}},
			{leg: "b", evt: bye(event.HangupDeclined), want: []string{"hangup a declined"}},
		}, calls.StateEnded, event.HangupDeclined},
		{"callee hangs up before answering is a decline", []calls.LegID{"b"}, []step{
			{leg: "b", evt: ring(false), want: []string{"ringing a from b"}},
			{leg: "b", evt: bye(event.HangupNormal), want: []string{"hangup a declined"}},
		}, calls.StateEnded, event.HangupDeclined},
		{"no answer", []calls.LegID{"b", "c"}, []step{
			{leg: "b", evt: ring(false), want: []string{"ringing a from b"}},
			{advance: 59 * time.Second},
			{advance: time.Second, want: []string{"hangup a no-answer", "hangup b no-answer", "hangup c no-answer"}},
			{leg: "b", evt: answer(), want: []string{"hangup b no-answer"}},
		}, calls.StateEnded, event.HangupNoAnswer},
		{"caller cancels", []calls.LegID{"b", "c"}, []step{
			{leg: "c", evt: ring(false), want: []string{"ringing a from c"}},
			{leg: "a", evt: bye(event.HangupNormal), want: []string{"hangup b cancelled", "hangup c cancelled"}},
			{leg: "c", evt: answer(), want: []string{"hangup c cancelled"}},
			{leg: "b", evt: bye(event.HangupNormal)},
		}, calls.StateEnded, event.HangupCancelled},
		{"media timeout", []calls.LegID{"b"}, []step{
			{leg: "b", evt: answer(), want: []string{"answer a from b"}},
			{media: true, want: []string{"hangup a media-timeout", "hangup b media-timeout"}},
			{media: true},
		}, calls.StateEnded, event.HangupMediaTimeout},
		{"answered elsewhere", []calls.LegID{"b", "c", "d"}, []step{
			{leg: "b", evt: ring(false), want: []string{"ringing a from b"}},
			{leg: "c", evt: ring(false)},
			{leg: "d", evt: bye(event.HangupBusy)},
			{leg: "c", evt: answer(), want: []string{"answer a from c", "hangup b answered-elsewhere"}},
			{leg: "b", evt: answer(), want: []string{"hangup b answered-elsewhere"}},
			{leg: "c", evt: bye(event.HangupNormal), want: []string{"hangup a normal"}},
		}, calls.StateEnded, event.HangupNormal},
		{"every fork fails: decline beats busy and unavailable", []calls.LegID{"b", "c", "d"}, []step{
			{leg: "b", evt: bye(event.HangupUnavailable)},
			{leg: "c", evt: bye(event.HangupDeclined)},
			{leg: "d", evt: bye(event.HangupBusy), want: []string{"hangup a declined"}},
		}, calls.StateEnded, event.HangupDeclined},
		{"early media, then answer by another fork", []calls.LegID{"b", "c"}, []step{
			{leg: "b", evt: ring(true), want: []string{"early-media a from b"}},
			{leg: "c", evt: ring(true)},
			{leg: "c", evt: answer(), want: []string{"answer a from c", "hangup b answered-elsewhere"}},
		}, calls.StateAnswered, 0},
		{"ringing after early media changes nothing", []calls.LegID{"b"}, []step{
			{leg: "b", evt: ring(false), want: []string{"ringing a from b"}},
			{leg: "b", evt: ring(true), want: []string{"early-media a from b"}},
			{leg: "b", evt: ring(false)},
		}, calls.StateEarlyMedia, 0},
		{"hangup without a valid reason is a failure", []calls.LegID{"b"}, []step{
			{leg: "b", evt: answer(), want: []string{"answer a from b"}},
			{leg: "a", evt: bye(0), want: []string{"hangup b failure"}},
		}, calls.StateEnded, event.HangupFailure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			c, err := calls.New(calls.Config{RingTimeout: time.Minute, Now: func() time.Time { return now }}, "a", tc.callees...)
			if err != nil {
				t.Fatal(err)
			}
			var invites []string
			for _, l := range tc.callees {
				invites = append(invites, "invite "+string(l))
			}
			if got := names(c.Start()); !reflect.DeepEqual(got, invites) {
				t.Fatalf("Start() = %v, want %v", got, invites)
			}
			for i, s := range tc.steps {
				var got []calls.Action
				switch {
				case s.evt != nil:
					got, err = c.Handle(s.leg, s.evt)
					if err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
				case s.media:
					got = c.MediaTimeout()
				default:
					now = now.Add(s.advance)
					got = c.Expire()
				}
				if g := names(got); !reflect.DeepEqual(g, s.want) {
					t.Fatalf("step %d (%s %v): actions %v, want %v", i, s.leg, s.evt, g, s.want)
				}
			}
			if c.State() != tc.state || c.Reason() != tc.reason {
				t.Errorf("ended in %v/%v, want %v/%v", c.State(), c.Reason(), tc.state, tc.reason)
			}
		})
	}
}

func names(as []calls.Action) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

func TestCallBadInput(t *testing.T) {
	if _, err := calls.New(calls.Config{}, "a"); err == nil {
		t.Error("a call without callee was accepted")
	}
	if _, err := calls.New(calls.Config{}, "a", "b", "a"); err == nil {
		t.Error("a repeated leg was accepted")
	}
	c, err := calls.New(calls.Config{}, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	if _, err := c.Handle("x", answer()); !errors.Is(err, calls.ErrUnknownLeg) {
		t.Errorf("answer from an unknown leg: %v", err)
	}
	for _, evt := range []event.Event{answer(), ring(false), &event.CallInvite{}, &event.Message{}} {
		if _, err := c.Handle("a", evt); err == nil {
			t.Errorf("%s from the caller was accepted", evt.Kind())
		}
	}
	if d, ok := c.Deadline(); !ok || d.IsZero() {
		t.Errorf("Deadline() = %v, %v while ringing", d, ok)
	}
	_ = fmt.Sprint(c.State())
}
