package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
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
//
// Synapse can strand a transaction as it leaves recovery, and then never
// send it (nudgeSynapse): the test then says so and makes Synapse recover
// once more, so that it still checks all 200 messages. A message missing
// at the end is traced through Synapse, parley and Prosody (matrixEvidence).
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
	eventIDs := map[string]string{} // m2x body → Matrix event ID
	for i := range n {
		switch i {
		case killAt:
			t.Logf("SIGKILL parley after %d messages each way", i)
			st.stop(syscall.SIGKILL)
		case restartAt:
			st.start(false)
		}
		alice.Send(t, bobGhostJID, fmt.Sprintf("x2m-%d", i), fmt.Sprintf("x2m-%d", i), true)
		evID, err := bob.SendText(ctx, room, fmt.Sprintf("m2x-%d", i), fmt.Sprintf("m2x-%d", i))
		if err != nil {
			t.Fatalf("bob's homeserver refused message %d: %v", i, err)
		}
		eventIDs[fmt.Sprintf("m2x-%d", i)] = string(evID)
		time.Sleep(10 * time.Millisecond)
	}

	// Resend what bounced or has no receipt yet, as a client would, until
	// both sides have everything.
	resends := 0
	resending, nudged := time.Now(), false
	for {
		xd, _ := atBob.count("x2m", n)
		md, _ := atAlice.count("m2x", n)
		if xd == n && md == n {
			break
		}
		if md < n && !nudged && time.Since(resending) > 20*time.Second {
			nudged = nudgeSynapse(t, st, bob, room, atAlice.missing("m2x", n), eventIDs)
		}
		select {
		case <-ctx.Done():
			for _, body := range atAlice.missing("m2x", n) {
				t.Logf("where is %s?\n%s", body, matrixEvidence(st, eventIDs[body]))
			}
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

// matrixEvidence says where the Matrix event evID, which never reached
// XMPP, was last seen: in a transaction Synapse still holds unsent (its
// table application_services_txns), in parley's log (under the event ID or
// its stanza id), in Prosody's log (the stanza id, as received from the
// component), and what Synapse's appservice scheduler logged.
func matrixEvidence(st *stack, evID string) string {
	var b strings.Builder
	sum := sha256.Sum256([]byte(evID))
	stanzaID := "parley-" + hex.EncodeToString(sum[:8]) // xmpp.stableID
	fmt.Fprintf(&b, "event %s, stanza id %s\n", evID, stanzaID)
	grep := func(what, text string, keep func(string) bool, max int) {
		var lines []string
		for _, l := range strings.Split(text, "\n") {
			if keep(l) {
				lines = append(lines, l)
			}
		}
		if len(lines) > max {
			lines = lines[len(lines)-max:]
		}
		fmt.Fprintf(&b, "-- %s (%d lines):\n%s\n", what, len(lines), strings.Join(lines, "\n"))
	}
	mentions := func(l string) bool { return strings.Contains(l, evID) || strings.Contains(l, stanzaID) }
	grep("parley log", st.log(), mentions, 20)
	if p, err := os.ReadFile(filepath.Join(st.prosody.Dir, "prosody.log")); err == nil {
		grep("prosody log", string(p), mentions, 20)
	}
	if st.hs.Kind != "synapse" {
		return b.String()
	}
	if l, err := os.ReadFile(filepath.Join(st.hs.Dir, "homeserver.log")); err == nil {
		grep("synapse appservice scheduler", string(l), func(l string) bool {
			return strings.Contains(l, "appservice") && (strings.Contains(l, "ecover") || strings.Contains(l, "etr") ||
				strings.Contains(l, "push_bulk") || strings.Contains(l, "AS ID"))
		}, 30)
	}
	state, unsent, err := synapseUnsent(st)
	fmt.Fprintf(&b, "-- synapse: appservice state %q, event in unsent transaction %q, %d unsent events (err %v)\n",
		state, unsent[evID], len(unsent), err)
	return b.String()
}

// nudgeSynapse works around a race in Synapse's appservice scheduler
// (synapse/appservice/scheduler.py, _TransactionController.send, seen in
// 1.163): send reads the appservice's state before it creates the
// transaction, and sends it only if the state was "up". When the recoverer
// that resends the transactions of a "down" appservice finds none left and
// marks it up in between, the new transaction is stored and never sent:
// it stays in application_services_txns until the next failed transaction
// starts a recoverer again. Parley never sees its events; nothing it can
// do makes Synapse send them.
//
// When a missing message sits in such a transaction, nudgeSynapse says so
// and makes one transaction fail (parley stopped while bob writes once
// more), so that Synapse's recoverer sends the stranded transaction, oldest
// first. It reports whether it did.
func nudgeSynapse(t *testing.T, st *stack, bob *peertest.MatrixClient, room id.RoomID, missing []string, eventIDs map[string]string) bool {
	t.Helper()
	if st.hs.Kind != "synapse" {
		return false
	}
	state, unsent, err := synapseUnsent(st)
	if err != nil {
		t.Logf("read synapse's appservice tables: %v", err)
		return false
	}
	var stranded []string
	for _, body := range missing {
		if txn, ok := unsent[eventIDs[body]]; ok {
			stranded = append(stranded, fmt.Sprintf("%s (%s in transaction %s)", body, eventIDs[body], txn))
		}
	}
	if state != "up" || len(stranded) == 0 {
		return false
	}
	t.Logf("SYNAPSE BUG: Synapse marks parley up but never sent %v: its appservice scheduler stranded them "+
		"(see nudgeSynapse). Failing one transaction on purpose so that its recoverer sends them.", stranded)
	ctx := timeout(t, 30*time.Second)
	st.stop(syscall.SIGTERM)
	if _, err := bob.SendText(ctx, room, "nudge", "nudge"); err != nil {
		t.Fatalf("bob's homeserver refused the nudge: %v", err)
	}
	for {
		time.Sleep(200 * time.Millisecond)
		if state, _, err := synapseUnsent(st); err == nil && state == "down" {
			break // its recoverer runs; it sends the oldest transaction first
		}
		if ctx.Err() != nil {
			t.Fatal("synapse did not mark parley down while it was stopped")
		}
	}
	st.start(false)
	return true
}

// synapseUnsent reads Synapse's database: the appservice's state ("up",
// "down" or "" before any transaction) and, for each event in a
// transaction Synapse created but has not had acknowledged, the transaction
// ID.
func synapseUnsent(st *stack) (state string, unsent map[string]string, err error) {
	const query = `import json, sqlite3, sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
state = [r[0] for r in c.execute("SELECT state FROM application_services_state")]
txns = {}
for txn, ids in c.execute("SELECT txn_id, event_ids FROM application_services_txns"):
    for e in json.loads(ids): txns[e] = str(txn)
print(json.dumps({"state": (state or [""])[0] or "", "unsent": txns}))`
	out, err := exec.Command(peertest.SynapsePython(), "-c", query, filepath.Join(st.hs.Dir, "homeserver.db")).Output()
	if err != nil {
		return "", nil, fmt.Errorf("query %s: %w", filepath.Join(st.hs.Dir, "homeserver.db"), err)
	}
	var v struct {
		State  string            `json:"state"`
		Unsent map[string]string `json:"unsent"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return "", nil, fmt.Errorf("synapse tables: %w: %s", err, out)
	}
	return v.State, v.Unsent, nil
}
