package matrix

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mevent "maunium.net/go/mautrix/event"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

const presencePath = "/_matrix/client/v3/presence/"

// presenceServer answers GET /presence/{user}/status from a map of users'
// presence JSON, and counts the requests per user.
type presenceServer struct {
	mu      sync.Mutex
	answers map[string]string // user → body; absent: 404
	status  int               // when not 0, every answer is this status
	gets    map[string]int
	asUser  map[string]string // user → user_id of the last request
}

func newPresenceServer(hs *fakeHS) *presenceServer {
	ps := &presenceServer{answers: map[string]string{}, gets: map[string]int{}, asUser: map[string]string{}}
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if r.Method != "GET" || !strings.HasPrefix(r.Path, presencePath) {
			return 0, "", false
		}
		user := strings.TrimSuffix(strings.TrimPrefix(r.Path, presencePath), "/status")
		ps.mu.Lock()
		defer ps.mu.Unlock()
		ps.gets[user]++
		ps.asUser[user] = r.Query["user_id"]
		if ps.status != 0 {
			return ps.status, `{"errcode":"M_UNKNOWN","error":"down"}`, true
		}
		body, ok := ps.answers[user]
		if !ok {
			return 404, `{"errcode":"M_NOT_FOUND","error":"no such user"}`, true
		}
		return 200, body, true
	})
	return ps
}

func (ps *presenceServer) set(user, presence, status string) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.answers[user] = fmt.Sprintf(`{"presence":%q,"status_msg":%q,"last_active_ago":5,"currently_active":true}`, presence, status)
}

func (ps *presenceServer) setStatus(code int) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.status = code
}

func (ps *presenceServer) count(user string) int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.gets[user]
}

func (ps *presenceServer) as(user string) string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.asUser[user]
}

func (ps *presenceServer) total() (n int) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, c := range ps.gets {
		n += c
	}
	return n
}

// newPollAdapter starts an adapter on hs that polls every `every` (auto:
// until a push), stopped at the end of the test.
func newPollAdapter(t *testing.T, hs *fakeHS, host *fakeHost, every time.Duration, auto bool) *Adapter {
	t.Helper()
	a, err := New(testConfig(hs.URL), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	a.cfg.Listen = "127.0.0.1:0"
	a.poll.every, a.poll.auto = every, auto
	if err := a.Start(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	host.waitState(t, bridges.Connected)
	return a
}

// presences returns the presence host got, as "user state status".
func presences(host *fakeHost) []string {
	var out []string
	for _, e := range host.events() {
		if p, ok := e.(*event.Presence); ok {
			if p.To != (event.Address{}) {
				out = append(out, "not broadcast: "+p.To.String())
			}
			out = append(out, fmt.Sprintf("%s %s %s", p.From.ID, p.State, p.Status))
		}
	}
	return out
}

func TestPollPresenceChanges(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	ps := newPresenceServer(hs)
	host := newFakeHost()
	linkDM(host) // testGhost ↔ testUser, linked before polling existed
	const dave = "@dave:localhost"
	ps.set(testUser, "online", "")
	ps.set(dave, "unavailable", "lunch")
	a := newPollAdapter(t, hs, host, 60*time.Millisecond, false)

	// A DM known from its links is polled once it is used.
	if _, _, _, err := a.roomPair(context.Background(), testRoom); err != nil {
		t.Fatal(err)
	}
	// A new DM is polled at once, and listed durably.
	if err := a.learnDM(context.Background(), testGhost2, dave, "!dave:localhost"); err != nil {
		t.Fatal(err)
	}
	want := []string{testUser + " available ", dave + " away lunch"}
	waitFor(t, "both users' presence dispatched", func() bool { return len(presences(host)) >= 2 })
	if v, _ := host.links.Value(dmsKey); v != testGhost+"|"+testUser+"\n"+testGhost2+"|"+dave {
		t.Errorf("link %s = %q", dmsKey, v)
	}
	if as, as2 := ps.as(testUser), ps.as(dave); as != testGhost || as2 != testGhost2 {
		t.Errorf("polled as %s and %s, want as the ghost of each DM", as, as2)
	}

	// Unchanged presence is not dispatched again.
	n := ps.count(testUser)
	waitFor(t, "two more polls", func() bool { return ps.count(testUser) >= n+2 })
	if got := presences(host); !sameSet(got, want) {
		t.Fatalf("dispatched %v, want %v", got, want)
	}

	// A new status alone is a change.
	ps.set(testUser, "online", "at my desk")
	want = append(want, testUser+" available at my desk")
	waitFor(t, "the new status dispatched", func() bool { return len(presences(host)) == 3 })
	ps.set(dave, "offline", "")
	want = append(want, dave+" offline ")
	waitFor(t, "dave offline", func() bool { return len(presences(host)) == 4 })
	if got := presences(host); !sameSet(got, want) {
		t.Errorf("dispatched %v, want %v", got, want)
	}

	// A DM that ends stops the polling of its user.
	if err := a.forgetDM(context.Background(), testGhost2, dave, "!dave:localhost"); err != nil {
		t.Fatal(err)
	}
	n = ps.count(dave)
	m := ps.count(testUser)
	waitFor(t, "more polls", func() bool { return ps.count(testUser) >= m+3 })
	if ps.count(dave) > n+1 { // one may have been in flight
		t.Errorf("dave polled %d times after his DM ended", ps.count(dave)-n)
	}
	if v, _ := host.links.Value(dmsKey); v != testGhost+"|"+testUser {
		t.Errorf("link %s = %q after the DM ended", dmsKey, v)
	}
}

// testGhost2 is a second ghost.
const testGhost2 = "@_xmpp_carol=40example.org:localhost"

func sameSet(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
	}
	for _, w := range want {
		seen[w]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestPollPresenceFromStoredList(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	ps := newPresenceServer(hs)
	host := newFakeHost()
	host.links.Set(dmsKey, strings.Join([]string{
		testGhost + "|" + testUser,
		testGhost + "|@remote:elsewhere.example", // Dendrite reads remote users as unavailable
		testGhost + "|" + testGhost2,             // not a real user
		"garbage",
	}, "\n"))
	ps.set(testUser, "unavailable", "")
	ps.set("@remote:elsewhere.example", "unavailable", "")
	newPollAdapter(t, hs, host, 50*time.Millisecond, false)
	waitFor(t, "the stored user polled", func() bool { return len(presences(host)) == 1 })
	time.Sleep(150 * time.Millisecond)
	if got := presences(host); len(got) != 1 || got[0] != testUser+" away " {
		t.Errorf("dispatched %v", got)
	}
	if n := ps.total() - ps.count(testUser); n != 0 {
		t.Errorf("%d requests for users that are not polled", n)
	}
}

func TestPresencePushAndPollDedup(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	ps := newPresenceServer(hs)
	host := newFakeHost()
	linkDM(host)
	ps.set(testUser, "unavailable", "brb")
	a := newPollAdapter(t, hs, host, 40*time.Millisecond, false)

	// Pushed first, then polled the same: dispatched once.
	if status, code := putTxn(t, a, "d1", `{"ephemeral":[`+presenceEDU(testUser, "unavailable", "brb")+`]}`); status != 200 {
		t.Fatalf("got %d %s", status, code)
	}
	if _, _, _, err := a.roomPair(context.Background(), testRoom); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three polls", func() bool { return ps.count(testUser) >= 3 })
	if got := presences(host); len(got) != 1 || got[0] != testUser+" away brb" {
		t.Fatalf("dispatched %v, want the push once", got)
	}

	// Polled first, then pushed the same: dispatched once.
	ps.set(testUser, "online", "")
	waitFor(t, "the poll dispatched", func() bool { return len(presences(host)) == 2 })
	if status, code := putTxn(t, a, "d2", `{"ephemeral":[`+presenceEDU(testUser, "online", "")+`]}`); status != 200 {
		t.Fatalf("got %d %s", status, code)
	}
	if got := presences(host); len(got) != 2 {
		t.Errorf("dispatched %v, want the push not again", got)
	}
}

func TestPresencePollOlderThanPush(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	a := newTestAdapter(t, hs, host)
	ctx := context.Background()
	poll := func(p string, since uint64) {
		a.observePresence(ctx, presenceEvent{Sender: testUser, Content: presenceContent{Presence: mevent.Presence(p)}}, false, since)
	}
	a.poll.mu.Lock()
	since := a.poll.seq
	a.poll.mu.Unlock()
	// A push arrives while a poll is in flight; the poll's answer, read
	// before the push, must not undo it.
	a.handlePresence(ctx, presenceEvent{Sender: testUser, Content: presenceContent{Presence: mevent.PresenceOnline}})
	poll("offline", since)
	a.poll.mu.Lock()
	since = a.poll.seq
	a.poll.mu.Unlock()
	poll("unavailable", since) // a poll begun after the push counts
	want := []string{testUser + " available ", testUser + " away "}
	if got := presences(host); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("dispatched %v, want %v", got, want)
	}
}

func TestPresenceDispatchFailureNotRemembered(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	a := newTestAdapter(t, hs, host)
	var fail atomic.Bool
	fail.Store(true)
	host.setDispatchErr(func(event.Event) error {
		if fail.Load() {
			return fmt.Errorf("queue full")
		}
		return nil
	})
	body := `{"ephemeral":[` + presenceEDU(testUser, "online", "") + `]}`
	putTxn(t, a, "f1", body)
	fail.Store(false)
	putTxn(t, a, "f2", body)
	putTxn(t, a, "f3", body)
	if got := presences(host); len(got) != 1 {
		t.Errorf("dispatched %v, want once after the failure", got)
	}
}

func TestPollPresenceAutoStopsOnPush(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	ps := newPresenceServer(hs)
	host := newFakeHost()
	linkDM(host)
	ps.set(testUser, "online", "")
	a := newPollAdapter(t, hs, host, 30*time.Millisecond, true)
	if _, _, _, err := a.roomPair(context.Background(), testRoom); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "polls in auto mode", func() bool { return ps.count(testUser) >= 2 })
	// Any m.presence pushed, even a ghost's, shows that the homeserver
	// pushes presence.
	if status, code := putTxn(t, a, "a1", `{"ephemeral":[`+presenceEDU(testGhost, "online", "")+`]}`); status != 200 {
		t.Fatalf("got %d %s", status, code)
	}
	time.Sleep(60 * time.Millisecond) // a poll in flight ends
	n := ps.count(testUser)
	time.Sleep(200 * time.Millisecond)
	if m := ps.count(testUser); m != n {
		t.Errorf("%d polls after the homeserver pushed presence in auto mode", m-n)
	}
}

func TestPollPresenceOff(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	ps := newPresenceServer(hs)
	host := newFakeHost()
	linkDM(host)
	a := newPollAdapter(t, hs, host, 0, false)
	if _, _, _, err := a.roomPair(context.Background(), testRoom); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := ps.total(); n != 0 {
		t.Errorf("%d polls with polling off", n)
	}
	if _, ok := host.links.Value(dmsKey); ok {
		t.Error("dm list stored with polling off")
	}
}

func TestPollPresenceBounded(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	host := newFakeHost()
	var inFlight, most atomic.Int32
	release := make(chan struct{})
	var gets atomic.Int32
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if r.Method != "GET" || !strings.HasPrefix(r.Path, presencePath) {
			return 0, "", false
		}
		gets.Add(1)
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		<-release
		return 200, `{"presence":"online"}`, true
	})
	var users []string
	for i := range 12 {
		users = append(users, fmt.Sprintf("%s|@user%d:localhost", testGhost, i))
	}
	host.links.Set(dmsKey, strings.Join(users, "\n"))
	a, err := New(testConfig(hs.URL), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	a.cfg.Listen = "127.0.0.1:0"
	a.poll.every = 120 * time.Millisecond // one request every 10 ms
	if err := a.Start(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "requests pile up", func() bool { return gets.Load() >= pollConcurrency })
	time.Sleep(100 * time.Millisecond)
	if m := most.Load(); m != pollConcurrency {
		t.Errorf("%d requests in flight at most, want %d", m, pollConcurrency)
	}
	// Stop does not wait for the homeserver: the requests are cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	begin := time.Now()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	select {
	case <-done:
	default:
		t.Error("the poll loop still runs after Stop")
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("Stop took %s", d)
	}
	close(release)
}

func TestPollPresenceBackoff(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	ps := newPresenceServer(hs)
	host := newFakeHost()
	var users []string
	for i := range 5 {
		users = append(users, fmt.Sprintf("%s|@user%d:localhost", testGhost, i))
	}
	host.links.Set(dmsKey, strings.Join(users, "\n"))
	ps.setStatus(502)
	const every = 50 * time.Millisecond
	newPollAdapter(t, hs, host, every, false)
	// Without backoff 5 users every 50 ms make 50 requests in 500 ms; a
	// failure ends the round and the next waits 50 ms, 100 ms, 200 ms…
	time.Sleep(500 * time.Millisecond)
	if n := ps.total(); n == 0 || n > 8 {
		t.Errorf("%d requests in 500 ms to a failing homeserver", n)
	}
	// Once it answers again, every user is polled.
	ps.setStatus(0)
	for i := range 5 {
		ps.set(fmt.Sprintf("@user%d:localhost", i), "online", "")
	}
	waitFor(t, "every user polled", func() bool { return len(presences(host)) == 5 })
}

func TestPollPresenceNewDMAtOnce(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	ps := newPresenceServer(hs)
	host := newFakeHost()
	ps.set(testUser, "unavailable", "brb")
	a := newPollAdapter(t, hs, host, time.Hour, false)
	if err := a.learnDM(context.Background(), testGhost, testUser, testRoom); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the user of a new DM polled at once", func() bool { return len(presences(host)) == 1 })
	// A second DM with the same user does not poll again.
	if err := a.learnDM(context.Background(), testGhost2, testUser, "!other:localhost"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := ps.count(testUser); n != 1 {
		t.Errorf("%d polls, want 1", n)
	}
}

func TestPollPresenceOlderDMEnds(t *testing.T) {
	hs := newFakeHS(t, "as-secret")
	newPresenceServer(hs)
	host := newFakeHost()
	a := newPollAdapter(t, hs, host, time.Hour, false)
	ctx := context.Background()
	if err := a.learnDM(ctx, testGhost, testUser, "!old:localhost"); err != nil {
		t.Fatal(err)
	}
	if err := a.learnDM(ctx, testGhost, testUser, "!new:localhost"); err != nil {
		t.Fatal(err)
	}
	// The user leaves the older room: the newer DM is still polled.
	if err := a.forgetDM(ctx, testGhost, testUser, "!old:localhost"); err != nil {
		t.Fatal(err)
	}
	if v, _ := host.links.Value(dmsKey); v != testGhost+"|"+testUser {
		t.Errorf("link %s = %q, want the pair kept", dmsKey, v)
	}
	if err := a.forgetDM(ctx, testGhost, testUser, "!new:localhost"); err != nil {
		t.Fatal(err)
	}
	if v, _ := host.links.Value(dmsKey); v != "" {
		t.Errorf("link %s = %q, want empty once no DM is left", dmsKey, v)
	}
}
