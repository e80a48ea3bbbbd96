package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
			`parley.yaml:LINE: unknown key "secert" in xmpp (did you mean "secret"?)`},
		{"unknown top-level key", "shutdown_timeout: 10s", "shutdown_timeout: 10s\nbogus: 1",
			`parley.yaml:22: unknown key "bogus"`},
		{"invalid value", "  server_name: example.org", "  server_name: \"\"", "parley.yaml:LINE: matrix.server_name"},
		{"missing secret", "env:PARLEY_HS_TOKEN", "env:PARLEY_NO_SUCH_VARIABLE",
			"parley.yaml:LINE: matrix.hs_token: environment variable PARLEY_NO_SUCH_VARIABLE is not set"},
		{"bad presence poll interval", "  presence_poll_interval: auto", "  presence_poll_interval: often",
			`parley.yaml:LINE: matrix.presence_poll_interval: "often" is not auto, off or a duration`},
		{"bad identity", "    - name: alice", "    - name: Alice", "parley.yaml:LINE: mapping.identities[0].name"},
		{"bad ghost template", `xmpp: "@_xmpp_{user}_{domain}:example.org"`, `xmpp: "@_xmpp_{user}.{domain}:example.org"`,
			"parley.yaml:LINE: mapping.ghosts.matrix.xmpp"},
		{"not yaml", "log:\n", "log: [\n", "parley.yaml: "},
		{"bad media ports", "    ports: 20000-20999", "    ports: 80-90", `parley.yaml:LINE: calls.media.ports: "80-90" is not a range`},
		{"misspelt calls key", "  ring_timeout: 60s", "  ring_timout: 60s", `parley.yaml:LINE: unknown key "ring_timout" in calls (did you mean "ring_timeout"?)`},
		{"media address everywhere without a public one", "    address: 127.0.0.1", "    address: 0.0.0.0",
			"calls.media.address: 0.0.0.0 binds every interface; set calls.media.public_address"},
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
			// LINE is the line of the example that the case changes.
			before, _, _ := bytes.Cut(example, []byte(tc.old))
			line := 1 + bytes.Count(before, []byte("\n"))
			want := strings.Replace(tc.want, "LINE", strconv.Itoa(line), 1)
			_, _, err := setup(path)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, want)
			}
		})
	}
}

// A portal's SIP address is checked against the sip section, with the
// line of its key.
func TestPortalSIPErrors(t *testing.T) {
	example, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PARLEY_XMPP_SECRET", "s3cret")
	t.Setenv("PARLEY_AS_TOKEN", "as")
	t.Setenv("PARLEY_HS_TOKEN", "hs")
	t.Setenv("PARLEY_SIP_1001", "phone-password")
	const anchor = "  # portals:\n"
	tests := []struct{ name, sip, phones, want string }{
		{"fine", "sip:team@parley.example.org", `["sip:1001@parley.example.org", "sip:2001@pbx.example.org"]`, ""},
		{"another domain", "sip:team@pbx.example.org", "[]", "parley.yaml:LINE: mapping.portals[0].sip: sip:team@pbx.example.org is not in Parley's SIP domain parley.example.org"},
		{"a user", "sip:1001@parley.example.org", "[]", "parley.yaml:LINE: mapping.portals[0].sip: sip:1001@parley.example.org is a SIP user"},
		{"not canonical", "sip:team@Parley.example.org", "[]", "parley.yaml:LINE: mapping.portals[0].sip"},
		{"bad phone", "sip:team@parley.example.org", `["sip:1001@parley.example.org", "tel:+1234"]`, "parley.yaml:LINE2: mapping.portals[0].phones[1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(example, []byte(anchor)) {
				t.Fatalf("example has no %q", anchor)
			}
			portal := "  portals:\n    - matrix: \"#team:example.org\"\n      xmpp: team@conference.example.org\n" +
				"      sip: \"" + tc.sip + "\"\n      phones: " + tc.phones + "\n"
			before, _, _ := bytes.Cut(example, []byte(anchor))
			line := 1 + bytes.Count(before, []byte("\n"))
			path := filepath.Join(t.TempDir(), "parley.yaml")
			if err := os.WriteFile(path, []byte(strings.Replace(string(example), anchor, portal, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := setup(path)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			want := strings.Replace(tc.want, "LINE2", strconv.Itoa(line+4), 1)
			want = strings.Replace(want, "LINE", strconv.Itoa(line+3), 1)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, want)
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

// unsetSecrets clears the variables config.example.yaml reads its secrets
// from, as on a fresh checkout, for the rest of the test.
func unsetSecrets(t *testing.T) {
	t.Helper()
	for _, name := range []string{"PARLEY_XMPP_SECRET", "PARLEY_AS_TOKEN", "PARLEY_HS_TOKEN", "PARLEY_SIP_1001"} {
		t.Setenv(name, "") // restored after the test
		if err := os.Unsetenv(name); err != nil {
			t.Fatal(err)
		}
	}
}

// The README's first command, on a fresh checkout: check-config passes and
// names each variable the example reads a secret from, the key and line
// that reads it, and what it is for; run and gen-registration refuse it.
func TestCheckConfigExampleOnFreshCheckout(t *testing.T) {
	unsetSecrets(t)
	const example = "../../config.example.yaml"
	var out, errOut bytes.Buffer
	if code := run([]string{"check-config", "-config", example}, &out, &errOut); code != 0 {
		t.Fatalf("check-config exit %d:\n%s%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), example+": ok: 1 identities") {
		t.Errorf("no ok line:\n%s", out.String())
	}
	for _, want := range []string{
		fmt.Sprintf("%s:%d: warning: xmpp.secret: environment variable PARLEY_XMPP_SECRET is not set; parley run needs it: the component secret", example, exampleLine(t, "env:PARLEY_XMPP_SECRET")),
		fmt.Sprintf("%s:%d: warning: matrix.as_token: environment variable PARLEY_AS_TOKEN is not set; parley run needs it", example, exampleLine(t, "env:PARLEY_AS_TOKEN")),
		fmt.Sprintf("%s:%d: warning: matrix.hs_token: environment variable PARLEY_HS_TOKEN is not set; parley run needs it", example, exampleLine(t, "env:PARLEY_HS_TOKEN")),
		fmt.Sprintf("%s:%d: warning: sip.users.1001.password: environment variable PARLEY_SIP_1001 is not set; parley run needs it: the digest password of SIP user 1001", example, exampleLine(t, "env:PARLEY_SIP_1001")),
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check-config output lacks\n  %s\ngot:\n%s", want, out.String())
		}
	}

	// -strict checks the file as parley run will see it.
	out.Reset()
	errOut.Reset()
	if code := run([]string{"check-config", "-strict", "-config", example}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "xmpp.secret: environment variable PARLEY_XMPP_SECRET is not set") {
		t.Errorf("check-config -strict: exit %d, stderr:\n%s", code, errOut.String())
	}
	// gen-registration writes the tokens, so it needs them.
	errOut.Reset()
	if code := run([]string{"gen-registration", "-config", example, "-o", "-"}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "matrix.as_token: environment variable PARLEY_AS_TOKEN is not set") {
		t.Errorf("gen-registration without its tokens: exit %d, stderr:\n%s", code, errOut.String())
	}
	// run refuses to start without its secrets.
	if _, _, err := setup(example); err == nil || !strings.Contains(err.Error(), "PARLEY_HS_TOKEN is not set") {
		t.Errorf("setup without secrets: err = %v", err)
	}
}

// A secret that is set but invalid is still an error for check-config, and
// two tokens read from the same missing variable would be equal, which run
// refuses: check-config says so already.
func TestCheckConfigStillChecksSecretsItCanSee(t *testing.T) {
	unsetSecrets(t)
	example, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, old, new, want string }{
		{"same variable for both tokens", "env:PARLEY_HS_TOKEN", "env:PARLEY_AS_TOKEN", fmt.Sprintf("parley.yaml:%d: matrix.hs_token: must differ from as_token", exampleLine(t, "env:PARLEY_HS_TOKEN"))},
		{"inline token with a space", "env:PARLEY_AS_TOKEN", `"a b"`, fmt.Sprintf("parley.yaml:%d: matrix.as_token: must not contain spaces", exampleLine(t, "env:PARLEY_AS_TOKEN"))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "parley.yaml")
			if err := os.WriteFile(path, bytes.Replace(example, []byte(tc.old), []byte(tc.new), 1), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			if code := run([]string{"check-config", "-config", path}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant it to contain %q", code, errOut.String(), tc.want)
			}
		})
	}
}

// exampleLine returns the number of the first line of config.example.yaml
// that holds text.
func exampleLine(t *testing.T, text string) int {
	t.Helper()
	b, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, text) {
			return i + 1
		}
	}
	t.Fatalf("config.example.yaml has no line with %q", text)
	return 0
}
