package matrix

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func validConfig() Config {
	return Config{
		HomeserverURL: "http://127.0.0.1:8008",
		ServerName:    "example.org",
		Listen:        "127.0.0.1:29328",
		ASToken:       "as-secret",
		HSToken:       "hs-secret",
		Namespaces:    []string{`@_xmpp_.*:example\.org`},
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string // substrings of the error, one per problem; none: valid
	}{
		{name: "valid", modify: func(*Config) {}},
		{name: "valid with everything", modify: func(c *Config) {
			c.URL = "https://parley.internal:8443/as"
			c.ID = "gw"
			c.BotLocalpart = "gateway.bot"
			c.ServerName = "matrix.example.org:8448"
		}},
		{name: "no namespaces", modify: func(c *Config) { c.Namespaces = nil }},
		{name: "empty", modify: func(c *Config) { *c = Config{} }, want: []string{
			"matrix.homeserver_url: must be set",
			"matrix.server_name: must be set",
			"matrix.listen: must be set",
			"matrix.as_token: must be set",
			"matrix.hs_token: must be set",
		}},
		{name: "hs_token missing", modify: func(c *Config) { c.HSToken = "" }, want: []string{"matrix.hs_token: must be set"}},
		{name: "as_token missing", modify: func(c *Config) { c.ASToken = "" }, want: []string{"matrix.as_token: must be set"}},
		{name: "same tokens", modify: func(c *Config) { c.HSToken = c.ASToken }, want: []string{"matrix.hs_token: must differ from as_token"}},
		{name: "token with space", modify: func(c *Config) { c.ASToken = "a b" }, want: []string{"matrix.as_token: must not contain spaces"}},
		{name: "homeserver_url without scheme", modify: func(c *Config) { c.HomeserverURL = "localhost:8008" }, want: []string{"matrix.homeserver_url:"}},
		{name: "homeserver_url ftp", modify: func(c *Config) { c.HomeserverURL = "ftp://x" }, want: []string{"matrix.homeserver_url: \"ftp://x\": scheme must be http or https"}},
		{name: "server_name invalid", modify: func(c *Config) { c.ServerName = "exa mple" }, want: []string{`matrix.server_name: "exa mple" is not a valid server name`}},
		{name: "listen without port", modify: func(c *Config) { c.Listen = "127.0.0.1" }, want: []string{"matrix.listen: \"127.0.0.1\" is not host:port"}},
		{name: "listen port zero", modify: func(c *Config) { c.Listen = "127.0.0.1:0" }, want: []string{"matrix.listen: \"127.0.0.1:0\": port must be a number from 1 to 65535"}},
		{name: "url invalid", modify: func(c *Config) { c.URL = "127.0.0.1:29328" }, want: []string{"matrix.url:"}},
		{name: "bot_localpart upper case", modify: func(c *Config) { c.BotLocalpart = "Parley" }, want: []string{`matrix.bot_localpart: "Parley" is not a valid user ID localpart`}},
		{name: "namespace regexp", modify: func(c *Config) { c.Namespaces = []string{"ok", "@(x:y"} }, want: []string{"matrix.namespaces[1]: invalid regular expression"}},
		{name: "namespace empty", modify: func(c *Config) { c.Namespaces = []string{""} }, want: []string{"matrix.namespaces[0]: must not be empty"}},
		{name: "presence_poll_interval word", modify: func(c *Config) { c.PresencePollInterval = "sometimes" }, want: []string{`matrix.presence_poll_interval: "sometimes" is not auto, off or a duration`}},
		{name: "presence_poll_interval too short", modify: func(c *Config) { c.PresencePollInterval = "100ms" }, want: []string{"matrix.presence_poll_interval: 100ms is shorter than 1s"}},
		{name: "presence_poll_interval negative", modify: func(c *Config) { c.PresencePollInterval = "-5s" }, want: []string{"matrix.presence_poll_interval: -5s is shorter than 1s"}},
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
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("Validate() = %d problems:\n%v\nwant %d: %q", len(lines), err, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, lines[i], w)
				}
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := validConfig().withDefaults()
	if c.URL != "http://127.0.0.1:29328" || c.ID != "parley" || c.BotLocalpart != "parley" {
		t.Errorf("defaults: url=%q id=%q bot_localpart=%q", c.URL, c.ID, c.BotLocalpart)
	}
	c = validConfig()
	c.URL, c.ID, c.BotLocalpart = "http://as:1", "x", "y"
	if d := c.withDefaults(); d.URL != c.URL || d.ID != c.ID || d.BotLocalpart != c.BotLocalpart {
		t.Errorf("defaults overrode set fields: %+v", d)
	}
}

func TestConfigYAML(t *testing.T) {
	const doc = `
homeserver_url: http://127.0.0.1:8008
server_name: example.org
listen: 127.0.0.1:29328
url: http://parley:29328
id: parley-test
as_token: AS
hs_token: HS
bot_localpart: bridgebot
`
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	want := Config{
		HomeserverURL: "http://127.0.0.1:8008", ServerName: "example.org", Listen: "127.0.0.1:29328",
		URL: "http://parley:29328", ID: "parley-test", ASToken: "AS", HSToken: "HS", BotLocalpart: "bridgebot",
	}
	if c.HomeserverURL != want.HomeserverURL || c.ServerName != want.ServerName || c.Listen != want.Listen ||
		c.URL != want.URL || c.ID != want.ID || c.ASToken != want.ASToken || c.HSToken != want.HSToken ||
		c.BotLocalpart != want.BotLocalpart || c.Namespaces != nil {
		t.Errorf("decoded %+v, want %+v", c, want)
	}

	// Namespaces come from cmd, never from the YAML.
	dec = yaml.NewDecoder(strings.NewReader("namespaces: ['.*']\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err == nil {
		t.Error("namespaces key accepted in YAML")
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	c := validConfig()
	c.HSToken = ""
	if _, err := New(c); err == nil || !strings.Contains(err.Error(), "matrix.hs_token: must be set") {
		t.Errorf("New() error = %v", err)
	}
}

func TestConfigPresencePoll(t *testing.T) {
	tests := []struct {
		value     string
		wantEvery time.Duration
		wantAuto  bool
	}{
		{"", 30 * time.Second, true},
		{"auto", 30 * time.Second, true},
		{"off", 0, false},
		{"0", 0, false},
		{"0s", 0, false},
		{"10s", 10 * time.Second, false},
		{" 2m ", 2 * time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			c := validConfig()
			c.PresencePollInterval = tt.value
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			every, auto, err := c.withDefaults().presencePoll()
			if err != nil || every != tt.wantEvery || auto != tt.wantAuto {
				t.Errorf("presencePoll() = %s, %v, %v; want %s, %v", every, auto, err, tt.wantEvery, tt.wantAuto)
			}
		})
	}
}
