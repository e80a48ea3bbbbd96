package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A portals_on_demand section in the example: a valid one loads, and each
// fault is named by file, line and key.
func TestConfigPortalsOnDemand(t *testing.T) {
	example, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PARLEY_XMPP_SECRET", "s3cret")
	t.Setenv("PARLEY_AS_TOKEN", "as")
	t.Setenv("PARLEY_HS_TOKEN", "hs")
	t.Setenv("PARLEY_SIP_1001", "phone-password")
	const anchor = "  identities:\n"
	before, _, ok := strings.Cut(string(example), anchor)
	if !ok {
		t.Fatalf("example has no %q", anchor)
	}
	// Line numbers in the section: it starts where identities was.
	first := 1 + strings.Count(before, "\n")
	tests := []struct {
		name    string
		section string
		want    string // "" when it loads; LINE+n is the section's line n
	}{
		{"valid", "  portals_on_demand:\n    users: [\"matrix:@*:example.org\"]\n    muc_services: [conference.example.org]\n", ""},
		{"misspelt key", "  portals_on_demand:\n    users: [\"*\"]\n    muc_service: [conference.example.org]\n",
			`parley.yaml:LINE+2: unknown key "muc_service" in mapping.portals_on_demand (did you mean "muc_services"?)`},
		{"no services", "  portals_on_demand:\n    users: [\"*\"]\n",
			"parley.yaml:LINE+0: mapping.portals_on_demand.muc_services: list the MUC services portals may reach"},
		{"a JID for a service", "  portals_on_demand:\n    users: [\"*\"]\n    muc_services:\n      - conference.example.org\n      - team@conference.example.org\n",
			`parley.yaml:LINE+4: mapping.portals_on_demand.muc_services[1]: "team@conference.example.org" is not a domain`},
		{"bad pattern", "  portals_on_demand:\n    users:\n      - \"matrix:[x\"\n    muc_services: [conference.example.org]\n",
			`parley.yaml:LINE+2: mapping.portals_on_demand.users[0]: pattern "matrix:[x"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "parley.yaml")
			data := strings.Replace(string(example), anchor, tc.section+anchor, 1)
			if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, m, err := setup(path)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if p := m.OnDemand(); p == nil || p.MUCServices[0] != "conference.example.org" {
					t.Errorf("policy = %+v", p)
				}
				return
			}
			line, rest, _ := strings.Cut(strings.TrimPrefix(tc.want, "parley.yaml:LINE+"), ":")
			n, _ := strconv.Atoi(line)
			want := "parley.yaml:" + strconv.Itoa(first+n) + ":" + rest
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, want)
			}
		})
	}
}
