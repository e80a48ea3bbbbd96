package matrix

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/appservice"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func TestRegistrationGolden(t *testing.T) {
	cfg := Config{
		HomeserverURL: "http://127.0.0.1:8008",
		ServerName:    "example.org",
		Listen:        "127.0.0.1:29328",
		ASToken:       "as-token-0123456789",
		HSToken:       "hs-token-9876543210",
		Namespaces:    []string{`@_xmpp_.*:example\.org`, `@_sip_.*:example\.org`},
	}
	got, err := Registration(cfg)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "registration.yaml")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Registration() differs from %s (run with -update to accept):\n%s", golden, got)
	}

	// What a homeserver reads back.
	var reg appservice.Registration
	if err := yaml.Unmarshal(got, &reg); err != nil {
		t.Fatal(err)
	}
	if reg.ID != "parley" || reg.URL != "http://127.0.0.1:29328" || reg.AppToken != cfg.ASToken ||
		reg.ServerToken != cfg.HSToken || reg.SenderLocalpart != "parley" ||
		reg.RateLimited == nil || *reg.RateLimited || !reg.EphemeralEvents || !reg.SoruEphemeralEvents {
		t.Errorf("registration read back: %+v", reg)
	}
	wantNS := []string{`@_xmpp_.*:example\.org`, `@_sip_.*:example\.org`, `^@parley:example\.org$`}
	if len(reg.Namespaces.UserIDs) != len(wantNS) {
		t.Fatalf("user namespaces = %+v, want %q", reg.Namespaces.UserIDs, wantNS)
	}
	for i, ns := range reg.Namespaces.UserIDs {
		if ns.Regex != wantNS[i] || !ns.Exclusive {
			t.Errorf("namespace %d = %+v, want exclusive %q", i, ns, wantNS[i])
		}
	}
	// The aliases that name MUCs (portals on demand) are the appservice's.
	if len(reg.Namespaces.RoomAliases) != 1 || reg.Namespaces.RoomAliases[0].Regex != `^#_xmpp_.*:example\.org$` ||
		!reg.Namespaces.RoomAliases[0].Exclusive || len(reg.Namespaces.RoomIDs) != 0 {
		t.Errorf("alias/room namespaces: %+v", reg.Namespaces)
	}
}

func TestRegistrationInvalidConfig(t *testing.T) {
	cfg := validConfig()
	cfg.ASToken = ""
	if _, err := Registration(cfg); err == nil {
		t.Error("Registration() of a config without as_token succeeded")
	}
}
