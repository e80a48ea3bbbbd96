package xmpp

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmpp/jid"
)

// DefaultGatewayType is the XEP-0030 gateway identity type the component
// advertises when Config.GatewayType is empty.
const DefaultGatewayType = "matrix"

// Config is the `xmpp:` section of Parley's configuration file: how to reach
// the XMPP server as an XEP-0114 external component, and whom to serve.
//
// Secret arrives resolved: the configuration layer reads it from the
// environment or a file before the adapter sees it.
type Config struct {
	// Server is the host:port of the server's component listener, e.g.
	// "127.0.0.1:5347" (Prosody's component_ports).
	Server string `yaml:"server"`
	// Domain is the component's domain, e.g. "matrix.localhost"; every ghost
	// JID Parley serves on XMPP is under it.
	Domain string `yaml:"domain"`
	// Secret is the shared secret of the component (Prosody's
	// component_secret).
	Secret string `yaml:"secret"`
	// ServerDomains lists the XMPP server's own domains, e.g. ["localhost"].
	// Only their users may use the gateway: stanzas from any other domain
	// are refused.
	ServerDomains []string `yaml:"server_domains"`
	// GatewayType is the type of the XEP-0030 "gateway" identity the
	// component advertises; DefaultGatewayType when empty.
	GatewayType string `yaml:"gateway_type"`
	// SelfPing is how long a portal room may stay silent before Parley's
	// occupants there check that they are still in it (XEP-0410);
	// DefaultSelfPing when zero. The check runs every fifth of it.
	SelfPing time.Duration `yaml:"self_ping"`
}

// DefaultSelfPing is the SelfPing of a Config that sets none.
const DefaultSelfPing = 5 * time.Minute

// selfPing returns the configured SelfPing, or its default.
func (c Config) selfPing() time.Duration {
	if c.SelfPing <= 0 {
		return DefaultSelfPing
	}
	return c.SelfPing
}

// Validate checks c and reports every problem it finds, each prefixed with
// its key (e.g. "xmpp.domain: ..."). It does no I/O.
func (c Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("xmpp."+key+": "+format, args...))
	}

	if c.Server == "" {
		add("server", "is empty; want the host:port of the server's component listener, e.g. 127.0.0.1:5347")
	} else if err := checkHostPort(c.Server); err != nil {
		add("server", "%q: %v", c.Server, err)
	}

	domain, err := parseDomain(c.Domain)
	switch {
	case c.Domain == "":
		add("domain", "is empty; want the component's domain, e.g. matrix.localhost")
	case err != nil:
		add("domain", "%q: %v", c.Domain, err)
	}

	if c.Secret == "" {
		add("secret", "is empty; want the component secret configured on the XMPP server")
	}

	if len(c.ServerDomains) == 0 {
		add("server_domains", "is empty; want the XMPP server's own domains whose users may use the gateway, e.g. [localhost]")
	}
	seen := make(map[string]int, len(c.ServerDomains))
	for i, s := range c.ServerDomains {
		d, err := parseDomain(s)
		switch {
		case s == "":
			add(fmt.Sprintf("server_domains[%d]", i), "is empty")
		case err != nil:
			add(fmt.Sprintf("server_domains[%d]", i), "%q: %v", s, err)
		case domain != "" && d == domain:
			add(fmt.Sprintf("server_domains[%d]", i), "%q is the component domain itself; want the server's domains", s)
		default:
			if j, dup := seen[d]; dup {
				add(fmt.Sprintf("server_domains[%d]", i), "%q repeats server_domains[%d]", s, j)
			}
			seen[d] = i
		}
	}

	if c.SelfPing < 0 || (c.SelfPing > 0 && c.SelfPing < time.Second) {
		add("self_ping", "%s: want a duration of a second or more, e.g. 5m", c.SelfPing)
	}
	if c.GatewayType != "" && !validGatewayType(c.GatewayType) {
		add("gateway_type", "%q: want lowercase letters, digits and '-' (an XEP-0030 identity type such as matrix)", c.GatewayType)
	}
	return errors.Join(errs...)
}

// gatewayType returns the identity type to advertise.
func (c Config) gatewayType() string {
	if c.GatewayType == "" {
		return DefaultGatewayType
	}
	return c.GatewayType
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if host == "" {
		return errors.New("host is empty")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

// parseDomain checks that s is a JID domainpart alone and returns its
// normalised form.
func parseDomain(s string) (string, error) {
	if s == "" {
		return "", errors.New("is empty")
	}
	j, err := jid.Parse(s)
	if err != nil {
		return "", fmt.Errorf("not a valid domain: %w", err)
	}
	if j.Localpart() != "" || j.Resourcepart() != "" {
		return "", errors.New("want a bare domain, without user@ or /resource")
	}
	return j.Domainpart(), nil
}

func validGatewayType(s string) bool {
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
}
