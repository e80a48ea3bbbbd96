package matrix

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"
)

// Config is the `matrix:` section of Parley's configuration.
type Config struct {
	// HomeserverURL is the client-server API base URL of the homeserver,
	// e.g. http://127.0.0.1:8008.
	HomeserverURL string `yaml:"homeserver_url"`
	// ServerName is the homeserver's server name, the part after the colon
	// in its user IDs (e.g. "example.org").
	ServerName string `yaml:"server_name"`
	// Listen is the host:port where Parley serves the application service
	// API for the homeserver, e.g. 127.0.0.1:29328.
	Listen string `yaml:"listen"`
	// URL is the URL the homeserver uses to reach Listen; it goes into the
	// registration file. Default: "http://" + Listen, which is right only
	// when the homeserver runs on the same host and Listen names an address
	// it can connect to (set it for a sidecar or a wildcard Listen).
	URL string `yaml:"url"`
	// ID is the registration ID. Default: "parley".
	ID string `yaml:"id"`
	// ASToken authenticates Parley to the homeserver; HSToken authenticates
	// the homeserver to Parley. Both go into the registration file.
	ASToken string `yaml:"as_token"`
	HSToken string `yaml:"hs_token"`
	// BotLocalpart is the localpart of the appservice's own user (the
	// registration's sender_localpart). Default: "parley".
	BotLocalpart string `yaml:"bot_localpart"`
	// PresencePollInterval says whether and how often the adapter reads the
	// presence of the Matrix users who have a DM with a ghost
	// (GET /presence/{userId}/status), for homeservers that do not push it
	// to appservices (presence.go says which):
	//   - "auto" (the default): every 30 s, until the homeserver pushes a
	//     first m.presence ephemeral event; from then on pushes only
	//     (Synapse pushes, Dendrite 0.15 never does);
	//   - a duration ("10s", "1m", at least 1s): always at that interval,
	//     besides pushes;
	//   - "off" (or "0"): never.
	PresencePollInterval string `yaml:"presence_poll_interval"`
	// Namespaces are regular expressions of the user IDs Parley owns
	// exclusively (its ghosts), e.g. `@_xmpp_.*:example\.org`. They are not
	// read from YAML: cmd derives them from the ghost templates. A user ID
	// is Parley's when one of them matches the whole ID.
	Namespaces []string `yaml:"-"`
}

// Defaults of the optional fields.
const (
	DefaultID                   = "parley"
	DefaultBotLocalpart         = "parley"
	DefaultPresencePollInterval = "auto"
)

// Presence polling: the interval of "auto", and the shortest explicit one.
const (
	autoPollInterval = 30 * time.Second
	minPollInterval  = time.Second
)

// withDefaults returns c with the defaults of empty optional fields filled in.
func (c Config) withDefaults() Config {
	if c.ID == "" {
		c.ID = DefaultID
	}
	if c.BotLocalpart == "" {
		c.BotLocalpart = DefaultBotLocalpart
	}
	if c.URL == "" && c.Listen != "" {
		c.URL = "http://" + c.Listen
	}
	if c.PresencePollInterval == "" {
		c.PresencePollInterval = DefaultPresencePollInterval
	}
	return c
}

// presencePoll reads PresencePollInterval (after defaults): every is 0 when
// polling is off; auto says polling stops once the homeserver pushes
// presence.
func (c Config) presencePoll() (every time.Duration, auto bool, err error) {
	switch v := strings.TrimSpace(c.PresencePollInterval); v {
	case "auto":
		return autoPollInterval, true, nil
	case "off", "0":
		return 0, false, nil
	default:
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			return 0, false, fmt.Errorf("%q is not auto, off or a duration", c.PresencePollInterval)
		case d == 0:
			return 0, false, nil
		case d < minPollInterval:
			return 0, false, fmt.Errorf("%s is shorter than %s (use off to turn polling off)", d, minPollInterval)
		}
		return d, false, nil
	}
}

// Validate reports every problem of c (after defaults), one line each,
// prefixed with the YAML key ("matrix.hs_token: must be set").
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("matrix.%s: %s", key, fmt.Sprintf(format, args...)))
	}

	if c.HomeserverURL == "" {
		bad("homeserver_url", "must be set")
	} else if err := checkHTTPURL(c.HomeserverURL); err != nil {
		bad("homeserver_url", "%v", err)
	}

	serverOK := false
	switch {
	case c.ServerName == "":
		bad("server_name", "must be set")
	case !id.ValidateServerName(c.ServerName):
		bad("server_name", "%q is not a valid server name", c.ServerName)
	default:
		serverOK = true
	}

	if c.Listen == "" {
		bad("listen", "must be set")
	} else if err := checkHostPort(c.Listen); err != nil {
		bad("listen", "%v", err)
	}
	if c.URL != "" {
		if err := checkHTTPURL(c.URL); err != nil {
			bad("url", "%v", err)
		}
	}

	if strings.TrimSpace(c.ID) != c.ID {
		bad("id", "must not have surrounding spaces")
	}

	checkToken := func(key, tok string) bool {
		switch {
		case tok == "":
			bad(key, "must be set")
		case strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			bad(key, "must not contain spaces or control characters")
		default:
			return true
		}
		return false
	}
	asOK := checkToken("as_token", c.ASToken)
	hsOK := checkToken("hs_token", c.HSToken)
	if asOK && hsOK && c.ASToken == c.HSToken {
		bad("hs_token", "must differ from as_token")
	}

	if err := id.ValidateUserLocalpart(c.BotLocalpart); err != nil {
		bad("bot_localpart", "%q is not a valid user ID localpart (allowed: a-z 0-9 . _ = - / +)", c.BotLocalpart)
	} else if serverOK && len(botID(c)) > id.UserIDMaxLength {
		bad("bot_localpart", "user ID %s is longer than %d bytes", botID(c), id.UserIDMaxLength)
	}

	if _, _, err := c.presencePoll(); err != nil {
		bad("presence_poll_interval", "%v", err)
	}

	for i, ns := range c.Namespaces {
		if ns == "" {
			bad(fmt.Sprintf("namespaces[%d]", i), "must not be empty")
		} else if _, err := regexp.Compile(ns); err != nil {
			bad(fmt.Sprintf("namespaces[%d]", i), "invalid regular expression: %v", err)
		}
	}
	return errors.Join(errs...)
}

// botID is the user ID of the appservice's own user.
func botID(c Config) id.UserID {
	return id.NewUserID(c.BotLocalpart, c.ServerName)
}

// compileNamespaces compiles the namespaces anchored at both ends, the way
// Parley matches them (a homeserver may match prefixes only; the regexps cmd
// writes are meant as whole-ID patterns).
func compileNamespaces(nss []string) ([]*regexp.Regexp, error) {
	res := make([]*regexp.Regexp, 0, len(nss))
	for i, ns := range nss {
		re, err := regexp.Compile(`^(?:` + ns + `)$`)
		if err != nil {
			return nil, fmt.Errorf("matrix.namespaces[%d]: invalid regular expression: %w", i, err)
		}
		res = append(res, re)
	}
	return res, nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return fmt.Errorf("%q: host missing", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q: must not have a query or fragment", s)
	}
	return nil
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: port must be a number from 1 to 65535", s)
	}
	return nil
}
