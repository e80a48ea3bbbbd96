package escape

import "testing"

func FuzzEncode(f *testing.F) {
	for _, s := range []string{"", "alice", "Bob_1", "=", "=41", "a%b", "\x00\xff", "ü@x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := Encode(s)
		got, ok := Decode(e)
		if !ok || got != s {
			t.Fatalf("Decode(Encode(%q)) = %q, %v", s, got, ok)
		}
		// Any string Decode accepts must be canonical: escaping its
		// meaning gives it back, so an address has one spelling only.
		if v, ok := Decode(s); ok && Encode(v) != s {
			t.Fatalf("Decode accepted non-canonical %q", s)
		}
	})
}
