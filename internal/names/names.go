// Package names makes the names people choose safe to show on another
// network: a display name, a nick or a ghost's name there.
package names

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean returns name as another network may show it: control characters,
// bidirectional and other formatting characters (a right-to-left override
// that turns a name around, a zero-width joiner) and invalid UTF-8 removed,
// runs of spaces made one space, trimmed, and at most max characters. It
// returns "" when nothing is left.
func Clean(name string, max int) string {
	var b strings.Builder
	space := false
	for _, r := range name {
		switch {
		case r == utf8.RuneError, unicode.Is(unicode.Bidi_Control, r), unicode.IsControl(r) && !unicode.IsSpace(r),
			unicode.Is(unicode.Cf, r):
			continue
		case unicode.IsSpace(r):
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(Truncate(b.String(), max))
}

// Truncate returns the first n characters of s.
func Truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}
