package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// killCount is how many times TestKillLoopExactlyOnce kills parley per
// homeserver: PARLEY_KILLS, or 10.
func killCount() int {
	if n, err := strconv.Atoi(os.Getenv("PARLEY_KILLS")); err == nil && n > 0 {
		return n
	}
	return 10
}

// killSeed is the seed of the kill times: PARLEY_KILL_SEED, to replay a
// run, or a random one (logged).
func killSeed() uint64 {
	if n, err := strconv.ParseUint(os.Getenv("PARLEY_KILL_SEED"), 10, 64); err == nil {
		return n
	}
	return rand.Uint64()
}

// TestKillLoopExactlyOnce streams messages both ways between alice (XMPP)
// and bob (Matrix) while parley is killed with SIGKILL at random moments,
// PARLEY_KILLS times (10 by default), and started again each time; then it
// counts, by message ID, what was lost and what was duplicated.
//
// Towards Matrix the count is taken from the room itself (bob reads its
// whole history), so that a second event made by a resend shows even where
// a client would not. A kill while parley's PUT .../send/... is in flight
// is the case Dendrite used to turn into a duplicate: it stores the event
// but forgets the transaction ID of a request that did not complete.
// Towards XMPP the count is what alice's client got: the same body under a
// second stanza id is a duplicate, the same id again a retransmission that
// clients recognise (XEP-0359), reported apart.
//
// alice behaves as a careful client: she asks for receipts and resends,
// with the same id, what got none, once the kills are over.
func TestKillLoopExactlyOnce(t *testing.T) {
	for _, hs := range []string{"dendrite", "synapse"} {
		t.Run(hs, func(t *testing.T) { killLoop(t, hs, killCount()) })
	}
}

func killLoop(t *testing.T, hs string, kills int) {
	st, alice, bob, room := chat(t, hs)
	seed := killSeed()
	rng := rand.New(rand.NewPCG(seed, seed))
	t.Logf("%s: %d kills, PARLEY_KILL_SEED=%d", hs, kills, seed)

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
			atAlice.mu.Lock()
			switch e.Ev {
			case "message":
				atAlice.mu.Unlock()
				atAlice.add(e.Body, e.ID)
				continue
			case "receipt":
				atAlice.receipts[e.ID] = true
			case "error":
				atAlice.bounced[e.ID] = true
			}
			atAlice.mu.Unlock()
		}
	}()
	go func() { // what bob's client syncs: progress only, the room is read at the end
		defer wg.Done()
		for {
			m, ok := bob.NextMessage(ctx, nil)
			if !ok {
				return
			}
			atBob.add(m.Body, string(m.EventID))
		}
	}()

	// Every 40 ms alice writes 4 messages and bob 1, so that parley always
	// has a send to the homeserver in flight; parley runs for 0.2–2 s, is
	// killed, and is started again 0–300 ms later, without waiting for it
	// to be ready: a kill may land anywhere, start-up included.
	const pace, burst = 40 * time.Millisecond, 4
	eventIDs := map[string]string{} // m2x body → Matrix event ID
	running, killed, nx, nm := true, 0, 0, 0
	next := time.Now().Add(time.Duration(200+rng.IntN(1800)) * time.Millisecond)
	for killed < kills || !running {
		if time.Now().After(next) {
			if running {
				st.stop(syscall.SIGKILL)
				killed++
				next = time.Now().Add(time.Duration(rng.IntN(300)) * time.Millisecond)
			} else {
				st.start(false)
				next = time.Now().Add(time.Duration(200+rng.IntN(1800)) * time.Millisecond)
			}
			running = !running
		}
		for range burst {
			body := fmt.Sprintf("x2m-%d", nx)
			alice.Send(t, bobGhostJID, body, body, true)
			nx++
		}
		body := fmt.Sprintf("m2x-%d", nm)
		evID, err := bob.SendText(ctx, room, body, body)
		if err != nil {
			t.Fatalf("bob's homeserver refused message %d: %v", nm, err)
		}
		eventIDs[body] = string(evID)
		nm++
		time.Sleep(pace)
	}
	t.Logf("%d messages XMPP→Matrix, %d Matrix→XMPP, %d kills", nx, nm, killed)

	// Resend what has no receipt until both sides have everything.
	resends := 0
	resending, nudged := time.Now(), false
	for {
		xd, _ := atBob.count("x2m", nx)
		md, _ := atAlice.count("m2x", nm)
		if xd < nx { // a sync may skip events (a limited timeline): read the room
			if inRoom, err := roomHistory(ctx, bob.Client, room, aliceGhostMXID); err == nil {
				xd = 0
				atBob.mu.Lock()
				for i := range nx {
					if b := fmt.Sprintf("x2m-%d", i); atBob.received[b] > 0 || len(inRoom[b]) > 0 {
						xd++
					}
				}
				atBob.mu.Unlock()
			}
		}
		if xd == nx && md == nm {
			break
		}
		if md < nm && !nudged && time.Since(resending) > 20*time.Second {
			nudged = nudgeSynapse(t, st, bob, room, atAlice.missing("m2x", nm), eventIDs)
		}
		select {
		case <-ctx.Done():
			for _, body := range atAlice.missing("m2x", nm) {
				t.Logf("where is %s?\n%s", body, matrixEvidence(st, eventIDs[body]))
			}
			t.Fatalf("%s: bob has %d of %d x2m (missing %v), alice has %d of %d m2x (missing %v) (%d resends)\n%s",
				hs, xd, nx, atBob.missing("x2m", nx), md, nm, atAlice.missing("m2x", nm), resends, tail(st.log(), 30))
		case <-time.After(3 * time.Second):
		}
		atAlice.mu.Lock()
		var again []string
		for i := range nx {
			if mid := fmt.Sprintf("x2m-%d", i); !atAlice.receipts[mid] {
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

	inRoom, err := roomHistory(ctx, bob.Client, room, aliceGhostMXID)
	if err != nil {
		t.Fatalf("read the room: %v", err)
	}
	// An event is in the room when bob's sync or the room's history shows
	// it; a body under two event IDs is a duplicate.
	var xLost, xDup, syncOnly, historyOnly []string
	unmarked := 0
	atBob.mu.Lock()
	defer atBob.mu.Unlock()
	for i := range nx {
		body := fmt.Sprintf("x2m-%d", i)
		ids := map[string]bool{}
		for evID, marked := range inRoom[body] {
			ids[evID] = true
			if !marked {
				unmarked++
			}
			if atBob.ids[body][evID] == 0 {
				historyOnly = append(historyOnly, body+" "+evID)
			}
		}
		for evID := range atBob.ids[body] {
			if !ids[evID] {
				syncOnly = append(syncOnly, body+" "+evID)
			}
			ids[evID] = true
		}
		switch len(ids) {
		case 0:
			xLost = append(xLost, body)
		case 1:
		default:
			xDup = append(xDup, fmt.Sprintf("%s×%d", body, len(ids)))
		}
	}
	if len(syncOnly)+len(historyOnly) > 0 {
		t.Logf("%s: events seen by bob's sync only: %v; in the room's history only: %v", hs, syncOnly, historyOnly)
	}
	found := strings.Count(st.log(), "found the event an earlier attempt sent")
	md, mdup := atAlice.count("m2x", nm)
	t.Logf("%s, %d kills: XMPP→Matrix %d messages, %d lost %v, %d duplicated in the room %v (%d without the source mark); "+
		"%d resends found already in the room; Matrix→XMPP %d messages, %d lost, %d duplicated, %d retransmissions under the same "+
		"stanza id; %d XMPP resends",
		hs, killed, nx, len(xLost), xLost, len(xDup), xDup, unmarked, found, nm, nm-md, mdup, atAlice.retransmissions(), resends)
	if len(xLost) != 0 || len(xDup) != 0 || md != nm || mdup != 0 {
		t.Errorf("%s: not exactly once: XMPP→Matrix %d lost, %d duplicated; Matrix→XMPP %d lost, %d duplicated",
			hs, len(xLost), len(xDup), nm-md, mdup)
	}
}

// roomHistory reads the whole of room as cli, newest first, and returns the
// m.room.message events sender sent there: by body, their event IDs and
// whether each carries parley's source mark.
func roomHistory(ctx context.Context, cli *mautrix.Client, room id.RoomID, sender id.UserID) (map[string]map[string]bool, error) {
	bodies := map[string]map[string]bool{}
	filter := &mautrix.FilterPart{Senders: []id.UserID{sender}, Types: []event.Type{event.EventMessage}}
	from := ""
	for {
		resp, err := cli.Messages(ctx, room, from, "", mautrix.DirectionBackward, filter, 500)
		if err != nil {
			return nil, err
		}
		for _, e := range resp.Chunk {
			if e.Sender != sender || e.Type != event.EventMessage {
				continue
			}
			_ = e.Content.ParseRaw(e.Type)
			body := e.Content.AsMessage().Body
			if bodies[body] == nil {
				bodies[body] = map[string]bool{}
			}
			_, marked := e.Content.Raw["io.github.parleygw.source"]
			bodies[body][e.ID.String()] = marked
		}
		if len(resp.Chunk) == 0 || resp.End == "" || resp.End == from {
			return bodies, nil
		}
		from = resp.End
	}
}
