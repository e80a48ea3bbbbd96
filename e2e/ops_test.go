package e2e

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parleygw/parley/internal/peertest"
)

// TestReloadMetricsAndStop covers the operator's side: SIGHUP picks up a new
// identity without a restart, /metrics counts what was bridged, and SIGTERM
// stops parley cleanly within its shutdown timeout.
func TestReloadMetricsAndStop(t *testing.T) {
	st := newStack(t, stackSettings{homeserver: "synapse"})
	st.prosody.Register(t, "alice", "alicepass")
	st.start(true)
	alice := peertest.ConnectXMPP(t, st.prosody, "alice", "alicepass")
	dave := peertest.ConnectMatrix(t, st.hs, "dave", "davepassword")
	ctx := timeout(t, time.Minute)

	// dave has no identity yet: his alias maps to nobody.
	alice.Send(t, "dave@matrix.localhost", "before", "hello dave?", true)
	if e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "error" || e.Ev == "receipt" }); !ok || e.Condition != "item-not-found" {
		t.Fatalf("before reload: %+v", e)
	}
	cfg, err := os.ReadFile(st.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, []byte("    - name: dave\n      accounts: [\"matrix:@dave:localhost\"]\n")...)
	if err := os.WriteFile(st.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	_ = st.parley.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(st.log(), "mapping reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload after SIGHUP:\n%s", tail(st.log(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	alice.Send(t, "dave@matrix.localhost", "after", "hello dave", true)
	if m, ok := dave.NextMessage(ctx, nil); !ok || m.Body != "hello dave" {
		t.Fatalf("after reload dave got %+v, %v", m, ok)
	}

	_, metrics := st.get("/metrics")
	for _, want := range []string{
		`parley_events_received_total{kind="message",network="xmpp"}`,
		`parley_events_delivered_total{kind="message",network="matrix"}`,
	} {
		if v := metricValue(metrics, want); v < 1 {
			t.Errorf("%s = %v, want ≥ 1", want, v)
		}
	}
	if !strings.Contains(metrics, "parley_delivery_latency_seconds_bucket") {
		t.Error("no latency histogram in /metrics")
	}
	// Zero until the first collection.
	if v := metricValue(metrics, "go_gc_heap_live_bytes"); v < 0 {
		t.Error("no go_gc_heap_live_bytes in /metrics")
	}

	begin := time.Now()
	st.stop(syscall.SIGTERM)
	if took := time.Since(begin); took > 10*time.Second {
		t.Errorf("SIGTERM took %s (shutdown_timeout is 5s)", took)
	}
	if !strings.Contains(st.log(), "parley stopped") {
		t.Errorf("no clean stop in the log:\n%s", tail(st.log(), 10))
	}
}

func metricValue(text, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}
