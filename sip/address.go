package sip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"
)

// Limits of the addresses the codec accepts.
const (
	// maxUserLen bounds the user part, unescaped, in bytes.
	maxUserLen = 256
	// maxHostLen bounds a domain name (RFC 1035 §2.3.4).
	maxHostLen = 253
)

// AddressCodec splits and builds the IDs of Parley's SIP addresses: SIP URIs
// of an address of record in the canonical form "sip:user@host". It
// implements mapping.Codec (checked in the tests: an adapter does not import
// mapping). The zero value is ready to use.
//
// The canonical form is what Join writes and the only form Split accepts:
//   - the scheme is "sip" (a "sips:" AOR names the same user and is stored
//     as "sip:");
//   - the user part is not empty; the bytes outside RFC 3261's unreserved
//     and user-unreserved sets, less ';' and '?' (letters, digits and
//     -_.!~*'()&=+$,/), are percent-escaped with uppercase hex digits, and
//     nothing else is escaped;
//   - the host is a lowercase domain name, a dotted IPv4 address or a
//     bracketed IPv6 address in its RFC 5952 form;
//   - there is no display name, password, port, URI parameter or header.
//
// Split and Join work on the unescaped user ("alice smith", not
// "alice%20smith"), so that a user part round-trips through the identity
// mapping's own escaping. A ghost template for SIP must therefore not use '%'
// as its separator. Parse turns whatever URI a SIP peer writes into the
// canonical form.
type AddressCodec struct{}

var (
	errNotSIPURI = errors.New(`not a SIP URI in the canonical form "sip:user@host"`)
	errEmptyUser = errors.New("the user part is empty")
	errUserBytes = errors.New("the user part is not UTF-8 text without control characters")
	errUserLong  = fmt.Errorf("the user part is longer than %d bytes", maxUserLen)
	errEscape    = errors.New("the user part has a malformed or non-canonical %-escape")
	errHost      = errors.New("the host is not a domain name or an IP address")
)

// Split returns the user part, unescaped, and the host of id, which must be
// in the canonical form (see AddressCodec). "sip:alice%20smith@example.org"
// gives "alice smith", "example.org".
func (AddressCodec) Split(id string) (user, host string, err error) {
	rest, ok := strings.CutPrefix(id, "sip:")
	if !ok {
		return "", "", fmt.Errorf("split SIP URI %q: %w", id, errNotSIPURI)
	}
	escaped, host, ok := strings.Cut(rest, "@")
	if !ok {
		return "", "", fmt.Errorf("split SIP URI %q: %w", id, errNotSIPURI)
	}
	user, err = unescapeUser(escaped, true)
	if err != nil {
		return "", "", fmt.Errorf("split SIP URI %q: %w", id, err)
	}
	canon, err := canonicalHost(host)
	if err != nil || canon != host {
		return "", "", fmt.Errorf("split SIP URI %q: %w", id, errHost)
	}
	return user, host, nil
}

// Join builds the canonical "sip:user@host" from an unescaped user part and
// a host, escaping the user and lowercasing the host. It fails when user is
// empty, longer than 256 bytes, not UTF-8 or holds control characters, or
// when host is not a domain name or an IP address.
func (AddressCodec) Join(user, host string) (string, error) {
	if err := checkUser(user); err != nil {
		return "", fmt.Errorf("build SIP URI from %q: %w", user, err)
	}
	h, err := canonicalHost(host)
	if err != nil {
		return "", fmt.Errorf("build SIP URI with host %q: %w", host, err)
	}
	return "sip:" + escapeUser(user) + "@" + h, nil
}

// Parse normalises a SIP or SIPS URI as peers write it (any case in the
// scheme and host, lowercase escapes, a password, a port, parameters,
// headers) into the canonical form of its address of record:
// "SIPS:Alice%2dB@Example.ORG:5061;transport=tls" gives
// "sip:Alice-B@example.org". A URI of another scheme, without a user part or
// without a host is an error.
func (AddressCodec) Parse(uri string) (string, error) {
	var u sip.Uri
	if err := sip.ParseUri(uri, &u); err != nil {
		return "", fmt.Errorf("parse SIP URI %q: %w", uri, err)
	}
	aor, _, err := aorOf(&u)
	if err != nil {
		return "", fmt.Errorf("parse SIP URI %q: %w", uri, err)
	}
	return aor, nil
}

// aorOf returns the canonical address of record of u and its unescaped user
// part. Only sip and sips URIs with a user part have one.
func aorOf(u *sip.Uri) (aor, user string, err error) {
	if u.Scheme != "sip" && u.Scheme != "sips" {
		return "", "", fmt.Errorf("scheme %q: want sip or sips", u.Scheme)
	}
	user, err = unescapeUser(u.User, false)
	if err != nil {
		return "", "", err
	}
	aor, err = AddressCodec{}.Join(user, u.Host)
	if err != nil {
		return "", "", err
	}
	return aor, user, nil
}

// userSafe reports whether c may appear unescaped in a canonical user part:
// RFC 3261 §25.1 unreserved and user-unreserved characters, less ';' and
// '?', which many parsers take for the start of parameters.
func userSafe(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-_.!~*'()&=+$,/", c) >= 0
}

const upperHex = "0123456789ABCDEF"

// escapeUser percent-escapes every byte of user that is not userSafe.
func escapeUser(user string) string {
	var b strings.Builder
	b.Grow(len(user))
	for i := 0; i < len(user); i++ {
		c := user[i]
		if userSafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&0xf])
	}
	return b.String()
}

// unescapeUser decodes the %-escapes of a user part. When strict, the input
// must be canonical: only unsafe bytes escaped, uppercase hex digits. When
// not strict, any escape is decoded, and a raw byte is accepted if it could
// be written in a SIP URI at all (the sipgo parser already split the URI).
// The result must pass checkUser.
func unescapeUser(s string, strict bool) (string, error) {
	if s == "" {
		return "", errEmptyUser
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			if strict && !userSafe(c) {
				return "", errEscape
			}
			b = append(b, c)
			continue
		}
		if i+2 >= len(s) {
			return "", errEscape
		}
		hi, lo := unhex(s[i+1], strict), unhex(s[i+2], strict)
		if hi < 0 || lo < 0 {
			return "", errEscape
		}
		v := byte(hi<<4 | lo)
		if strict && userSafe(v) {
			return "", errEscape
		}
		b = append(b, v)
		i += 2
	}
	user := string(b)
	if err := checkUser(user); err != nil {
		return "", err
	}
	return user, nil
}

func unhex(c byte, upperOnly bool) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	case !upperOnly && c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}

// checkUser checks an unescaped user part.
func checkUser(user string) error {
	switch {
	case user == "":
		return errEmptyUser
	case len(user) > maxUserLen:
		return errUserLong
	case !utf8.ValidString(user):
		return errUserBytes
	}
	for _, r := range user {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return errUserBytes
		}
	}
	return nil
}

// canonicalHost returns the canonical form of a host: a lowercase domain
// name, a dotted IPv4 address, or a bracketed IPv6 address in RFC 5952 form
// (brackets optional on input).
func canonicalHost(h string) (string, error) {
	if h == "" {
		return "", errHost
	}
	if strings.HasPrefix(h, "[") || strings.Contains(h, ":") {
		inner := h
		if strings.HasPrefix(h, "[") {
			if len(h) < 2 || !strings.HasSuffix(h, "]") {
				return "", errHost
			}
			inner = h[1 : len(h)-1]
		}
		ip, err := netip.ParseAddr(inner)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", errHost
		}
		return "[" + ip.String() + "]", nil
	}
	h = strings.ToLower(h)
	// An IPv4 literal starts and ends with a digit; ParseAddr's error is
	// costly for the common case of a name.
	if isDigit(h[0]) && isDigit(h[len(h)-1]) {
		if ip, err := netip.ParseAddr(h); err == nil {
			if !ip.Is4() {
				return "", errHost
			}
			return ip.String(), nil
		}
	}
	if !validDomain(h) {
		return "", errHost
	}
	return h, nil
}

// validDomain reports whether h is a lowercase domain name: dot-separated
// labels of letters, digits and '-' not starting or ending with '-', the
// last one not all digits (that would be a malformed IPv4 address).
func validDomain(h string) bool {
	if len(h) > maxHostLen {
		return false
	}
	var last string
	for rest := h; ; {
		l, more, found := strings.Cut(rest, ".")
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
		if !found {
			last = l
			break
		}
		rest = more
	}
	return strings.Trim(last, "0123456789") != ""
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
