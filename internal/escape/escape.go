// Package escape is the reversible encoding of the parts of an address that
// Parley writes into an address of another network (a ghost's, a MUC
// served as a Matrix alias, a Matrix alias that names a MUC): the YAML's
// ghost templates and the adapters share it.
package escape

import "strings"

// Introducer is the escape introducer. Escaped values contain only
// [a-z0-9.-] and '=', so a template separator that uses any other character
// can never occur inside a value: that is what makes templates reversible.
const Introducer = '='

const hexDigits = "0123456789abcdef"

// Plain reports whether c stands for itself in an encoded value.
func Plain(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-'
}

// Encode encodes s so that it uses only [a-z0-9.-=]: every other byte becomes
// '=' followed by two lowercase hex digits ("Bob_1" → "=42ob=5f1").
func Encode(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !Plain(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if Plain(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte(Introducer)
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xf])
	}
	return b.String()
}

// Decode reverses Encode. It returns false for input Escape cannot produce
// (a byte outside the alphabet, a bad or non-canonical escape), so that every
// ghost address has exactly one meaning.
func Decode(s string) (string, bool) {
	if strings.IndexByte(s, Introducer) < 0 {
		for i := 0; i < len(s); i++ {
			if !Plain(s[i]) {
				return "", false
			}
		}
		return s, true
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case Plain(c):
			b = append(b, c)
		case c == Introducer && i+2 < len(s):
			hi, lo := unhex(s[i+1]), unhex(s[i+2])
			if hi < 0 || lo < 0 {
				return "", false
			}
			v := byte(hi<<4 | lo)
			if Plain(v) {
				return "", false // canonical form never escapes a plain byte
			}
			b = append(b, v)
			i += 2
		default:
			return "", false
		}
	}
	return string(b), true
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}
