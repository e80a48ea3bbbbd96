package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tally counts, by message ID, what one side received, and for the XMPP
// sender which of its messages got a receipt and which bounced.
type tally struct {
	mu       sync.Mutex
	received map[string]int
	// ids holds, per body, the message IDs (XMPP stanza ids) it arrived
	// under and how often: the same id twice is a retransmission a client
	// recognises (XEP-0359), two ids would be a real duplicate.
	ids      map[string]map[string]int
	receipts map[string]bool
	bounced  map[string]bool
}

func newTally() *tally {
	return &tally{received: map[string]int{}, ids: map[string]map[string]int{}, receipts: map[string]bool{}, bounced: map[string]bool{}}
}

// add records body arriving under id.
func (t *tally) add(body, id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ids[body] == nil {
		t.ids[body] = map[string]int{}
	}
	t.ids[body][id]++
	t.received[body] = len(t.ids[body])
}

// missing lists the messages prefix-0 … prefix-(n-1) not received.
func (t *tally) missing(prefix string, n int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for i := range n {
		if b := fmt.Sprintf("%s-%d", prefix, i); t.received[b] == 0 {
			out = append(out, b)
		}
	}
	return out
}

// retransmissions counts arrivals of a body under an id it already had.
func (t *tally) retransmissions() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, byID := range t.ids {
		for _, c := range byID {
			n += c - 1
		}
	}
	return n
}

func (t *tally) count(prefix string, n int) (distinct, dups int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range n {
		c := t.received[fmt.Sprintf("%s-%d", prefix, i)]
		if c > 0 {
			distinct++
		}
		if c > 1 {
			dups += c - 1
		}
	}
	return distinct, dups
}

func messageCount() int {
	if n, err := strconv.Atoi(os.Getenv("PARLEY_RESTART_MESSAGES")); err == nil && n > 0 {
		return n
	}
	return 200
}

// TestRestartDeliversExactlyOnce sends 200 messages each way while parley
// is killed with SIGKILL and started again, and checks that every message
// arrives exactly once, by count and by ID. The XMPP sender behaves like a
// careful client: it asks for XEP-0184 receipts (parley sends one only after
// the message is stored) and resends, with the same id, what bounced or got
// no receipt. Towards XMPP, a message parley wrote just before it was killed
// (before the server answered its delivery barrier) is sent again after the
// restart with the same stanza id and origin-id: a client recognises it
// (XEP-0359), so it counts once; the same body under two ids would fail.
func TestRestartDeliversExactlyOnce(t *testing.T) {
	st, alice, bob, room := chat(t, "synapse")
	n := messageCount()

	atAlice, atBob := newTally(), newTally()
	ctx := timeout(t, 4*time.Minute)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // everything alice's client sees
		defer wg.Done()
		for {
			e, ok := alice.Next(ctx, nil)
			if !ok {
				return
			}
			if e.Ev == "message" {
				atAlice.add(e.Body, e.ID)
				continue
			}
			atAlice.mu.Lock()
			switch e.Ev {
			case "receipt":
				atAlice.receipts[e.ID] = true
			case "error":
				atAlice.bounced[e.ID] = true
			}
			atAlice.mu.Unlock()
		}
	}()
	go func() { // everything bob's client sees
		defer wg.Done()
		for {
			m, ok := bob.NextMessage(ctx, nil)
			if !ok {
				return
			}
			atBob.add(m.Body, string(m.EventID))
		}
	}()

	// Kill parley a third of the way in and start it again 40 messages
	// later: meanwhile both sides keep writing.
	killAt, restartAt := n/3, n/3+40
	for i := range n {
		switch i {
		case killAt:
			t.Logf("SIGKILL parley after %d messages each way", i)
			st.stop(syscall.SIGKILL)
		case restartAt:
			st.start(false)
		}
		alice.Send(t, bobGhostJID, fmt.Sprintf("x2m-%d", i), fmt.Sprintf("x2m-%d", i), true)
		if _, err := bob.SendText(ctx, room, fmt.Sprintf("m2x-%d", i), fmt.Sprintf("m2x-%d", i)); err != nil {
			t.Fatalf("bob's homeserver refused message %d: %v", i, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Resend what bounced or has no receipt yet, as a client would, until
	// both sides have everything.
	resends := 0
	for {
		xd, _ := atBob.count("x2m", n)
		md, _ := atAlice.count("m2x", n)
		if xd == n && md == n {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after 4 minutes: bob has %d of %d x2m (missing %v), alice has %d of %d m2x (missing %v) (%d resends)\n%s",
				xd, n, atBob.missing("x2m", n), md, n, atAlice.missing("m2x", n), resends, tail(st.log(), 30))
		case <-time.After(3 * time.Second):
		}
		atAlice.mu.Lock()
		var again []string
		for i := range n {
			mid := fmt.Sprintf("x2m-%d", i)
			if !atAlice.receipts[mid] {
				again = append(again, mid)
			}
		}
		atAlice.bounced = map[string]bool{}
		atAlice.mu.Unlock()
		for _, mid := range again {
			alice.Send(t, bobGhostJID, mid, mid, true)
		}
		resends += len(again)
	}
	time.Sleep(3 * time.Second) // late duplicates would arrive now
	xd, xdup := atBob.count("x2m", n)
	md, mdup := atAlice.count("m2x", n)
	t.Logf("XMPP→Matrix: %d/%d delivered, %d duplicates; Matrix→XMPP: %d/%d delivered, %d duplicates, %d retransmissions "+
		"under the same stanza id; %d XMPP resends", xd, n, xdup, md, n, mdup, atAlice.retransmissions(), resends)
	if xdup != 0 || mdup != 0 {
		t.Errorf("messages delivered more than once: %d XMPP→Matrix, %d Matrix→XMPP", xdup, mdup)
	}
	if !strings.Contains(st.log(), "---- start 2") {
		t.Error("parley was not restarted")
	}
}
