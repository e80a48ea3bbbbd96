package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExampleConfigLoads(t *testing.T) {
	t.Setenv("PARLEY_XMPP_SECRET", "s3cret")
	t.Setenv("PARLEY_AS_TOKEN", "as")
	t.Setenv("PARLEY_HS_TOKEN", "hs")
	t.Setenv("PARLEY_SIP_1001", "phone-password")
	cfg, m, err := setup("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.XMPP.Secret != "s3cret" || cfg.Matrix.HSToken != "hs" || cfg.SIP.Users["1001"].Password != "phone-password" {
		t.Errorf("secrets not resolved from the environment: %q %q", cfg.XMPP.Secret, cfg.Matrix.HSToken)
	}
	if m == nil || len(cfg.Matrix.Namespaces) == 0 {
		t.Errorf("matrix namespaces not derived from the ghost templates: %v", cfg.Matrix.Namespaces)
	}
}

func TestConfigErrorsNameFileLineAndKey(t *testing.T) {
	example, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PARLEY_XMPP_SECRET", "s3cret")
	t.Setenv("PARLEY_AS_TOKEN", "as")
	t.Setenv("PARLEY_HS_TOKEN", "hs")
	t.Setenv("PARLEY_SIP_1001", "phone-password")
	tests := []struct {
		name     string
		old, new string
		want     string
	}{
		{"misspelt key", "  secret: env:PARLEY_XMPP_SECRET", "  secert: env:PARLEY_XMPP_SECRET",
			`parley.yaml:29: unknown key "secert" in xmpp (did you mean "secret"?)`},
		{"unknown top-level key", "shutdown_timeout: 10s", "shutdown_timeout: 10s\nbogus: 1",
			`parley.yaml:22: unknown key "bogus"`},
		{"invalid value", "  server_name: example.org", "  server_name: \"\"", "parley.yaml:38: matrix.server_name"},
		{"missing secret", "env:PARLEY_HS_TOKEN", "env:PARLEY_NO_SUCH_VARIABLE",
			"parley.yaml:44: matrix.hs_token: environment variable PARLEY_NO_SUCH_VARIABLE is not set"},
		{"bad presence poll interval", "  presence_poll_interval: auto", "  presence_poll_interval: often",
			`parley.yaml:48: matrix.presence_poll_interval: "often" is not auto, off or a duration`},
		{"bad identity", "    - name: alice", "    - name: Alice", "parley.yaml:95: mapping.identities[0].name"},
		{"bad ghost template", `xmpp: "@_xmpp_{user}_{domain}:example.org"`, `xmpp: "@_xmpp_{user}.{domain}:example.org"`,
			"parley.yaml:70: mapping.ghosts.matrix.xmpp"},
		{"not yaml", "log:\n", "log: [\n", "parley.yaml: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(example, []byte(tc.old)) {
				t.Fatalf("example has no %q", tc.old)
			}
			path := filepath.Join(t.TempDir(), "parley.yaml")
			data := strings.Replace(string(example), tc.old, tc.new, 1)
			if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := setup(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestCheckConfigCommand(t *testing.T) {
	t.Setenv("PARLEY_XMPP_SECRET", "s3cret")
	t.Setenv("PARLEY_AS_TOKEN", "as")
	t.Setenv("PARLEY_HS_TOKEN", "hs")
	t.Setenv("PARLEY_SIP_1001", "phone-password")
	var out, errOut bytes.Buffer
	if code := run([]string{"check-config", "-config", "../../config.example.yaml"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "ok: 1 identities") {
		t.Errorf("output: %s", out.String())
	}
	out.Reset()
	if code := run([]string{"gen-registration", "-config", "../../config.example.yaml", "-o", "-"}, &out, &errOut); code != 0 {
		t.Fatalf("gen-registration exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"hs_token: hs", "as_token: as", "_xmpp_"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("registration lacks %q:\n%s", want, out.String())
		}
	}
}
