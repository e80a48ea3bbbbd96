package xmpp

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func validConfig() Config {
	return Config{
		Server:        "127.0.0.1:5347",
		Domain:        "matrix.localhost",
		Secret:        "s3cret",
		ServerDomains: []string{"localhost"},
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string // substrings of the error; none means valid
	}{
		{name: "valid", modify: func(*Config) {}},
		{name: "valid with gateway type", modify: func(c *Config) { c.GatewayType = "sip-gw2" }},
		{name: "valid IPv6 server", modify: func(c *Config) { c.Server = "[::1]:5347" }},
		{name: "valid several server domains", modify: func(c *Config) { c.ServerDomains = []string{"localhost", "example.org"} }},
		{name: "missing server", modify: func(c *Config) { c.Server = "" }, want: []string{"xmpp.server: is empty"}},
		{name: "server without port", modify: func(c *Config) { c.Server = "localhost" }, want: []string{`xmpp.server: "localhost": want host:port`}},
		{name: "server with bad port", modify: func(c *Config) { c.Server = "localhost:99999" }, want: []string{`port "99999" is not a number from 1 to 65535`}},
		{name: "server without host", modify: func(c *Config) { c.Server = ":5347" }, want: []string{"xmpp.server: \":5347\": host is empty"}},
		{name: "missing domain", modify: func(c *Config) { c.Domain = "" }, want: []string{"xmpp.domain: is empty"}},
		{name: "domain with localpart", modify: func(c *Config) { c.Domain = "bot@matrix.localhost" }, want: []string{"xmpp.domain: \"bot@matrix.localhost\": want a bare domain"}},
		{name: "domain with resource", modify: func(c *Config) { c.Domain = "matrix.localhost/x" }, want: []string{"xmpp.domain:", "want a bare domain"}},
		{name: "invalid domain", modify: func(c *Config) { c.Domain = "a b" }, want: []string{"xmpp.domain: \"a b\": not a valid domain"}},
		{name: "missing secret", modify: func(c *Config) { c.Secret = "" }, want: []string{"xmpp.secret: is empty"}},
		{name: "missing server domains", modify: func(c *Config) { c.ServerDomains = nil }, want: []string{"xmpp.server_domains: is empty"}},
		{name: "empty server domain", modify: func(c *Config) { c.ServerDomains = []string{"localhost", ""} }, want: []string{"xmpp.server_domains[1]: is empty"}},
		{name: "server domain is the component", modify: func(c *Config) { c.ServerDomains = []string{"Matrix.Localhost"} }, want: []string{"xmpp.server_domains[0]: \"Matrix.Localhost\" is the component domain itself"}},
		{name: "duplicate server domain", modify: func(c *Config) { c.ServerDomains = []string{"localhost", "LOCALHOST"} }, want: []string{"xmpp.server_domains[1]: \"LOCALHOST\" repeats server_domains[0]"}},
		{name: "server domain with localpart", modify: func(c *Config) { c.ServerDomains = []string{"alice@localhost"} }, want: []string{"xmpp.server_domains[0]:", "want a bare domain"}},
		{name: "bad gateway type", modify: func(c *Config) { c.GatewayType = "Matrix GW" }, want: []string{"xmpp.gateway_type: \"Matrix GW\""}},
		{name: "everything missing", modify: func(c *Config) { *c = Config{} }, want: []string{"xmpp.server:", "xmpp.domain:", "xmpp.secret:", "xmpp.server_domains:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.modify(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	const doc = `
server: 127.0.0.1:5347
domain: matrix.localhost
secret: s3cret
server_domains: [localhost, example.org]
gateway_type: matrix
`
	var c Config
	d := yaml.NewDecoder(strings.NewReader(doc))
	d.KnownFields(true)
	if err := d.Decode(&c); err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := Config{
		Server:        "127.0.0.1:5347",
		Domain:        "matrix.localhost",
		Secret:        "s3cret",
		ServerDomains: []string{"localhost", "example.org"},
		GatewayType:   "matrix",
	}
	if c.Server != want.Server || c.Domain != want.Domain || c.Secret != want.Secret ||
		strings.Join(c.ServerDomains, ",") != strings.Join(want.ServerDomains, ",") || c.GatewayType != want.GatewayType {
		t.Errorf("decoded %+v, want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
}

func TestConfigGatewayTypeDefault(t *testing.T) {
	if got := (Config{}).gatewayType(); got != DefaultGatewayType {
		t.Errorf("gatewayType() = %q, want %q", got, DefaultGatewayType)
	}
	if got := (Config{GatewayType: "xmpp"}).gatewayType(); got != "xmpp" {
		t.Errorf("gatewayType() = %q, want xmpp", got)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New(Config{}) = nil error, want the validation error")
	}
	if _, err := New(validConfig()); err != nil {
		t.Fatalf("New(valid) = %v", err)
	}
}
