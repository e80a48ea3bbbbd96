package matrix

import (
	"context"
	"strings"
	"testing"

	"github.com/parleygw/parley/media"
)

// The homeserver's TURN servers join the configured ones, asked once and
// kept; a homeserver without TURN leaves the configured ones alone.
func TestLegConfigAddsHomeserverTURN(t *testing.T) {
	hs := newFakeHS(t, "as-token")
	turn := `{"username":"1443779631:@bot:localhost","password":"JlKfBy1QwLrO20385QyAtEyIv0=","ttl":86400,"uris":["turn:turn.example.com:3478?transport=udp"]}`
	hs.setOverride(func(r hsRequest) (int, string, bool) {
		if strings.HasSuffix(r.Path, "/voip/turnServer") {
			return 200, turn, true
		}
		return 0, "", false
	})
	a, err := New(testConfig(hs.URL), WithLogger(testLogger(t)),
		WithCalls(media.WebRTCConfig{ICEServers: []media.ICEServer{{URLs: []string{"stun:stun.example.org"}}}}), WithHomeserverTURN())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 2 {
		cfg := a.legConfig(ctx)
		if len(cfg.ICEServers) != 2 || cfg.ICEServers[1].URLs[0] != "turn:turn.example.com:3478?transport=udp" ||
			cfg.ICEServers[1].Credential != "JlKfBy1QwLrO20385QyAtEyIv0=" {
			t.Fatalf("ICE servers: %+v", cfg.ICEServers)
		}
	}
	asked := 0
	for _, r := range hs.requests() {
		if strings.HasSuffix(r.Path, "/voip/turnServer") {
			asked++
		}
	}
	if asked != 1 {
		t.Errorf("asked the homeserver %d times, want once", asked)
	}

	hs2 := newFakeHS(t, "as-token")
	hs2.setOverride(func(r hsRequest) (int, string, bool) {
		return 404, `{"errcode":"M_NOT_FOUND"}`, strings.HasSuffix(r.Path, "/voip/turnServer")
	})
	b, err := New(testConfig(hs2.URL), WithLogger(testLogger(t)),
		WithCalls(media.WebRTCConfig{ICEServers: []media.ICEServer{{URLs: []string{"stun:stun.example.org"}}}}), WithHomeserverTURN())
	if err != nil {
		t.Fatal(err)
	}
	if cfg := b.legConfig(ctx); len(cfg.ICEServers) != 1 {
		t.Fatalf("without TURN on the homeserver: %+v", cfg.ICEServers)
	}
}
