package sip

import (
	"strings"
	"testing"
	"time"

	"github.com/icholy/digest"
)

func TestDigestVerify(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	d := newDigestAuth("parley.localhost", map[string]string{
		"alice": ha1("alice", "parley.localhost", "secret"),
		"bob":   strings.ToLower(ha1("bob", "parley.localhost", "hunter2")),
	})
	other := newDigestAuth("parley.localhost", nil) // another key: another run

	// sign answers a challenge of d (or of issuer) the way a client does,
	// with icholy/digest (what sipgo's client uses), and edits the result.
	sign := func(issuer *digestAuth, at time.Time, method, user, password string, edit func(*digest.Challenge, *digest.Credentials)) digestCredentials {
		chal, err := digest.ParseChallenge(issuer.challenge(at, false))
		if err != nil {
			t.Fatal(err)
		}
		var dummy digest.Credentials
		if edit != nil {
			edit(chal, &dummy)
		}
		cred, err := digest.Digest(chal, digest.Options{Method: method, URI: "sip:parley.localhost", Username: user, Password: password, Count: 1})
		if err != nil {
			t.Fatal(err)
		}
		c, err := parseDigestCredentials(cred.String())
		if err != nil {
			t.Fatalf("parse %q: %v", cred.String(), err)
		}
		return c
	}
	tests := []struct {
		name   string
		c      digestCredentials
		method string
		at     time.Time
		user   string
		want   authResult
	}{
		{name: "right password", c: sign(d, now, "REGISTER", "alice", "secret", nil), method: "REGISTER", at: now, user: "alice", want: authOK},
		{name: "HA1 user", c: sign(d, now, "MESSAGE", "bob", "hunter2", nil), method: "MESSAGE", at: now, user: "bob", want: authOK},
		{name: "wrong password", c: sign(d, now, "REGISTER", "alice", "guess", nil), method: "REGISTER", at: now, user: "alice", want: authFailed},
		{name: "unknown user", c: sign(d, now, "REGISTER", "carol", "secret", nil), method: "REGISTER", at: now, user: "carol", want: authFailed},
		{name: "other method", c: sign(d, now, "REGISTER", "alice", "secret", nil), method: "MESSAGE", at: now, user: "alice", want: authFailed},
		{name: "nonce about to expire", c: sign(d, now, "REGISTER", "alice", "secret", nil), method: "REGISTER", at: now.Add(nonceTTL), user: "alice", want: authOK},
		{name: "expired nonce", c: sign(d, now, "REGISTER", "alice", "secret", nil), method: "REGISTER", at: now.Add(nonceTTL + time.Second), user: "alice", want: authStale},
		{name: "nonce from the future", c: sign(d, now.Add(2*time.Minute), "REGISTER", "alice", "secret", nil), method: "REGISTER", at: now, user: "alice", want: authStale},
		{name: "nonce from another run", c: sign(other, now, "REGISTER", "alice", "secret", nil), method: "REGISTER", at: now, user: "alice", want: authStale},
		{name: "nonce from another run, wrong password", c: sign(other, now, "REGISTER", "alice", "guess", nil), method: "REGISTER", at: now, user: "alice", want: authFailed},
		{name: "without qop (RFC 2069)", c: sign(d, now, "REGISTER", "alice", "secret", func(c *digest.Challenge, _ *digest.Credentials) { c.QOP = nil }), method: "REGISTER", at: now, user: "alice", want: authOK},
		{name: "SHA-256", c: sign(d, now, "REGISTER", "alice", "secret", func(c *digest.Challenge, _ *digest.Credentials) { c.Algorithm = "SHA-256" }), method: "REGISTER", at: now, user: "alice", want: authFailed},
		{name: "auth-int", c: sign(d, now, "REGISTER", "alice", "secret", func(c *digest.Challenge, _ *digest.Credentials) { c.QOP = []string{"auth-int"} }), method: "REGISTER", at: now, user: "alice", want: authFailed},
		{name: "another realm", c: sign(d, now, "REGISTER", "alice", "secret", func(c *digest.Challenge, _ *digest.Credentials) { c.Realm = "pbx.example.org" }), method: "REGISTER", at: now, user: "", want: authNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, got := d.verify(tt.c, tt.method, tt.at)
			if got != tt.want || user != tt.user {
				t.Fatalf("verify = %q, %d; want %q, %d", user, got, tt.user, tt.want)
			}
		})
	}

	t.Run("hand-made credentials", func(t *testing.T) {
		nonce := d.nonce(now)
		ha2 := md5Hex("MESSAGE:sip:x@parley.localhost")
		c := digestCredentials{username: "alice", realm: "parley.localhost", nonce: nonce, uri: "sip:x@parley.localhost",
			qop: "auth", nc: "0000000A", cnonce: "abc"}
		// The response hashes nc as written (uppercase here), and may be
		// written in uppercase itself.
		c.response = strings.ToUpper(md5Hex(ha1("alice", "parley.localhost", "secret") + ":" + nonce + ":0000000A:abc:auth:" + ha2))
		if _, got := d.verify(c, "MESSAGE", now); got != authOK {
			t.Errorf("verify = %d, want authOK", got)
		}
		c.cnonce = ""
		if _, got := d.verify(c, "MESSAGE", now); got != authFailed {
			t.Errorf("qop=auth without cnonce: %d, want authFailed", got)
		}
		if _, got := d.verify(digestCredentials{realm: "parley.localhost"}, "MESSAGE", now); got != authFailed {
			t.Errorf("empty credentials: %d, want authFailed", got)
		}
	})
}

func TestDigestChallenge(t *testing.T) {
	now := time.Now()
	d := newDigestAuth("parley.localhost", nil)
	c := d.challenge(now, true)
	chal, err := digest.ParseChallenge(c)
	if err != nil {
		t.Fatalf("icholy/digest cannot parse %q: %v", c, err)
	}
	if chal.Realm != "parley.localhost" || chal.Algorithm != "MD5" || !chal.SupportsQOP("auth") || !chal.Stale {
		t.Errorf("challenge %+v", chal)
	}
	if !d.fresh(chal.Nonce, now) {
		t.Error("a new nonce is not fresh")
	}
	if d.nonce(now) == chal.Nonce {
		t.Error("two nonces are equal")
	}
	for _, bad := range []string{"", "x", chal.Nonce[:20], strings.ToUpper(chal.Nonce), chal.Nonce + "A"} {
		if d.fresh(bad, now) {
			t.Errorf("fresh(%q)", bad)
		}
	}
}

func TestParseDigestCredentials(t *testing.T) {
	tests := []struct {
		in      string
		want    digestCredentials
		wantErr bool
	}{
		{
			in: `Digest username="alice", realm="parley.localhost", nonce="n1", uri="sip:parley.localhost", response="abc", algorithm=MD5, cnonce="c1", qop=auth, nc=00000001, opaque="o"`,
			want: digestCredentials{username: "alice", realm: "parley.localhost", nonce: "n1", uri: "sip:parley.localhost", response: "abc",
				algorithm: "MD5", cnonce: "c1", qop: "auth", nc: "00000001", opaque: "o"},
		},
		{
			in:   "digest  username = \"a\\\"b, c\" ,realm=\"r\",\tqop=\"AUTH\" , unknown=x",
			want: digestCredentials{username: `a"b, c`, realm: "r", qop: "auth"},
		},
		{in: `Basic YWxpY2U6c2VjcmV0`, wantErr: true},
		{in: `Digest`, wantErr: true},
		{in: `Digestusername="a"`, wantErr: true},
		{in: `Digest username="a`, wantErr: true},
		{in: `Digest username="a", username="b"`, wantErr: true},
		{in: `Digest username`, wantErr: true},
		{in: `Digest username=`, wantErr: true},
		{in: `Digest username="a" realm="b"`, wantErr: true},
		{in: `Digest user name="a"`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseDigestCredentials(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parse = %+v, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parse = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
