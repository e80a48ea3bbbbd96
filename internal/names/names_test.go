package names

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClean(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Alice", "Alice"},
		{"  Alice \t  B.  ", "Alice B."},
		{"\u202eXA XMPP\u0007\u200f", "XA XMPP"},
		{"a\u200db", "ab"},
		{"\xffbad\xfe", "bad"},
		{"\u0000\u202e", ""},
		{"مريم", "مريم"},
		{"👩‍💻 dev", "👩💻 dev"},
		{strings.Repeat("Ω", 300), strings.Repeat("Ω", 64)},
	} {
		if got := Clean(tc.in, 64); got != tc.want {
			t.Errorf("Clean(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"Alice", "\u202eXA\u0007", "a\u200db", "\xff", strings.Repeat("ж", 70), " x  y "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Clean(s, 64)
		if !utf8.ValidString(got) || utf8.RuneCountInString(got) > 64 || got != strings.TrimSpace(got) || Clean(got, 64) != got {
			t.Fatalf("Clean(%q) = %q", s, got)
		}
	})
}
