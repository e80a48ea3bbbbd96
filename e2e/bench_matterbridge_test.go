package e2e

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// BenchmarkVersusMatterbridge measures, in one run on the same Prosody
// and Synapse, matterbridge (one bot account per side, built by
// scripts/matterbridge.sh) and Parley relaying posts from MUCs into Matrix
// rooms, and native Matrix posts as the baseline:
//
//   - matterbridge: PARLEY_BENCH_ROOMS (default 10) MUC ↔ room pairs, one
//     gateway each in its TOML; its XMPP account is a Prosody user in the
//     MUCs, its Matrix account a Synapse user in the rooms;
//   - Parley: as many other pairs, as portals;
//   - native: as many other rooms, where a second Matrix user posts.
//
// One slixmpp user posts in each MUC; one Matrix user, a member of every
// room, reads. For each rate of PARLEY_BENCH_RATES (posts per second over
// all rooms, default "10,25,40,0"; 0 is as fast as the senders can), each
// of the three sends PARLEY_BENCH_POSTS posts (default 300; flat out
// PARLEY_BENCH_FLAT_POSTS, default 1000) in turn, and the benchmark prints
// one table: posts/s arrived, p50/p99 latency from the send to the reader's
// sync, lost and duplicated posts, and the latency a bridge adds: its
// percentile minus the same percentile of native posts at the same rate
// (flat out, minus that of the first paced rate, as native posts flat out
// measure the homeserver's saturation, not a bridge). The bridged latency
// includes the post's way through Prosody's MUC, which a native post does
// not take.
//
//	scripts/matterbridge.sh
//	go test ./e2e -run '^$' -bench VersusMatterbridge -benchtime 1x
//
// matterbridge's binary is PARLEY_MATTERBRIDGE or the peers cache's
// bin/matterbridge; without it the benchmark is skipped, or fails with CI set.
func BenchmarkVersusMatterbridge(b *testing.B) {
	bin := os.Getenv("PARLEY_MATTERBRIDGE")
	if bin == "" {
		bin = filepath.Join(peertest.Dir(), "bin", "matterbridge")
	}
	_, err := os.Stat(bin)
	if err != nil {
		err = fmt.Errorf("%w (run scripts/matterbridge.sh)", err)
	}
	peertest.Require(b, "matterbridge", err)
	rooms := max(1, envInt("PARLEY_BENCH_ROOMS", 10))
	posts, flatPosts := max(1, envInt("PARLEY_BENCH_POSTS", 300)), max(1, envInt("PARLEY_BENCH_FLAT_POSTS", 1000))
	var rates []int
	for _, f := range strings.Split(cmp.Or(os.Getenv("PARLEY_BENCH_RATES"), "10,25,40,0"), ",") {
		r, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || r < 0 {
			b.Fatalf("PARLEY_BENCH_RATES: %q is not a rate", f)
		}
		rates = append(rates, r)
	}

	portals := make([][2]string, rooms)
	for i := range portals {
		portals[i] = [2]string{fmt.Sprintf("#pbench%d:localhost", i), fmt.Sprintf("pbench%d@%s", i, peertest.MUCDomain)}
	}
	st := newStack(b, stackSettings{homeserver: "synapse", logLevel: "info", portals: portals})
	reader := peertest.ConnectMatrix(b, st.hs, "reader", "readerpassword")
	ctx := timeout(b, 60*time.Minute)

	// The rooms, by series: Parley's portals, matterbridge's rooms and the
	// native rooms.
	pp := &series{name: "parley", key: "pp", rooms: map[id.RoomID]int{}}
	mb := &series{name: "matterbridge", key: "mb", rooms: map[id.RoomID]int{}}
	nt := &series{name: "native", key: "nt", rooms: map[id.RoomID]int{}}
	for _, s := range []*series{pp, mb, nt} {
		for i := range rooms {
			resp, err := reader.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: fmt.Sprintf("%sbench%d", s.key[:1], i), Preset: "public_chat"})
			if err != nil {
				b.Fatal(err)
			}
			s.rooms[resp.RoomID] = i
			s.roomIDs = append(s.roomIDs, resp.RoomID)
		}
	}

	// One poster in each MUC of Parley and of matterbridge.
	posters := func(s *series, muc string) {
		for i := range rooms {
			user := fmt.Sprintf("%sposter%d", s.key, i)
			st.prosody.Register(b, user, "posterpass")
			c := peertest.ConnectXMPP(b, st.prosody, user, "posterpass")
			room := fmt.Sprintf("%s%d@%s", muc, i, peertest.MUCDomain)
			enterMUC(b, c, room, "Poster "+strconv.Itoa(i), "")
			s.send = append(s.send, func(body string) { c.SendGroupchat(b, room, body, body) })
		}
	}
	posters(pp, "pbench")
	posters(mb, "mbench")

	// The native poster, a plain Matrix user in the native rooms. Its
	// sends run at most one per room at once.
	nativeID, nativeToken := st.hs.Register(b, "native", "nativepassword")
	nativeClient, err := mautrix.NewClient(st.hs.URL, id.UserID(nativeID), nativeToken)
	if err != nil {
		b.Fatal(err)
	}
	native := &peertest.MatrixClient{Client: nativeClient}
	sem := make(chan struct{}, rooms)
	for i, room := range nt.roomIDs {
		if _, err := native.JoinRoomByID(ctx, room); err != nil {
			b.Fatal(err)
		}
		nt.send = append(nt.send, func(body string) {
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				if _, err := native.SendText(ctx, room, body, body); err != nil && ctx.Err() == nil {
					b.Errorf("native post %s in room %d: %v", body, i, err)
				}
			}()
		})
	}

	st.start(true)
	startMatterbridge(b, st, bin, rooms)

	// Warm up: each portal's ghost joins its room on its first post, and
	// matterbridge joins its MUCs and rooms at its own pace; neither is
	// measured.
	for _, s := range []*series{pp, mb} {
		warm(ctx, b, reader, s)
	}

	type row struct {
		rate int
		s    *series
		r    phaseResult
	}
	var rows []row
	phase := 0
	for _, rate := range rates {
		n := posts
		if rate == 0 {
			n = flatPosts
		}
		for _, s := range []*series{nt, mb, pp} {
			phase++
			r := runPhase(ctx, b, reader, s, fmt.Sprintf("%s%d", s.key, phase), n, rate)
			rows = append(rows, row{rate, s, r})
			b.Logf("%-12s %-8s %s", s.name, rateName(rate), r)
		}
	}

	// The baseline of each rate: native posts at that rate; flat out, native
	// posts at the first paced rate.
	base := map[int]phaseResult{}
	firstPaced := -1
	for _, r := range rows {
		if r.s == nt {
			base[r.rate] = r.r
			if r.rate > 0 && firstPaced < 0 {
				firstPaced = r.rate
			}
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "MUC → Matrix room over %d rooms per bridge, one slixmpp poster per MUC, one Matrix reader in every room.\n", rooms)
	fmt.Fprintf(&out, "latency: send → reader's sync; added = bridge percentile − native Matrix post percentile at the same rate")
	if firstPaced > 0 {
		fmt.Fprintf(&out, " (flat out: at %d/s)", firstPaced)
	}
	fmt.Fprintf(&out, ".\n%-8s %-12s %6s %6s %5s %4s %9s %9s %9s %10s %10s\n",
		"rate", "bridge", "sent", "got", "lost", "dup", "posts/s", "p50", "p99", "added p50", "added p99")
	flat := map[*series]float64{}
	for _, r := range rows {
		added50, added99 := "", ""
		bl, ok := base[r.rate]
		if r.rate == 0 && firstPaced > 0 {
			bl, ok = base[firstPaced], true
		}
		if r.s != nt && ok && r.r.got > 0 && bl.got > 0 {
			added50, added99 = ms(r.r.p50-bl.p50), ms(r.r.p99-bl.p99)
		}
		fmt.Fprintf(&out, "%-8s %-12s %6d %6d %5d %4d %9.1f %9s %9s %10s %10s\n", rateName(r.rate), r.s.name,
			r.r.sent, r.r.got, r.r.sent-r.r.got, r.r.dup, r.r.perSecond, ms(r.r.p50), ms(r.r.p99), added50, added99)
		if r.rate == 0 {
			flat[r.s] = r.r.perSecond
		}
		if r.s == pp && (r.r.got < r.r.sent || r.r.dup > 0) {
			b.Errorf("parley at %s: %d of %d posts lost, %d duplicated", rateName(r.rate), r.r.sent-r.r.got, r.r.sent, r.r.dup)
		}
	}
	if flat[mb] > 0 {
		fmt.Fprintf(&out, "flat out: parley %.1f posts/s, matterbridge %.1f posts/s: %.1f×\n", flat[pp], flat[mb], flat[pp]/flat[mb])
		b.ReportMetric(flat[pp]/flat[mb], "parley/matterbridge-flat")
	}
	fmt.Print(out.String())
}

// series is one way posts take into the Matrix rooms: a bridge's MUCs, or
// native Matrix posts.
type series struct {
	name, key string
	rooms     map[id.RoomID]int // the Matrix rooms, to their index
	roomIDs   []id.RoomID
	// send posts body in room i (one func per room).
	send []func(body string)
}

type phaseResult struct {
	sent, got, dup int
	perSecond      float64
	p50, p99       time.Duration
}

func (r phaseResult) String() string {
	return fmt.Sprintf("%d sent, %d arrived, %d lost, %d twice, %.1f posts/s, p50 %s, p99 %s",
		r.sent, r.got, r.sent-r.got, r.dup, r.perSecond, ms(r.p50), ms(r.p99))
}

// runPhase sends n posts tagged tag through s at rate posts/s (0: as fast
// as the senders take them), round-robin over its rooms, and collects them
// at the reader. A post not arrived 15 s after the last send and the last
// arrival is lost.
func runPhase(ctx context.Context, b *testing.B, reader *peertest.MatrixClient, s *series, tag string, n, rate int) phaseResult {
	b.Helper()
	sent := make([]atomic.Int64, n)
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		next := time.Now()
		for i := range n {
			if interval > 0 {
				time.Sleep(time.Until(next))
				next = next.Add(interval)
			}
			body := fmt.Sprintf("%s-%d", tag, i)
			sent[i].Store(time.Now().UnixNano())
			s.send[i%len(s.send)](body)
		}
	}()
	prefix := tag + "-"
	got := make([]bool, n)
	r := phaseResult{sent: n}
	latencies := make([]time.Duration, 0, n)
	var last time.Time
	sendsDone := false
	for r.got < n && ctx.Err() == nil {
		if !sendsDone {
			select {
			case <-done:
				sendsDone = true
				last = maxTime(last, time.Now())
			default:
			}
		}
		if sendsDone && time.Since(last) > 15*time.Second {
			break
		}
		step, cancel := context.WithTimeout(ctx, time.Second)
		m, ok := reader.NextMessage(step, func(m peertest.MatrixMessage) bool { return strings.Contains(m.Body, prefix) })
		cancel()
		if !ok {
			continue
		}
		at := time.Now()
		var i int
		if _, err := fmt.Sscanf(m.Body[strings.Index(m.Body, prefix)+len(prefix):], "%d", &i); err != nil || i < 0 || i >= n {
			b.Errorf("%s: unexpected post %q", s.name, m.Body)
			continue
		}
		if room, ok := s.rooms[m.Room]; !ok || room != i%len(s.send) {
			b.Errorf("%s: post %d arrived in room %s, want room %d", s.name, i, m.Room, i%len(s.send))
		}
		if got[i] {
			r.dup++
			continue
		}
		got[i] = true
		r.got++
		last = at
		latencies = append(latencies, at.Sub(time.Unix(0, sent[i].Load())))
	}
	<-done
	if r.got == 0 {
		return r
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) time.Duration { return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))] }
	r.p50, r.p99 = pct(0.50), pct(0.99)
	r.perSecond = float64(r.got) / last.Sub(start).Seconds()
	return r
}

// warm posts in each of s's MUCs until its post arrives in the room, so that
// the bridge is in every MUC and room before the measure.
func warm(ctx context.Context, b *testing.B, reader *peertest.MatrixClient, s *series) {
	b.Helper()
	deadline := time.Now().Add(90 * time.Second)
	pending := map[int]bool{}
	for i := range s.send {
		pending[i] = true
	}
	for try := 0; len(pending) > 0; try++ {
		if time.Now().After(deadline) {
			b.Fatalf("%s did not carry a first post into %d of its rooms", s.name, len(pending))
		}
		for i := range pending {
			s.send[i](fmt.Sprintf("warm%s-%d-%d", s.key, try, i))
		}
		step, cancel := context.WithTimeout(ctx, 3*time.Second)
		for len(pending) > 0 {
			m, ok := reader.NextMessage(step, func(m peertest.MatrixMessage) bool { return strings.Contains(m.Body, "warm"+s.key+"-") })
			if !ok {
				break
			}
			delete(pending, s.rooms[m.Room])
		}
		cancel()
	}
	// Let late copies of the warm-up posts arrive and be dropped.
	time.Sleep(2 * time.Second)
}

// startMatterbridge writes matterbridge's TOML, one gateway per room pair
// mbench<i>@MUC ↔ #mbench<i>:localhost, with its own Prosody and Synapse
// accounts, and runs it until the benchmark ends.
func startMatterbridge(b *testing.B, st *stack, bin string, rooms int) {
	b.Helper()
	st.prosody.Register(b, "mbbot", "mbbotpass")
	mxid, token := st.hs.Register(b, "mbbot", "mbbotpassword")
	var cfg strings.Builder
	// RemoteNickFormat "{NICK}: " keeps the body after the nick, where the
	// benchmark finds its tag.
	fmt.Fprintf(&cfg, `[general]
RemoteNickFormat="{NICK}: "

[xmpp.bench]
Server=%q
Jid="mbbot@localhost"
Password="mbbotpass"
Muc=%q
Nick="mbbot"
NoTLS=true
SkipTLSVerify=true

[matrix.bench]
Server=%q
MxID=%q
Token=%q
`, st.prosody.C2SAddr, peertest.MUCDomain, st.hs.URL, mxid, token)
	for i := range rooms {
		fmt.Fprintf(&cfg, `
[[gateway]]
name="bench%d"
enable=true
[[gateway.inout]]
account="xmpp.bench"
channel="mbench%d"
[[gateway.inout]]
account="matrix.bench"
channel="#mbench%d:localhost"
`, i, i, i)
	}
	dir := b.TempDir()
	conf := filepath.Join(dir, "matterbridge.toml")
	if err := os.WriteFile(conf, []byte(cfg.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	logPath := filepath.Join(dir, "matterbridge.log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-conf", conf)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(exited) }()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if b.Failed() {
			if out, err := os.ReadFile(logPath); err == nil {
				b.Logf("matterbridge log:\n%s", tail(string(out), 40))
			}
		}
	})
}

func rateName(rate int) string {
	if rate == 0 {
		return "flat out"
	}
	return strconv.Itoa(rate) + "/s"
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
}
