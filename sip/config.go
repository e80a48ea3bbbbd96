package sip

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Defaults of the optional settings.
const (
	DefaultMaxMessageSize = 8192
	DefaultRatePerSecond  = 20
	DefaultRateBurst      = 40
	DefaultOfflineTTL     = 24 * time.Hour
	DefaultMinExpires     = 60 * time.Second
	DefaultMaxExpires     = 3600 * time.Second
	DefaultUserAgent      = "Parley"
)

// maxMessageSizeLimit bounds Config.MaxMessageSize: a SIP message larger
// than sipgo's 64 KiB parser limit never reaches the adapter.
const maxMessageSizeLimit = 60000

// Config is the `sip:` section of Parley's configuration file: the SIP
// domain Parley serves as registrar, where it listens, who may register, and
// which peers (a PBX, a proxy) it trusts.
//
// Secrets (users' password and ha1, trusted peers' password) arrive
// resolved: the configuration layer reads env: and file: references before
// the adapter sees them.
type Config struct {
	// Domain is the SIP domain Parley serves, e.g. "parley.localhost": the
	// host of its users' and ghosts' addresses of record.
	Domain string `yaml:"domain"`
	// Realm is the digest authentication realm; Domain when empty. HA1
	// values must be computed with it.
	Realm string `yaml:"realm"`
	// Listen lists the sockets to listen on as "transport:host:port", with
	// transport udp, tcp or tls: e.g. "udp:127.0.0.1:5060",
	// "tls:0.0.0.0:5061". Port 0 picks a free port.
	Listen []string `yaml:"listen"`
	// TLSCert and TLSKey are the PEM files of the certificate and key of
	// the tls listeners. They are required when, and only when, a tls
	// listener is configured; they are read by Start.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Users are the accounts that may register with Parley and send
	// messages from Domain, by user part (unescaped, e.g. "1001").
	Users map[string]User `yaml:"users"`
	// DigestAlgorithms are the digest algorithms Parley challenges with,
	// most preferred first, one challenge header each (RFC 8760 §2.4):
	// "MD5", "SHA-256" or both (default ["MD5"]). Every user needs a
	// password or the HA1 of each algorithm listed. Some clients fail when
	// any challenge names an algorithm they do not know (baresip 1.0 with
	// libre 1.1, sipp 3.6 when SHA-256 comes first): list SHA-256 only
	// when the phones support it.
	DigestAlgorithms []string `yaml:"digest_algorithms"`
	// OutboundProxy is the SIP URI of the proxy (typically the PBX) that
	// requests to addresses outside Domain go through, e.g.
	// "sip:pbx.example.org:5060;transport=tcp". When empty they go to the
	// recipient's domain directly (DNS A/AAAA, then SRV).
	OutboundProxy string `yaml:"outbound_proxy"`
	// TrustedPeers are the peers (a PBX, a proxy) whose requests are
	// accepted without per-user authentication.
	TrustedPeers []TrustedPeer `yaml:"trusted_peers"`
	// MaxMessageSize bounds the body of an inbound MESSAGE, in bytes
	// (default 8192, at most 60000). Larger ones are answered 413.
	MaxMessageSize int `yaml:"max_message_size"`
	// RateLimit bounds the requests accepted from one source IP address.
	RateLimit RateLimit `yaml:"rate_limit"`
	// OfflineTTL is how long a message for a user of Domain who has no
	// registered contact waits for them to register (default 24h); after
	// that, Send fails permanently and the sender is told.
	OfflineTTL time.Duration `yaml:"offline_ttl"`
	// MinExpires and MaxExpires bound the lifetime of a registration, a
	// presence subscription and a presence publication (defaults 60s and
	// 3600s). Shorter requests are answered 423, longer ones are
	// shortened.
	MinExpires time.Duration `yaml:"min_expires"`
	MaxExpires time.Duration `yaml:"max_expires"`
	// UserAgent is sent in the User-Agent and Server headers (default
	// "Parley").
	UserAgent string `yaml:"user_agent"`
}

// User is one account of Config.Users: either Password, or the HA1 of
// each algorithm of Config.DigestAlgorithms.
type User struct {
	// Password is the account's digest password.
	Password string `yaml:"password"`
	// HA1 is MD5("user:realm:password") in hex, for admins who would rather
	// not store the password (Kamailio's ha1 column, Asterisk's md5_cred).
	HA1 string `yaml:"ha1"`
	// HA1SHA256 is SHA-256("user:realm:password") in hex, the HA1 of the
	// SHA-256 algorithm (RFC 8760), needed instead of HA1 or beside it
	// when DigestAlgorithms lists SHA-256 and Password is not set.
	HA1SHA256 string `yaml:"ha1_sha256"`
}

// TrustedPeer is a SIP peer, such as a PBX, whose requests are accepted for
// any sender of its domains without per-user authentication. A request is
// the peer's when it comes from one of Addresses, or carries valid digest
// credentials for Username and Password (Parley challenges for them).
type TrustedPeer struct {
	// Name identifies the peer in logs and errors.
	Name string `yaml:"name"`
	// Addresses are the peer's source IP addresses or CIDR prefixes, e.g.
	// "192.0.2.10" or "10.0.0.0/24". Their requests are not rate limited.
	Addresses []string `yaml:"addresses"`
	// Domains are the SIP domains the peer may send from (the host of the
	// From address). When empty, any domain but Config.Domain: Parley's
	// own users authenticate themselves. List Config.Domain to let the peer
	// send as them too.
	Domains []string `yaml:"domains"`
	// Username and Password are digest credentials of the peer, set
	// together or not at all. The username must differ from every user's.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// RateLimit is a token bucket per source IP address.
type RateLimit struct {
	// PerSecond is the sustained rate of requests (default 20).
	PerSecond float64 `yaml:"per_second"`
	// Burst is the bucket size: how many requests may come at once
	// (default 40).
	Burst int `yaml:"burst"`
}

// withDefaults returns c with the defaults of unset optional settings.
func (c Config) withDefaults() Config {
	c.Domain = strings.ToLower(c.Domain)
	if c.Realm == "" {
		c.Realm = c.Domain
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.RateLimit.PerSecond == 0 {
		c.RateLimit.PerSecond = DefaultRatePerSecond
	}
	if c.RateLimit.Burst == 0 {
		c.RateLimit.Burst = DefaultRateBurst
	}
	if c.OfflineTTL == 0 {
		c.OfflineTTL = DefaultOfflineTTL
	}
	if c.MinExpires == 0 {
		c.MinExpires = DefaultMinExpires
	}
	if c.MaxExpires == 0 {
		c.MaxExpires = DefaultMaxExpires
	}
	if c.UserAgent == "" {
		c.UserAgent = DefaultUserAgent
	}
	if len(c.DigestAlgorithms) == 0 {
		c.DigestAlgorithms = []string{AlgorithmMD5}
	}
	algs := make([]string, len(c.DigestAlgorithms))
	for i, a := range c.DigestAlgorithms {
		algs[i] = a
		for _, known := range []string{AlgorithmMD5, AlgorithmSHA256} {
			if strings.EqualFold(a, known) {
				algs[i] = known
			}
		}
	}
	c.DigestAlgorithms = algs
	return c
}

// Validate checks c (with its defaults) and reports every problem it
// finds, each prefixed with its key ("sip.users.alice: ..."). It does no
// I/O: the TLS files are read by Start.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("sip.%s: %s", key, fmt.Sprintf(format, args...)))
	}

	domainOK := false
	switch h, err := canonicalHost(c.Domain); {
	case c.Domain == "":
		bad("domain", "is empty; want the SIP domain Parley serves, e.g. parley.localhost")
	case err != nil:
		bad("domain", "%q is not a domain name or an IP address", c.Domain)
	case h != c.Domain:
		bad("domain", "%q: write an IPv6 address in brackets, in its short form (%s)", c.Domain, h)
	default:
		domainOK = true
	}
	if !printable(c.Realm) || strings.ContainsAny(c.Realm, `"\`) {
		bad("realm", "%q: want printable text without quotes or backslashes", c.Realm)
	}

	hasTLS := false
	if len(c.Listen) == 0 {
		bad("listen", `is empty; want at least one "transport:host:port", e.g. udp:127.0.0.1:5060`)
	}
	seen := map[string]int{}
	for i, s := range c.Listen {
		key := fmt.Sprintf("listen[%d]", i)
		l, err := parseListen(s)
		if err != nil {
			bad(key, "%q: %v", s, err)
			continue
		}
		if l.network == "tls" {
			hasTLS = true
		}
		norm := l.network + ":" + l.addr
		if j, dup := seen[norm]; dup && !strings.HasSuffix(l.addr, ":0") {
			bad(key, "%q repeats listen[%d]", s, j)
		}
		seen[norm] = i
	}
	switch {
	case hasTLS && c.TLSCert == "":
		bad("tls_cert", "is empty; a tls listener needs a certificate (PEM file)")
	case !hasTLS && c.TLSCert != "":
		bad("tls_cert", "is set, but no listener is tls")
	}
	switch {
	case hasTLS && c.TLSKey == "":
		bad("tls_key", "is empty; a tls listener needs a private key (PEM file)")
	case !hasTLS && c.TLSKey != "":
		bad("tls_key", "is set, but no listener is tls")
	}

	offered := map[string]bool{}
	for i, a := range c.DigestAlgorithms {
		key := fmt.Sprintf("digest_algorithms[%d]", i)
		switch {
		case a != AlgorithmMD5 && a != AlgorithmSHA256:
			bad(key, "%q: want MD5 or SHA-256", a)
		case offered[a]:
			bad(key, "%q is listed twice", a)
		}
		offered[a] = true
	}

	users := sortedKeys(c.Users)
	for _, name := range users {
		u := c.Users[name]
		key := "users." + name
		if domainOK {
			if _, err := (AddressCodec{}).Join(name, c.Domain); err != nil {
				bad(key, "%q is not a valid SIP user part: %v", name, errors.Unwrap(err))
			}
		}
		switch {
		case u.Password == "" && u.HA1 == "" && u.HA1SHA256 == "":
			bad(key, "set password or ha1")
		case u.Password != "" && u.HA1 != "":
			bad(key, "set password or ha1, not both")
		case u.Password != "" && u.HA1SHA256 != "":
			bad(key, "set password or ha1_sha256, not both")
		case u.Password == "":
			if u.HA1 != "" && !isHex(u.HA1, 32) {
				bad(key+".ha1", "want 32 hex digits: MD5(%q) in hex", name+":"+c.Realm+":password")
			}
			if u.HA1SHA256 != "" && !isHex(u.HA1SHA256, 64) {
				bad(key+".ha1_sha256", "want 64 hex digits: SHA-256(%q) in hex", name+":"+c.Realm+":password")
			}
			if offered[AlgorithmMD5] && u.HA1 == "" {
				bad(key+".ha1", "is empty, and digest_algorithms lists MD5: set ha1 (MD5 of %q) or password", name+":"+c.Realm+":password")
			}
			if offered[AlgorithmSHA256] && u.HA1SHA256 == "" {
				bad(key+".ha1_sha256", "is empty, and digest_algorithms lists SHA-256: set ha1_sha256 (SHA-256 of %q) or password", name+":"+c.Realm+":password")
			}
		}
	}

	if c.OutboundProxy != "" {
		if _, err := parseProxy(c.OutboundProxy); err != nil {
			bad("outbound_proxy", "%q: %v", c.OutboundProxy, err)
		}
	}

	names := map[string]int{}
	usernames := map[string]int{}
	for i, p := range c.TrustedPeers {
		key := fmt.Sprintf("trusted_peers[%d]", i)
		switch j, dup := names[p.Name]; {
		case p.Name == "":
			bad(key+".name", "is empty; name the peer, e.g. pbx")
		case dup:
			bad(key+".name", "%q repeats trusted_peers[%d].name", p.Name, j)
		default:
			names[p.Name] = i
		}
		if len(p.Addresses) == 0 && p.Username == "" {
			bad(key, "set addresses, or username and password: how else would Parley recognise the peer?")
		}
		for j, s := range p.Addresses {
			if _, err := parsePrefix(s); err != nil {
				bad(fmt.Sprintf("%s.addresses[%d]", key, j), "%q is not an IP address or a CIDR prefix", s)
			}
		}
		for j, d := range p.Domains {
			if h, err := canonicalHost(d); err != nil || h != d {
				bad(fmt.Sprintf("%s.domains[%d]", key, j), "%q is not a lowercase domain name or IP address", d)
			}
		}
		switch {
		case p.Username != "" && p.Password == "":
			bad(key+".password", "is empty; set it with username")
		case p.Username == "" && p.Password != "":
			bad(key+".username", "is empty; set it with password")
		case p.Username != "":
			if _, isUser := c.Users[p.Username]; isUser {
				bad(key+".username", "%q is also one of users; a peer needs its own username", p.Username)
			}
			if j, dup := usernames[p.Username]; dup {
				bad(key+".username", "%q repeats trusted_peers[%d].username", p.Username, j)
			}
			usernames[p.Username] = i
			if !printable(p.Username) || strings.ContainsAny(p.Username, `"\`) {
				bad(key+".username", "%q: want printable text without quotes or backslashes", p.Username)
			}
		}
	}

	if c.MaxMessageSize < 0 || c.MaxMessageSize > maxMessageSizeLimit {
		bad("max_message_size", "%d: want a number of bytes from 1 to %d", c.MaxMessageSize, maxMessageSizeLimit)
	}
	if c.RateLimit.PerSecond < 0 {
		bad("rate_limit.per_second", "%g must be positive", c.RateLimit.PerSecond)
	}
	if c.RateLimit.Burst < 0 {
		bad("rate_limit.burst", "%d must be positive", c.RateLimit.Burst)
	}
	if c.OfflineTTL < time.Second {
		bad("offline_ttl", "%s: want a duration of at least 1s, e.g. 24h", c.OfflineTTL)
	}
	minOK := c.MinExpires >= time.Second
	if !minOK {
		bad("min_expires", "%s: want a duration of at least 1s with a unit, e.g. 60s", c.MinExpires)
	}
	switch {
	case c.MaxExpires < time.Second:
		bad("max_expires", "%s: want a duration of at least 1s with a unit, e.g. 3600s", c.MaxExpires)
	case minOK && c.MaxExpires < c.MinExpires:
		bad("max_expires", "%s is less than min_expires (%s)", c.MaxExpires, c.MinExpires)
	case c.MaxExpires > 0xffffffff*time.Second:
		bad("max_expires", "%s is too long for a SIP Expires value", c.MaxExpires)
	}
	if !printable(c.UserAgent) {
		bad("user_agent", "%q: want printable text", c.UserAgent)
	}
	return errors.Join(errs...)
}

// listenSpec is one parsed Config.Listen entry.
type listenSpec struct {
	network string // udp, tcp or tls
	addr    string // host:port
}

func (l listenSpec) String() string { return l.network + ":" + l.addr }

// parseListen parses "transport:host:port".
func parseListen(s string) (listenSpec, error) {
	network, addr, ok := strings.Cut(s, ":")
	if !ok {
		return listenSpec{}, errors.New(`want "transport:host:port", e.g. udp:127.0.0.1:5060`)
	}
	network = strings.ToLower(network)
	switch network {
	case "udp", "tcp", "tls":
	default:
		return listenSpec{}, fmt.Errorf("transport %q: want udp, tcp or tls", network)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return listenSpec{}, fmt.Errorf("want host:port after the transport: %w", err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n > 65535 {
		return listenSpec{}, fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return listenSpec{network: network, addr: addr}, nil
}

// parseProxy parses the outbound proxy URI and returns it with the loose
// routing parameter "lr" (RFC 3261 §16.12.1) that a Route header needs.
func parseProxy(s string) (*sip.Uri, error) {
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil {
		return nil, fmt.Errorf("not a SIP URI: %w", err)
	}
	if u.Scheme != "sip" && u.Scheme != "sips" {
		return nil, errors.New("want a sip: or sips: URI")
	}
	if _, err := canonicalHost(u.Host); err != nil {
		return nil, errors.New("the host is not a domain name or an IP address")
	}
	if u.Port < 0 || u.Port > 65535 {
		return nil, errors.New("the port is not a number from 1 to 65535")
	}
	if t, ok := u.UriParams.Get("transport"); ok {
		switch strings.ToLower(t) {
		case "udp", "tcp", "tls":
		default:
			return nil, fmt.Errorf("transport %q: want udp, tcp or tls", t)
		}
	}
	if u.UriParams == nil {
		u.UriParams = sip.NewParams()
	}
	if !u.UriParams.Has("lr") {
		u.UriParams.Add("lr", "")
	}
	return &u, nil
}

// parsePrefix parses an IP address or a CIDR prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// ha1 returns MD5("user:realm:password") in hex (RFC 2617 §3.2.2.2).
func ha1(user, realm, password string) string {
	sum := md5.Sum([]byte(user + ":" + realm + ":" + password))
	return hex.EncodeToString(sum[:])
}

// isHex reports whether s is n hex digits.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// printable reports whether s has no control characters.
func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
