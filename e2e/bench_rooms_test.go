package e2e

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// BenchmarkRooms carries b.N posts from the MUCs of PARLEY_BENCH_ROOMS
// portals (default 10) into their Matrix rooms: one slixmpp user posts in
// each MUC on real Prosody, and one Matrix user on real Synapse, a member of
// every room, reads them. It reports the posts per second that arrived, the
// latency from the XMPP send to the Matrix client's sync (p50, p99) and the
// posts lost (not arrived once 30 s passed, after the last send, without
// any post arriving).
//
//	go test ./e2e -run '^$' -bench Rooms -benchtime 2000x
//
// PARLEY_BENCH_RATE (default 0: as fast as the clients can) paces the total
// send rate in posts per second.
func BenchmarkRooms(b *testing.B) {
	rooms, rate := max(1, envInt("PARLEY_BENCH_ROOMS", 10)), envInt("PARLEY_BENCH_RATE", 0)
	portals := make([][2]string, rooms)
	for i := range portals {
		portals[i] = [2]string{fmt.Sprintf("#bench%d:localhost", i), fmt.Sprintf("bench%d@%s", i, peertest.MUCDomain)}
	}
	st := newStack(b, stackSettings{homeserver: "synapse", logLevel: "info", portals: portals})
	reader := peertest.ConnectMatrix(b, st.hs, "reader", "readerpassword")
	ctx := timeout(b, 20*time.Minute)
	roomIDs := map[id.RoomID]int{}
	for i := range rooms {
		resp, err := reader.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: fmt.Sprintf("bench%d", i), Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		roomIDs[resp.RoomID] = i
	}
	posters := make([]*peertest.XMPPClient, rooms)
	for i := range posters {
		user := fmt.Sprintf("poster%d", i)
		st.prosody.Register(b, user, "posterpass")
		posters[i] = peertest.ConnectXMPP(b, st.prosody, user, "posterpass")
		enterMUC(b, posters[i], portals[i][1], "Poster "+strconv.Itoa(i), "")
	}
	st.start(true)
	// Warm up: every portal's ghost joins its Matrix room on its first post,
	// which is not measured.
	for i, c := range posters {
		c.SendGroupchat(b, portals[i][1], fmt.Sprintf("warm-%d", i), fmt.Sprintf("warm-%d", i))
	}
	for range posters {
		if _, ok := reader.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return strings.HasPrefix(m.Body, "warm-") }); !ok {
			b.Fatal("a portal did not carry its first post")
		}
	}

	n := b.N
	sent := make([]time.Time, n)
	got := make([]bool, n)
	latencies := make([]time.Duration, 0, n)
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	b.ResetTimer()
	start := time.Now()
	done := make(chan time.Time, 1)
	go func() {
		next := time.Now()
		for i := range n {
			if interval > 0 {
				time.Sleep(time.Until(next))
				next = next.Add(interval)
			}
			sent[i] = time.Now()
			r := i % rooms
			posters[r].SendGroupchat(b, portals[r][1], fmt.Sprintf("bench-%d", i), fmt.Sprintf("bench-%d", i))
		}
		done <- time.Now()
	}()
	// Once every post is sent, a post not arrived after 30 s without any
	// arriving is lost.
	var last, lastSend time.Time
	for len(latencies) < n {
		select {
		case lastSend = <-done:
		default:
		}
		if !lastSend.IsZero() && time.Since(maxTime(lastSend, last)) > 30*time.Second || ctx.Err() != nil {
			break
		}
		step, cancel := context.WithTimeout(ctx, time.Second)
		m, ok := reader.NextMessage(step, func(m peertest.MatrixMessage) bool { return strings.HasPrefix(m.Body, "bench-") })
		cancel()
		if !ok {
			continue
		}
		var i int
		if _, err := fmt.Sscanf(m.Body, "bench-%d", &i); err != nil || i < 0 || i >= n {
			b.Fatalf("unexpected post %q", m.Body)
		}
		if roomIDs[m.Room] != i%rooms {
			b.Errorf("post %d arrived in room %d, want %d", i, roomIDs[m.Room], i%rooms)
		}
		if got[i] {
			b.Errorf("post %d arrived twice", i)
			continue
		}
		got[i] = true
		last = time.Now()
		latencies = append(latencies, last.Sub(sent[i]))
	}
	b.StopTimer()
	lost := n - len(latencies)
	if lost > 0 {
		b.Errorf("%d of %d posts lost", lost, n)
	}
	if len(latencies) == 0 {
		return
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) time.Duration { return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))] }
	elapsed := last.Sub(start)
	b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "posts/s")
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lost), "lost")
	b.Logf("%d posts MUC → Matrix room over %d portals, rate %s: %s, %.1f posts/s, p50 %s, p99 %s, %d lost", n, rooms,
		map[bool]string{true: "unpaced", false: strconv.Itoa(rate) + "/s"}[rate == 0], elapsed.Round(time.Millisecond),
		float64(len(latencies))/elapsed.Seconds(), pct(0.50).Round(time.Millisecond/10), pct(0.99).Round(time.Millisecond/10), lost)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
