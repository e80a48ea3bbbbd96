package sip

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// nonceTTL is how long a nonce stays fresh. A client that uses an older one
// with the right password is challenged again with stale=true, and retries
// without asking its user (RFC 2617 §3.2.1).
const nonceTTL = 5 * time.Minute

// Digest algorithms (RFC 8760 §2): the names Parley offers and accepts.
const (
	AlgorithmMD5    = "MD5"
	AlgorithmSHA256 = "SHA-256"
)

// authResult is the outcome of checking digest credentials.
type authResult uint8

const (
	// authNone: the request carries no credentials for our realm.
	authNone authResult = iota
	// authOK: the credentials are valid, and used for the first time.
	authOK
	// authStale: the response is right but the nonce is not fresh, was
	// issued before a restart or is no longer remembered: challenge again
	// with stale=true.
	authStale
	// authReplayed: the response is right but its nonce count (or its
	// one-time nonce) was used before: a replay, or a client that
	// repeats itself. Challenge again with stale=true.
	authReplayed
	// authFailed: malformed credentials, an unknown username or a wrong
	// password: challenge again.
	authFailed
)

// digestSecrets are the HA1 values of one username, in lowercase hex, per
// algorithm: H(username ":" realm ":" password) with MD5 and with SHA-256.
// A value is empty when it cannot be known (an account configured with the
// HA1 of the other algorithm only).
type digestSecrets struct {
	md5, sha256 string
}

// newDigestSecrets returns the secrets of user for password in realm.
func newDigestSecrets(user, realm, password string) digestSecrets {
	return digestSecrets{md5: ha1(user, realm, password), sha256: ha1SHA256(user, realm, password)}
}

// digestAuth implements the server side of SIP digest authentication (RFC
// 3261 §22, RFC 2617, RFC 8760): MD5 and SHA-256, with qop=auth, or without
// qop for RFC 2069 clients. Nonces come from a nonceTable: each nonce count
// (or, without qop, each nonce) is accepted once, so captured credentials
// cannot be replayed, and a nonce from before a restart, or one no longer
// remembered, is answered stale=true. Safe for concurrent use.
type digestAuth struct {
	realm string
	ttl   time.Duration
	// algorithms are offered in this order (most preferred first), one
	// challenge each, all with the same nonce.
	algorithms []string
	// secrets maps each username that may authenticate to its HA1s.
	secrets map[string]digestSecrets
	// unknown stands in for the secrets of a username that does not
	// exist, so that it costs the same work as a wrong password.
	unknown digestSecrets
	nonces  *nonceTable
}

// newDigestAuth returns the digest authentication of realm for the users of
// secrets, offering algorithms (MD5 when empty).
func newDigestAuth(realm string, algorithms []string, secrets map[string]digestSecrets) *digestAuth {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails (crypto/rand.Read)
	if len(algorithms) == 0 {
		algorithms = []string{AlgorithmMD5}
	}
	var junk [32]byte
	_, _ = rand.Read(junk[:])
	return &digestAuth{realm: realm, ttl: nonceTTL, algorithms: algorithms, secrets: secrets,
		unknown: digestSecrets{md5: hex.EncodeToString(junk[:16]), sha256: hex.EncodeToString(junk[:])},
		nonces:  newNonceTable(key, realm)}
}

// challenges returns the values of the WWW-Authenticate or
// Proxy-Authenticate headers of a challenge: one per algorithm, most
// preferred first (RFC 8760 §2.4), with one fresh nonce.
func (d *digestAuth) challenges(now time.Time, stale bool) []string {
	nonce := d.nonces.issue(now)
	out := make([]string, len(d.algorithms))
	for i, alg := range d.algorithms {
		var b strings.Builder
		b.WriteString(`Digest realm="`)
		b.WriteString(d.realm)
		b.WriteString(`", nonce="`)
		b.WriteString(nonce)
		b.WriteString(`", algorithm=`)
		b.WriteString(alg)
		b.WriteString(`, qop="auth"`)
		if stale {
			b.WriteString(", stale=true")
		}
		out[i] = b.String()
	}
	return out
}

// offers reports whether alg (as a client wrote it, "" for MD5) is one of
// the algorithms offered, and returns its canonical name.
func (d *digestAuth) offers(alg string) (string, bool) {
	if alg == "" {
		alg = AlgorithmMD5
	}
	for _, a := range d.algorithms {
		if strings.EqualFold(a, alg) {
			return a, true
		}
	}
	return "", false
}

// verify checks the credentials c, sent with a request of method, and
// returns the username they authenticate, the result and, when it is not
// authOK, why (for the log: it may tell an unknown user from a wrong
// password, the response never does). A right response spends its nonce
// count: the same credentials are authReplayed the next time.
func (d *digestAuth) verify(c digestCredentials, method string, now time.Time) (username string, res authResult, why string) {
	if c.realm != d.realm {
		return "", authNone, "another realm"
	}
	if c.username == "" || c.nonce == "" || c.uri == "" || c.response == "" {
		return c.username, authFailed, "incomplete credentials"
	}
	alg, ok := d.offers(c.algorithm)
	if !ok {
		return c.username, authFailed, "algorithm not offered"
	}
	secrets, known := d.secrets[c.username]
	if !known {
		secrets = d.unknown
	}
	hash, ha1 := md5Hex, secrets.md5
	if alg == AlgorithmSHA256 {
		hash, ha1 = sha256Hex, secrets.sha256
	}
	if ha1 == "" {
		known, ha1 = false, d.unknown.md5
	}
	ha2 := hash(method + ":" + c.uri)
	var want string
	var nc uint32
	switch c.qop {
	case "":
		want = hash(ha1 + ":" + c.nonce + ":" + ha2)
	case "auth":
		n, err := strconv.ParseUint(c.nc, 16, 32)
		if c.cnonce == "" || len(c.nc) != 8 || err != nil || n == 0 {
			return c.username, authFailed, "qop=auth without cnonce or a valid nc"
		}
		nc = uint32(n)
		want = hash(ha1 + ":" + c.nonce + ":" + c.nc + ":" + c.cnonce + ":auth:" + ha2)
	default:
		return c.username, authFailed, "qop not offered"
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(c.response))) != 1 || !known {
		if !known {
			return c.username, authFailed, "unknown user"
		}
		return c.username, authFailed, "wrong password"
	}
	id, issued, ok := d.nonces.open(c.nonce)
	if !ok {
		return c.username, authStale, "nonce not issued by this run"
	}
	if age := now.Sub(issued); age < -time.Minute || age > d.ttl {
		return c.username, authStale, "nonce expired"
	}
	switch d.nonces.use(id, nc) {
	case nonceForgotten:
		return c.username, authStale, "nonce no longer remembered"
	case nonceReplayed:
		return c.username, authReplayed, "nonce count used before"
	}
	return c.username, authOK, ""
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// ha1SHA256 returns SHA-256("user:realm:password") in hex (RFC 8760 §3,
// RFC 7616 §3.4.2).
func ha1SHA256(user, realm, password string) string {
	return sha256Hex(user + ":" + realm + ":" + password)
}

// authenticate checks the digest credentials c of req at now, and returns
// the username they authenticate, or the reply to answer req with: a
// challenge (again, with stale=true when the password was right but the
// nonce was stale or its count spent), or 400 when the digest uri is not the
// Request-URI. It also applies the back-off after repeated failures
// (authBackoff): credentials of a backed-off username or source are not
// checked and get the same challenge as a wrong password, whether the user
// exists or not. Failures are logged at info with the source address and
// the username, for fail2ban (docs/fail2ban.md): source comes first, before
// anything the client chose, and the filter there relies on it.
func (a *Adapter) authenticate(req *sip.Request, c digestCredentials, now time.Time) (string, *reply) {
	src := sourceIP(req)
	if blocked, until := a.authBackoff.blocked(c.username, src, now); blocked {
		a.log.Debug("sip authentication refused during back-off", "source", src, "user", c.username,
			"method", string(req.Method), "until", until)
		return "", a.challenge(req, false, now)
	}
	if !a.digestURIMatches(c.uri, req) {
		a.log.Info("sip authentication failed", "source", src, "user", c.username, "method", string(req.Method),
			"reason", "digest uri is not the request-uri", "uri", c.uri)
		return "", newReply(400, "Bad Request (Digest URI Does Not Match Request-URI)")
	}
	username, res, why := a.auth.verify(c, string(req.Method), now)
	switch res {
	case authOK:
		a.authBackoff.succeed(username, src, now)
		return username, nil
	case authStale:
		a.log.Debug("sip authentication stale", "source", src, "user", username, "method", string(req.Method), "reason", why)
		return "", a.challenge(req, true, now)
	case authReplayed:
		a.log.Info("sip authentication replayed", "source", src, "user", username, "method", string(req.Method), "reason", why)
		return "", a.challenge(req, true, now)
	case authNone, authFailed:
	}
	a.log.Info("sip authentication failed", "source", src, "user", c.username, "method", string(req.Method), "reason", why)
	if d := a.authBackoff.fail(c.username, src, now); d > 0 {
		a.log.Info("sip authentication backed off", "source", src, "user", c.username, "for", d)
	}
	return "", a.challenge(req, false, now)
}

// digestURIMatches reports whether uri, the digest-uri of credentials sent
// with req, names what req is for (RFC 2617 §3.2.2.5): the Request-URI
// (scheme, user, host and port compared; parameters ignored), or, without a
// user part, this server itself: its domain or realm, or an IP address with
// a port it listens on (sipp puts the address it sends to there). Nonce
// counts already keep credentials from being used twice; this keeps them
// from being moved to another request.
func (a *Adapter) digestURIMatches(uri string, req *sip.Request) bool {
	var u sip.Uri
	if err := sip.ParseUri(uri, &u); err != nil {
		return false
	}
	r := req.Recipient
	if !strings.EqualFold(u.Scheme, r.Scheme) {
		return false
	}
	if u.User == r.User && strings.EqualFold(u.Host, r.Host) && uriPort(u) == uriPort(r) {
		return true
	}
	if u.User != "" {
		return false
	}
	host := strings.ToLower(u.Host)
	if host == a.domain || host == strings.ToLower(a.auth.realm) {
		return true
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err != nil {
		return false
	}
	return a.listensOn(uriPort(u))
}

// listensOn reports whether one of the adapter's listeners is bound to
// port.
func (a *Adapter) listensOn(port int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, addr := range a.bound {
		switch addr := addr.(type) {
		case *net.UDPAddr:
			if addr.Port == port {
				return true
			}
		case *net.TCPAddr:
			if addr.Port == port {
				return true
			}
		}
	}
	return false
}

// uriPort returns the port of u, or the default port of its scheme.
func uriPort(u sip.Uri) int {
	switch {
	case u.Port != 0:
		return u.Port
	case strings.EqualFold(u.Scheme, "sips"):
		return 5061
	default:
		return 5060
	}
}

// challenge answers req with a digest challenge, one header per algorithm
// offered: 401 and WWW-Authenticate for REGISTER, 407 and
// Proxy-Authenticate otherwise (RFC 3261 §22.1, §22.3).
func (a *Adapter) challenge(req *sip.Request, stale bool, now time.Time) *reply {
	name, r := "Proxy-Authenticate", newReply(407, "Proxy Authentication Required")
	if req.Method == sip.REGISTER {
		name, r = "WWW-Authenticate", newReply(401, "Unauthorized")
	}
	for _, v := range a.auth.challenges(now, stale) {
		r.headers = append(r.headers, sip.NewHeader(name, v))
	}
	return r
}

// digestCredentials are the parameters of an Authorization or
// Proxy-Authorization header with the Digest scheme. nc is kept as written:
// the response hashes its text.
type digestCredentials struct {
	username, realm, nonce, uri, response string
	algorithm, cnonce, nc, qop, opaque    string
}

var errNotDigest = errors.New("not Digest credentials")

// parseDigestCredentials parses `Digest name=value, name="quoted", ...`
// (RFC 2617 §3.2.2, RFC 3261 §25.1 digest-response). Unknown parameters are
// ignored; a repeated one is an error.
func parseDigestCredentials(s string) (digestCredentials, error) {
	var c digestCredentials
	s = strings.TrimLeft(s, " \t")
	if len(s) < 7 || !strings.EqualFold(s[:6], "digest") || (s[6] != ' ' && s[6] != '\t') {
		return c, errNotDigest
	}
	s = s[7:]
	seen := map[string]bool{}
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return c, errors.New("digest parameter without a value")
		}
		name := strings.ToLower(strings.TrimRight(s[:eq], " \t"))
		if !isToken(name) {
			return c, errors.New("malformed digest parameter name")
		}
		s = strings.TrimLeft(s[eq+1:], " \t")
		var value string
		if strings.HasPrefix(s, `"`) {
			v, rest, err := unquote(s)
			if err != nil {
				return c, err
			}
			value, s = v, rest
		} else {
			end := strings.IndexAny(s, ", \t")
			if end < 0 {
				end = len(s)
			}
			value, s = s[:end], s[end:]
			if value == "" {
				return c, errors.New("empty digest parameter value")
			}
		}
		if seen[name] {
			return c, errors.New("repeated digest parameter " + name)
		}
		seen[name] = true
		switch name {
		case "username":
			c.username = value
		case "realm":
			c.realm = value
		case "nonce":
			c.nonce = value
		case "uri":
			c.uri = value
		case "response":
			c.response = value
		case "algorithm":
			c.algorithm = value
		case "cnonce":
			c.cnonce = value
		case "nc":
			c.nc = value
		case "qop":
			c.qop = strings.ToLower(value)
		case "opaque":
			c.opaque = value
		}
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		if s[0] != ',' {
			return c, errors.New("digest parameters not separated by commas")
		}
		s = s[1:]
	}
	return c, nil
}

// unquote reads a quoted-string at the start of s (RFC 3261 §25.1) and
// returns its content, quoted-pairs resolved, and what follows it.
func unquote(s string) (value, rest string, err error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), s[i+1:], nil
		case '\\':
			if i+1 == len(s) {
				return "", "", errors.New("unterminated quoted string")
			}
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return "", "", errors.New("unterminated quoted string")
}

// isToken reports whether s is a non-empty RFC 3261 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-.!%*_+`'~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
