package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/matrix"
	"github.com/parleygw/parley/sip"
	"github.com/parleygw/parley/xmpp"
)

// Config is Parley's whole configuration file.
type Config struct {
	// Store is where Parley keeps its outbox and links: a SQLite file path
	// (default "parley.db") or a postgres:// DSN.
	Store string `yaml:"store"`
	// Log sets the level ("debug", "info", "warn", "error") and format
	// ("text" or "json") of Parley's log on standard error.
	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
	// Admin is the listener for /healthz, /readyz and /metrics; "" turns it
	// off. Pprof adds Go's profiler under /debug/pprof/ (off by default:
	// anyone who reaches the listener could read the heap).
	Admin struct {
		Listen string `yaml:"listen"`
		Pprof  bool   `yaml:"pprof"`
	} `yaml:"admin"`
	// ShutdownTimeout bounds how long SIGTERM waits for queued events to be
	// delivered before Parley exits (what remains stays in the outbox).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	XMPP    *xmpp.Config   `yaml:"xmpp"`
	Matrix  *matrix.Config `yaml:"matrix"`
	SIP     *sip.Config    `yaml:"sip"`
	Calls   *CallsConfig   `yaml:"calls"`
	Mapping mapping.Config `yaml:"mapping"`
}

// secretRef matches the indirect forms a secret may take: "env:NAME" reads
// the environment variable NAME, "file:/path" reads a file (trailing newline
// trimmed).
var secretRef = regexp.MustCompile(`^(env|file):(.+)$`)

// readConfig reads, strictly decodes and validates the file at path. Every
// error names the file, the line and the key. A secret it cannot resolve is
// an error (running the gateway needs them all), unless deferSecrets: then
// it checks the file without the secrets it reads from the environment or
// from files, and an unresolved secret becomes a warning (file:line, key,
// variable and what the secret is for) and a stand-in value, so that
// everything else is still validated. check-config uses that: the secrets
// come with the deployment.
func readConfig(path string, deferSecrets bool) (*Config, []string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("read config: %w (name the file with -config FILE or $PARLEY_CONFIG; config.example.yaml is an annotated start)", err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	return parseConfig(path, data, deferSecrets)
}

func parseConfig(path string, data []byte, deferSecrets bool) (*Config, []string, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(root.Content) == 0 {
		return nil, nil, fmt.Errorf("%s: the file is empty", path)
	}
	lines := map[string]int{}
	if err := checkKeys(path, root.Content[0], reflect.TypeFor[Config](), "", lines); err != nil {
		return nil, nil, err
	}
	cfg := &Config{Store: "parley.db", ShutdownTimeout: 10 * time.Second}
	cfg.Log.Level, cfg.Log.Format = "info", "text"
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return nil, nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var errs []error
	var warnings []string
	resolve := func(key, purpose string, v *string) {
		s, err := resolveSecret(*v)
		switch {
		case err == nil:
			*v = s
		case deferSecrets:
			warnings = append(warnings, at(path, lines, fmt.Sprintf("warning: %s: %v; parley run needs it: %s", key, err, purpose)))
			*v = standIn(*v)
		default:
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			*v = ""
		}
	}
	resolve("store", "the SQLite file or PostgreSQL DSN of the store", &cfg.Store)
	if cfg.XMPP != nil {
		resolve("xmpp.secret", "the component secret, the same as component_secret on the XMPP server", &cfg.XMPP.Secret)
	}
	if cfg.Matrix != nil {
		resolve("matrix.as_token", "Parley's token towards the homeserver, any long random string; gen-registration writes it into the registration", &cfg.Matrix.ASToken)
		resolve("matrix.hs_token", "the homeserver's token towards Parley, another long random string; gen-registration writes it into the registration", &cfg.Matrix.HSToken)
	}
	if cfg.SIP != nil {
		for _, name := range sortedKeys(cfg.SIP.Users) {
			u := cfg.SIP.Users[name]
			resolve("sip.users."+name+".password", "the digest password of SIP user "+name, &u.Password)
			resolve("sip.users."+name+".ha1", "the digest hash of SIP user "+name+", MD5 of user:realm:password in hex", &u.HA1)
			resolve("sip.users."+name+".ha1_sha256", "the SHA-256 digest hash of SIP user "+name+", SHA-256 of user:realm:password in hex", &u.HA1SHA256)
			cfg.SIP.Users[name] = u
		}
		for i := range cfg.SIP.TrustedPeers {
			resolve(fmt.Sprintf("sip.trusted_peers[%d].password", i), "the digest password of trusted peer "+cfg.SIP.TrustedPeers[i].Name, &cfg.SIP.TrustedPeers[i].Password)
		}
	}
	if cfg.Calls != nil {
		for i := range cfg.Calls.ICEServers {
			resolve(fmt.Sprintf("calls.ice_servers[%d].credential", i), "the TURN server's credential", &cfg.Calls.ICEServers[i].Credential)
		}
	}
	errs = append(errs, cfg.validate())
	if err := errors.Join(errs...); err != nil {
		return nil, nil, locate(path, err, lines)
	}
	return cfg, warnings, nil
}

// standIn replaces an unresolved secret reference while check-config
// validates the rest: 32 hex digits (valid wherever a secret is, an ha1
// included) derived from the reference, so two keys that read the same
// variable still compare equal.
func standIn(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return hex.EncodeToString(sum[:16])
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func resolveSecret(v string) (string, error) {
	m := secretRef.FindStringSubmatch(v)
	if m == nil {
		return v, nil
	}
	switch m[1] {
	case "env":
		s, ok := os.LookupEnv(m[2])
		if !ok || s == "" {
			return "", fmt.Errorf("environment variable %s is not set", m[2])
		}
		return s, nil
	default:
		b, err := os.ReadFile(m[2])
		if err != nil {
			return "", fmt.Errorf("read secret: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
}

func (c *Config) validate() error {
	var errs []error
	enabled := 0
	if c.XMPP != nil {
		enabled++
		errs = append(errs, c.XMPP.Validate())
	}
	if c.Matrix != nil {
		enabled++
		errs = append(errs, c.Matrix.Validate())
	}
	if c.SIP != nil {
		enabled++
		errs = append(errs, c.SIP.Validate())
	}
	if enabled == 0 {
		errs = append(errs, errors.New("no network is enabled: add an xmpp, matrix or sip section"))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is not text or json", c.Log.Format))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown_timeout: %s must be positive", c.ShutdownTimeout))
	}
	if c.Calls != nil {
		errs = append(errs, c.Calls.validate())
	}
	errs = append(errs, c.Mapping.Validate())
	errs = append(errs, c.validatePortalSIP()...)
	return errors.Join(errs...)
}

// validatePortalSIP checks the SIP side of the portals against the sip
// section: a portal's SIP address is an address of Parley's own domain
// that is not a user who registers, and its phones are SIP addresses of
// record in their canonical form.
func (c *Config) validatePortalSIP() []error {
	var errs []error
	codec := sip.AddressCodec{}
	for i, p := range c.Mapping.Portals {
		if p.SIP == "" {
			continue
		}
		key := fmt.Sprintf("mapping.portals[%d].sip", i)
		if c.SIP == nil {
			errs = append(errs, fmt.Errorf("%s: the sip section is missing: a portal's SIP address is one of Parley's SIP domain", key))
			continue
		}
		user, host, err := codec.Split(p.SIP)
		_, isUser := c.SIP.Users[user]
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		case host != strings.ToLower(c.SIP.Domain):
			errs = append(errs, fmt.Errorf("%s: %s is not in Parley's SIP domain %s (sip.domain)", key, p.SIP, c.SIP.Domain))
		case isUser:
			errs = append(errs, fmt.Errorf("%s: %s is a SIP user (sip.users.%s), not a room", key, p.SIP, user))
		}
		for j, phone := range p.Phones {
			if _, _, err := codec.Split(phone); err != nil {
				errs = append(errs, fmt.Errorf("mapping.portals[%d].phones[%d]: %w", i, j, err))
			}
		}
	}
	return errs
}

// checkKeys walks the YAML tree beside the Go type it decodes into and
// reports the first key the type does not have, with its line, its path and
// the keys that would be valid there. It records the line of every key path
// in lines, so that validation errors can point at the file too.
func checkKeys(file string, n *yaml.Node, t reflect.Type, path string, lines map[string]int) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.MappingNode:
		switch t.Kind() {
		case reflect.Struct:
			fields := yamlFields(t)
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				key := join(path, k.Value)
				lines[key] = k.Line
				ft, ok := fields[k.Value]
				if !ok {
					return fmt.Errorf("%s:%d: unknown key %q%s%s", file, k.Line, k.Value, in(path), suggest(k.Value, fields))
				}
				if err := checkKeys(file, v, ft, key, lines); err != nil {
					return err
				}
			}
		case reflect.Map:
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := join(path, n.Content[i].Value)
				lines[key] = n.Content[i].Line
				if err := checkKeys(file, n.Content[i+1], t.Elem(), key, lines); err != nil {
					return err
				}
			}
		}
	case yaml.SequenceNode:
		if t.Kind() == reflect.Slice {
			for i, item := range n.Content {
				key := fmt.Sprintf("%s[%d]", path, i)
				lines[key] = item.Line
				if err := checkKeys(file, item, t.Elem(), key, lines); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func in(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

// suggest names the closest valid key, or lists them all.
func suggest(key string, fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	best, bestDist := "", 3
	for name := range fields {
		names = append(names, name)
		if d := distance(key, name); d < bestDist {
			best, bestDist = name, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	sort.Strings(names)
	return fmt.Sprintf(" (known keys: %s)", strings.Join(names, ", "))
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// locate prefixes each validation error with file:line, found from the key
// path the error starts with ("xmpp.domain: ...").
func locate(file string, err error, lines map[string]int) error {
	var msgs []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		msgs = append(msgs, at(file, lines, err.Error()))
	}
	walk(err)
	return errors.New(strings.Join(msgs, "\n"))
}

// at prefixes msg with file:line, the line of the key path msg starts with
// ("xmpp.domain: ..." or "warning: xmpp.domain: ..."), or of its nearest
// parent; with file alone when no key of the path is in the file.
func at(file string, lines map[string]int, msg string) string {
	key, _, _ := strings.Cut(strings.TrimPrefix(msg, "warning: "), ":")
	for k := key; k != ""; k = parent(k) {
		if line, ok := lines[k]; ok {
			return fmt.Sprintf("%s:%d: %s", file, line, msg)
		}
	}
	return fmt.Sprintf("%s: %s", file, msg)
}

// parent drops the last element of a key path: "a.b[2]" → "a.b" → "a".
func parent(k string) string {
	if i := strings.LastIndexAny(k, ".["); i > 0 {
		return k[:i]
	}
	return ""
}
