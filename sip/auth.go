package sip

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"time"
)

// nonceTTL is how long a nonce stays fresh. A client that uses an older one
// with the right password is challenged again with stale=true, and retries
// without asking its user (RFC 2617 §3.2.1).
const nonceTTL = 5 * time.Minute

// authResult is the outcome of checking digest credentials.
type authResult uint8

const (
	// authNone: the request carries no credentials for our realm.
	authNone authResult = iota
	// authOK: the credentials are valid.
	authOK
	// authStale: the response is right but the nonce is not fresh, or was
	// issued before a restart: challenge again with stale=true.
	authStale
	// authFailed: malformed credentials, an unknown username or a wrong
	// password: challenge again.
	authFailed
)

// digestAuth implements the server side of SIP digest authentication (RFC
// 3261 §22, RFC 2617): MD5 with qop=auth, or without qop for RFC 2069
// clients. Nonces are stateless: a timestamp, random bytes and an HMAC under
// a key drawn at start, so the adapter keeps no per-client state, and a
// nonce from before a restart is answered stale=true.
//
// The nonce count is not tracked, so a captured request can be replayed
// while its nonce is fresh; a replayed MESSAGE has the same Call-ID and CSeq
// and is recognised as a duplicate by the routing core.
type digestAuth struct {
	realm string
	key   []byte
	ttl   time.Duration
	// ha1 maps each username that may authenticate to its HA1 in lowercase
	// hex.
	ha1 map[string]string
}

func newDigestAuth(realm string, ha1 map[string]string) *digestAuth {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails (crypto/rand.Read)
	return &digestAuth{realm: realm, key: key, ttl: nonceTTL, ha1: ha1}
}

// challenge returns the value of a WWW-Authenticate or Proxy-Authenticate
// header with a fresh nonce.
func (d *digestAuth) challenge(now time.Time, stale bool) string {
	var b strings.Builder
	b.WriteString(`Digest realm="`)
	b.WriteString(d.realm)
	b.WriteString(`", nonce="`)
	b.WriteString(d.nonce(now))
	b.WriteString(`", algorithm=MD5, qop="auth"`)
	if stale {
		b.WriteString(", stale=true")
	}
	return b.String()
}

// nonce returns base64url(timestamp ‖ random ‖ HMAC(timestamp ‖ random)).
func (d *digestAuth) nonce(now time.Time) string {
	var raw [32]byte
	binary.BigEndian.PutUint64(raw[:8], uint64(now.UnixNano()))
	_, _ = rand.Read(raw[8:16])
	copy(raw[16:], d.mac(raw[:16]))
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

func (d *digestAuth) mac(b []byte) []byte {
	m := hmac.New(sha256.New, d.key)
	m.Write(b)
	m.Write([]byte(d.realm))
	return m.Sum(nil)[:16]
}

// fresh reports whether nonce is one of ours and younger than the TTL.
func (d *digestAuth) fresh(nonce string, now time.Time) bool {
	raw, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(raw) != 32 {
		return false
	}
	if !hmac.Equal(raw[16:], d.mac(raw[:16])) {
		return false
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(raw[:8])))
	age := now.Sub(issued)
	return age >= -time.Minute && age <= d.ttl
}

// verify checks the credentials c, sent with a request of method, and
// returns the username they authenticate.
func (d *digestAuth) verify(c digestCredentials, method string, now time.Time) (string, authResult) {
	if c.realm != d.realm {
		return "", authNone
	}
	if c.username == "" || c.nonce == "" || c.uri == "" || c.response == "" {
		return c.username, authFailed
	}
	if c.algorithm != "" && !strings.EqualFold(c.algorithm, "MD5") {
		return c.username, authFailed
	}
	ha1, ok := d.ha1[c.username]
	if !ok {
		return c.username, authFailed
	}
	ha2 := md5Hex(method + ":" + c.uri)
	var want string
	switch c.qop {
	case "":
		want = md5Hex(ha1 + ":" + c.nonce + ":" + ha2)
	case "auth":
		if c.cnonce == "" || c.nc == "" {
			return c.username, authFailed
		}
		want = md5Hex(ha1 + ":" + c.nonce + ":" + c.nc + ":" + c.cnonce + ":auth:" + ha2)
	default:
		return c.username, authFailed
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(c.response))) != 1 {
		return c.username, authFailed
	}
	if !d.fresh(c.nonce, now) {
		return c.username, authStale
	}
	return c.username, authOK
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
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
