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
// scripts/matterbridge.sh) and Parley relaying posts between MUCs and Matrix
// rooms, each way, and native posts as the baseline:
//
//   - matterbridge: PARLEY_BENCH_ROOMS (default 10) MUC ↔ room pairs, one
//     gateway each in its TOML; its XMPP account is a Prosody user in the
//     MUCs, its Matrix account a Synapse user in the rooms;
//   - Parley: as many other pairs, as portals;
//   - native: as many other MUCs and rooms, which no bridge joins.
//
// A slixmpp user is in each bridged MUC, and one native XMPP user in every
// native MUC; one Matrix user posts in every room, and another reads every
// room. For each direction of PARLEY_BENCH_DIRECTIONS ("muc": MUC → Matrix
// room, "matrix": Matrix room → MUC; default both) and each rate of
// PARLEY_BENCH_RATES (posts per second over all rooms, default
// "10,25,40,0"; 0 is as fast as the senders can), native posts, matterbridge
// and Parley each carry PARLEY_BENCH_POSTS posts (default 300; flat out
// PARLEY_BENCH_FLAT_POSTS, default 1000) in turn. The benchmark prints a
// table per direction: posts/s arrived, p50/p99 latency from the send to the
// arrival (the Matrix reader's sync, or the MUC occupant's client), lost
// and duplicated posts, and the latency a bridge adds: its percentile minus
// the same percentile of native posts on the destination network at the
// same rate (flat out, at the first paced rate, as native posts flat out
// measure a server's saturation, not a bridge). A native Matrix post is a
// Matrix user's post seen by the reader; a native MUC post, an XMPP user's
// post reflected by the MUC to its client. So the added latency includes the
// way through the source server (Prosody's MUC, or Synapse), which a native
// post on the destination does not take.
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
	directions := strings.Split(cmp.Or(os.Getenv("PARLEY_BENCH_DIRECTIONS"), "muc,matrix"), ",")
	for _, d := range directions {
		if d != "muc" && d != "matrix" {
			b.Fatalf("PARLEY_BENCH_DIRECTIONS: %q is neither muc nor matrix", d)
		}
	}

	portals := make([][2]string, rooms)
	for i := range portals {
		portals[i] = [2]string{fmt.Sprintf("#pbench%d:localhost", i), fmt.Sprintf("pbench%d@%s", i, peertest.MUCDomain)}
	}
	st := newStack(b, stackSettings{homeserver: "synapse", logLevel: "info", portals: portals})
	reader := peertest.ConnectMatrix(b, st.hs, "reader", "readerpassword")
	ctx := timeout(b, 60*time.Minute)

	// Three sets of rooms, each a Matrix room and a MUC of the same name:
	// Parley's portals (pbench<i>), matterbridge's pairs (mbench<i>) and
	// native rooms (nbench<i>), which no bridge joins.
	matrixRooms := map[string][]id.RoomID{}
	matrixIndex := map[string]map[id.RoomID]int{}
	for _, set := range []string{"pbench", "mbench", "nbench"} {
		matrixIndex[set] = map[id.RoomID]int{}
		for i := range rooms {
			resp, err := reader.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: fmt.Sprintf("%s%d", set, i), Preset: "public_chat"})
			if err != nil {
				b.Fatal(err)
			}
			matrixIndex[set][resp.RoomID] = i
			matrixRooms[set] = append(matrixRooms[set], resp.RoomID)
		}
	}
	recvMatrix := func(set string) func(context.Context, string) (arrival, bool) {
		return func(ctx context.Context, prefix string) (arrival, bool) {
			m, ok := reader.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return strings.Contains(m.Body, prefix) })
			room, known := matrixIndex[set][m.Room]
			if !known {
				room = -1
			}
			return arrival{room: room, body: m.Body, at: time.Now()}, ok
		}
	}

	// The XMPP side: one slixmpp poster in each MUC of Parley and of
	// matterbridge, and one native XMPP user in every native MUC. What they
	// see of the Matrix → MUC posts (tagged "rx") comes in on xin.
	xin := make(chan arrival, 1<<16)
	mucIndex := map[string]int{}
	fanIn := func(c *peertest.XMPPClient) {
		go func() {
			for e := range c.Events {
				if e.Ev == "groupchat" && !e.Delayed && strings.Contains(e.Body, "rx") {
					room, known := mucIndex[e.Room]
					if !known {
						room = -1
					}
					xin <- arrival{room: room, body: e.Body, at: time.Now()}
				}
			}
		}()
	}
	recvXMPP := func(set string) func(context.Context, string) (arrival, bool) {
		return func(ctx context.Context, prefix string) (arrival, bool) {
			for {
				select {
				case a := <-xin:
					if strings.Contains(a.body, prefix) {
						return a, true
					}
				case <-ctx.Done():
					return arrival{}, false
				}
			}
		}
	}
	xmppSend := map[string][]func(string){}
	for _, set := range []string{"pbench", "mbench"} {
		for i := range rooms {
			user := fmt.Sprintf("%sposter%d", set[:2], i)
			st.prosody.Register(b, user, "posterpass")
			c := peertest.ConnectXMPP(b, st.prosody, user, "posterpass")
			room := fmt.Sprintf("%s%d@%s", set, i, peertest.MUCDomain)
			mucIndex[room] = i
			enterMUC(b, c, room, "Poster "+strconv.Itoa(i), "")
			xmppSend[set] = append(xmppSend[set], func(body string) { c.SendGroupchat(b, room, body, body) })
			fanIn(c)
		}
	}
	st.prosody.Register(b, "nativexmpp", "posterpass")
	nx := peertest.ConnectXMPP(b, st.prosody, "nativexmpp", "posterpass")
	for i := range rooms {
		room := fmt.Sprintf("nbench%d@%s", i, peertest.MUCDomain)
		mucIndex[room] = i
		enterMUC(b, nx, room, "Native", "")
		xmppSend["nbench"] = append(xmppSend["nbench"], func(body string) { nx.SendGroupchat(b, room, body, body) })
	}
	fanIn(nx)

	// The Matrix side: a plain Matrix user in every room. Its sends in one
	// set of rooms run at most one per room at once.
	nativeID, nativeToken := st.hs.Register(b, "native", "nativepassword")
	nativeClient, err := mautrix.NewClient(st.hs.URL, id.UserID(nativeID), nativeToken)
	if err != nil {
		b.Fatal(err)
	}
	native := &peertest.MatrixClient{Client: nativeClient}
	matrixSend := map[string][]func(string){}
	for _, set := range []string{"pbench", "mbench", "nbench"} {
		sem := make(chan struct{}, rooms)
		for _, room := range matrixRooms[set] {
			if _, err := native.JoinRoomByID(ctx, room); err != nil {
				b.Fatal(err)
			}
			matrixSend[set] = append(matrixSend[set], func(body string) {
				sem <- struct{}{}
				go func() {
					defer func() { <-sem }()
					if _, err := native.SendText(ctx, room, body, body); err != nil && ctx.Err() == nil {
						b.Errorf("Matrix post %s in %s: %v", body, room, err)
					}
				}()
			})
		}
	}

	toMatrix := []*series{
		{name: "native", key: "nt", send: matrixSend["nbench"], recv: recvMatrix("nbench")},
		{name: "matterbridge", key: "mb", send: xmppSend["mbench"], recv: recvMatrix("mbench")},
		{name: "parley", key: "pp", send: xmppSend["pbench"], recv: recvMatrix("pbench")},
	}
	toMUC := []*series{
		{name: "native", key: "rxn", send: xmppSend["nbench"], recv: recvXMPP("nbench")},
		{name: "matterbridge", key: "rxm", send: matrixSend["mbench"], recv: recvXMPP("mbench")},
		{name: "parley", key: "rxp", send: matrixSend["pbench"], recv: recvXMPP("pbench")},
	}

	st.start(true)
	startMatterbridge(b, st, bin, rooms)

	// Warm up: each portal's ghost joins its room (or MUC) on its first
	// post, and matterbridge joins its MUCs and rooms at its own pace;
	// neither is measured.
	for _, d := range directions {
		trio := map[string][]*series{"muc": toMatrix, "matrix": toMUC}[d]
		for _, s := range trio[1:] {
			warm(ctx, b, s)
		}
	}

	var out strings.Builder
	fmt.Fprintf(&out, "%d rooms per bridge and %d native rooms; one slixmpp poster in each bridged MUC, one Matrix reader in every room.\n", rooms, rooms)
	fmt.Fprintf(&out, "latency: send → arrival (Matrix: the reader's sync; MUC: the occupant's client); added = bridge percentile −\n"+
		"native percentile at the same rate (flat out: at the first paced rate), native being a Matrix user's post seen\n"+
		"by the reader (MUC → Matrix) or an XMPP user's post reflected by the MUC to its client (Matrix → MUC).\n")
	phase := 0
	flat := map[string]float64{}
	for _, d := range directions {
		trio, title := toMatrix, "MUC → Matrix room"
		if d == "matrix" {
			trio, title = toMUC, "Matrix room → MUC"
		}
		type row struct {
			rate int
			s    *series
			r    phaseResult
		}
		var rows []row
		stopDrain := make(chan struct{})
		if d == "matrix" {
			// The reader sees the Matrix user's posts too; drop them, so that
			// its sync never waits on a full channel.
			go func() {
				for {
					select {
					case <-reader.Messages:
					case <-stopDrain:
						return
					}
				}
			}()
		}
		for _, rate := range rates {
			n := posts
			if rate == 0 {
				n = flatPosts
			}
			for _, s := range trio {
				phase++
				r := runPhase(ctx, b, s, fmt.Sprintf("%s%d", s.key, phase), n, rate)
				rows = append(rows, row{rate, s, r})
				b.Logf("%s %-12s %-8s %s", title, s.name, rateName(rate), r)
			}
		}
		close(stopDrain)
		base := map[int]phaseResult{}
		firstPaced := -1
		for _, r := range rows {
			if r.s == trio[0] {
				base[r.rate] = r.r
				if r.rate > 0 && firstPaced < 0 {
					firstPaced = r.rate
				}
			}
		}
		fmt.Fprintf(&out, "\n%s\n%-8s %-12s %6s %6s %5s %4s %8s %10s %10s %10s %10s\n", title,
			"rate", "bridge", "sent", "got", "lost", "dup", "posts/s", "p50", "p99", "added p50", "added p99")
		for _, r := range rows {
			added50, added99 := "", ""
			bl, ok := base[r.rate]
			if r.rate == 0 && firstPaced > 0 {
				bl, ok = base[firstPaced], true
			}
			if r.s != trio[0] && ok && r.r.got > 0 && bl.got > 0 {
				added50, added99 = ms(r.r.p50-bl.p50), ms(r.r.p99-bl.p99)
			}
			fmt.Fprintf(&out, "%-8s %-12s %6d %6d %5d %4d %8.1f %10s %10s %10s %10s\n", rateName(r.rate), r.s.name,
				r.r.sent, r.r.got, r.r.sent-r.r.got, r.r.dup, r.r.perSecond, ms(r.r.p50), ms(r.r.p99), added50, added99)
			if r.rate == 0 {
				flat[d+" "+r.s.name] = r.r.perSecond
			}
			if r.s.name == "parley" && (r.r.got < r.r.sent || r.r.dup > 0) {
				b.Errorf("parley %s at %s: %d of %d posts lost, %d duplicated", title, rateName(r.rate), r.r.sent-r.r.got, r.r.sent, r.r.dup)
			}
		}
		if m, p := flat[d+" matterbridge"], flat[d+" parley"]; m > 0 {
			fmt.Fprintf(&out, "flat out: parley %.1f posts/s, matterbridge %.1f posts/s: %.1f×", p, m, p/m)
			if nat := flat[d+" native"]; nat > 0 {
				fmt.Fprintf(&out, "; native posts %.1f/s (parley %.0f %%, matterbridge %.0f %% of it)", nat, 100*p/nat, 100*m/nat)
			}
			fmt.Fprintln(&out)
			b.ReportMetric(p/m, "parley/matterbridge-"+d)
		}
	}
	fmt.Print(out.String())
}

// series is one way posts take from one side to the other: through a
// bridge, or natively within one network as the baseline.
type series struct {
	name, key string
	// send posts body in room i (one func per room).
	send []func(body string)
	// recv returns the next post that contains prefix to arrive on the
	// far side, or false when ctx ends first.
	recv func(ctx context.Context, prefix string) (arrival, bool)
}

// arrival is a post seen on the far side: in which room (its index, -1 for
// a room of no set) and when.
type arrival struct {
	room int
	body string
	at   time.Time
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
// on the far side. A post not arrived 15 s after the last send and the last
// arrival is lost.
func runPhase(ctx context.Context, b *testing.B, s *series, tag string, n, rate int) phaseResult {
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
		a, ok := s.recv(step, prefix)
		cancel()
		if !ok {
			continue
		}
		var i int
		if _, err := fmt.Sscanf(a.body[strings.Index(a.body, prefix)+len(prefix):], "%d", &i); err != nil || i < 0 || i >= n {
			b.Errorf("%s: unexpected post %q", s.name, a.body)
			continue
		}
		if a.room != i%len(s.send) {
			b.Errorf("%s: post %d arrived in room %d, want room %d", s.name, i, a.room, i%len(s.send))
		}
		if got[i] {
			r.dup++
			continue
		}
		got[i] = true
		r.got++
		last = a.at
		latencies = append(latencies, a.at.Sub(time.Unix(0, sent[i].Load())))
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

// warm posts in each of s's rooms until its post arrives on the far side,
// so that the bridge is in every room on both sides before the measure.
func warm(ctx context.Context, b *testing.B, s *series) {
	b.Helper()
	deadline := time.Now().Add(90 * time.Second)
	pending := map[int]bool{}
	for i := range s.send {
		pending[i] = true
	}
	prefix := "warm" + s.key + "-"
	for try := 0; len(pending) > 0; try++ {
		if time.Now().After(deadline) {
			b.Fatalf("%s did not carry a first post into %d of its rooms", s.name, len(pending))
		}
		for i := range pending {
			s.send[i](fmt.Sprintf("%s%d-%d", prefix, try, i))
		}
		step, cancel := context.WithTimeout(ctx, 3*time.Second)
		for len(pending) > 0 {
			a, ok := s.recv(step, prefix)
			if !ok {
				break
			}
			delete(pending, a.room)
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
