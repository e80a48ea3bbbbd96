package sip

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want []string // substrings of the error, one per problem; none: valid
	}{
		{name: "test config", edit: func(*Config) {}},
		{name: "minimal", edit: func(c *Config) { *c = Config{Domain: "parley.localhost", Listen: []string{"udp:0.0.0.0:5060"}} }},
		{name: "everything", edit: func(c *Config) {
			c.Realm = "Parley"
			c.Listen = []string{"udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "tls:[::1]:5061", "TLS:127.0.0.1:5061"}
			c.TLSCert, c.TLSKey = "cert.pem", "key.pem"
			c.OutboundProxy = "sip:pbx.example.org:5060;transport=tcp"
			c.MaxMessageSize = 60000
			c.RateLimit = RateLimit{PerSecond: 0.5, Burst: 1}
			c.OfflineTTL = time.Hour
			c.MinExpires, c.MaxExpires = time.Minute, time.Minute
			c.UserAgent = "Parley/1.0"
		}},
		{name: "IP domain", edit: func(c *Config) { c.Domain = "192.0.2.1" }},
		{name: "empty", edit: func(c *Config) { *c = Config{} }, want: []string{"sip.domain: is empty", "sip.listen: is empty"}},
		{name: "bad domain", edit: func(c *Config) { c.Domain = "parley local" }, want: []string{`sip.domain: "parley local" is not a domain name`}},
		{name: "IPv6 domain without brackets", edit: func(c *Config) { c.Domain = "2001:db8::1" }, want: []string{"sip.domain: \"2001:db8::1\": write an IPv6 address in brackets"}},
		{name: "realm with a quote", edit: func(c *Config) { c.Realm = `a"b` }, want: []string{"sip.realm:"}},
		{name: "bad listeners", edit: func(c *Config) {
			c.Listen = []string{"ws:127.0.0.1:80", "udp127.0.0.1:5060", "udp:127.0.0.1", "tcp:127.0.0.1:99999", "udp:127.0.0.1:5060", "udp:127.0.0.1:5060"}
		}, want: []string{
			`sip.listen[0]: "ws:127.0.0.1:80": transport "ws": want udp, tcp or tls`,
			`sip.listen[1]: "udp127.0.0.1:5060": transport "udp127.0.0.1"`,
			`sip.listen[2]: "udp:127.0.0.1": want host:port`,
			`sip.listen[3]: "tcp:127.0.0.1:99999": port "99999"`,
			`sip.listen[5]: "udp:127.0.0.1:5060" repeats listen[4]`,
		}},
		{name: "tls listener without files", edit: func(c *Config) { c.Listen = []string{"tls:127.0.0.1:5061"} }, want: []string{"sip.tls_cert: is empty", "sip.tls_key: is empty"}},
		{name: "tls files without a tls listener", edit: func(c *Config) { c.TLSCert, c.TLSKey = "c", "k" }, want: []string{"sip.tls_cert: is set, but no listener is tls", "sip.tls_key: is set, but no listener is tls"}},
		{name: "bad users", edit: func(c *Config) {
			c.Users = map[string]User{
				"a\x01b":  {Password: "x"},
				"nopass":  {},
				"both":    {Password: "x", HA1: ha1("both", testDomain, "x")},
				"bad-ha1": {HA1: "not hex"},
			}
		}, want: []string{
			`sip.users.a` + "\x01" + `b: "a\x01b" is not a valid SIP user part`,
			"sip.users.bad-ha1.ha1: want 32 hex digits",
			"sip.users.both: set password or ha1, not both",
			"sip.users.nopass: set password or ha1",
		}},
		{name: "bad outbound proxy", edit: func(c *Config) { c.OutboundProxy = "http://pbx" }, want: []string{`sip.outbound_proxy: "http://pbx": want a sip: or sips: URI`}},
		{name: "outbound proxy transport", edit: func(c *Config) { c.OutboundProxy = "sip:pbx;transport=sctp" }, want: []string{`sip.outbound_proxy: "sip:pbx;transport=sctp": transport "sctp"`}},
		{name: "bad peers", edit: func(c *Config) {
			c.TrustedPeers = []TrustedPeer{
				{Name: "", Addresses: []string{"10.0.0.1"}},
				{Name: "a"},
				{Name: "a", Addresses: []string{"10.0.0.300", "10.0.0.0/33"}, Domains: []string{"PBX.example.org"}},
				{Name: "b", Username: "alice", Password: "x"},
				{Name: "c", Username: "trunk"},
				{Name: "d", Password: "x", Addresses: []string{"::1"}},
				{Name: "e", Username: "trunk", Password: "y"},
				{Name: "f", Username: "trunk", Password: "z"},
			}
		}, want: []string{
			"sip.trusted_peers[0].name: is empty",
			"sip.trusted_peers[1]: set addresses, or username and password",
			`sip.trusted_peers[2].name: "a" repeats trusted_peers[1].name`,
			`sip.trusted_peers[2].addresses[0]: "10.0.0.300" is not an IP address or a CIDR prefix`,
			`sip.trusted_peers[2].addresses[1]: "10.0.0.0/33"`,
			`sip.trusted_peers[2].domains[0]: "PBX.example.org" is not a lowercase domain name`,
			`sip.trusted_peers[3].username: "alice" is also one of users`,
			"sip.trusted_peers[4].password: is empty; set it with username",
			"sip.trusted_peers[5].username: is empty; set it with password",
			`sip.trusted_peers[7].username: "trunk" repeats trusted_peers[6].username`,
		}},
		{name: "bad numbers", edit: func(c *Config) {
			c.MaxMessageSize = 70000
			c.RateLimit = RateLimit{PerSecond: -1, Burst: -2}
			c.OfflineTTL = time.Millisecond
			c.MinExpires = 60 // nanoseconds: a YAML integer without a unit
			c.MaxExpires = 30 * time.Second
			c.UserAgent = "Parley\r\nX-Injected: 1"
		}, want: []string{
			"sip.max_message_size: 70000: want a number of bytes from 1 to 60000",
			"sip.rate_limit.per_second: -1 must be positive",
			"sip.rate_limit.burst: -2 must be positive",
			"sip.offline_ttl: 1ms",
			"sip.min_expires: 60ns: want a duration of at least 1s with a unit",
			"sip.user_agent:",
		}},
		{name: "SHA-256 beside MD5", edit: func(c *Config) {
			c.DigestAlgorithms = []string{"sha-256", "md5"}
			c.Users["bob"] = User{HA1: ha1("bob", testDomain, bobPassword), HA1SHA256: ha1SHA256("bob", testDomain, bobPassword)}
			c.Users["carol"] = User{HA1: ha1("carol", testDomain, "pw"), HA1SHA256: ha1SHA256("carol", testDomain, "pw")}
		}},
		{name: "SHA-256 only", edit: func(c *Config) {
			c.DigestAlgorithms = []string{"SHA-256"}
			c.Users["bob"] = User{HA1SHA256: ha1SHA256("bob", testDomain, bobPassword)}
		}},
		{name: "digest algorithms", edit: func(c *Config) {
			c.DigestAlgorithms = []string{"SHA-256", "MD5", "SHA-512", "md5"}
			c.Users["carol"] = User{HA1SHA256: "abc"}
			c.Users["dave"] = User{Password: "pw", HA1SHA256: ha1SHA256("dave", testDomain, "pw")}
		}, want: []string{
			`sip.digest_algorithms[2]: "SHA-512": want MD5 or SHA-256`,
			`sip.digest_algorithms[3]: "MD5" is listed twice`,
			"sip.users.bob.ha1_sha256: is empty, and digest_algorithms lists SHA-256: set ha1_sha256 (SHA-256 of \"bob:parley.localhost:password\") or password",
			"sip.users.carol.ha1_sha256: want 64 hex digits",
			"sip.users.carol.ha1: is empty, and digest_algorithms lists MD5",
			"sip.users.dave: set password or ha1_sha256, not both",
		}},
		{name: "max below min", edit: func(c *Config) { c.MaxExpires = 30 * time.Second }, want: []string{"sip.max_expires: 30s is less than min_expires (1m0s)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.edit(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate succeeded, want %q", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("%d problems, want %d:\n%s", len(lines), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%s", w, err)
				}
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	const doc = `
domain: parley.localhost
realm: parley
listen: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
users:
  "1001": {password: s3cret}
  alice: {ha1: 0123456789abcdef0123456789abcdef}
outbound_proxy: sip:pbx.example.org;transport=tcp
trusted_peers:
  - name: pbx
    addresses: [192.0.2.10, 10.0.0.0/24]
    domains: [pbx.example.org]
  - name: trunk
    username: trunk
    password: trunk-secret
max_message_size: 4096
rate_limit: {per_second: 5, burst: 10}
offline_ttl: 12h
min_expires: 30s
max_expires: 2h
user_agent: Parley/test
`
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if c.Users["1001"].Password != "s3cret" || c.Users["alice"].HA1 == "" || len(c.TrustedPeers) != 2 ||
		c.TrustedPeers[0].Domains[0] != "pbx.example.org" || c.RateLimit.Burst != 10 ||
		c.OfflineTTL != 12*time.Hour || c.MinExpires != 30*time.Second || c.MaxExpires != 2*time.Hour {
		t.Errorf("decoded %+v", c)
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Domain: "Parley.Localhost", Listen: []string{"udp:127.0.0.1:0"}}.withDefaults()
	want := Config{
		Domain: "parley.localhost", Realm: "parley.localhost", Listen: c.Listen,
		MaxMessageSize: 8192, RateLimit: RateLimit{PerSecond: 20, Burst: 40},
		OfflineTTL: 24 * time.Hour, MinExpires: time.Minute, MaxExpires: time.Hour, UserAgent: "Parley",
	}
	if c.Domain != want.Domain || c.Realm != want.Realm || c.MaxMessageSize != want.MaxMessageSize || c.RateLimit != want.RateLimit ||
		c.OfflineTTL != want.OfflineTTL || c.MinExpires != want.MinExpires || c.MaxExpires != want.MaxExpires || c.UserAgent != want.UserAgent {
		t.Errorf("withDefaults = %+v, want %+v", c, want)
	}
}
