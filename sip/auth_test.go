package sip

import (
	"strings"
	"testing"
	"time"

	"github.com/icholy/digest"
)

func testSecrets() map[string]digestSecrets {
	return map[string]digestSecrets{
		"alice": newDigestSecrets("alice", "parley.localhost", "secret"),
		"bob":   {md5: strings.ToLower(ha1("bob", "parley.localhost", "hunter2"))}, // configured with an MD5 HA1 only
	}
}

// signWith answers the first challenge of issuer at `at` whose algorithm
// is alg the way a client does, with icholy/digest (what sipgo's client
// uses), after edit.
func signWith(t *testing.T, issuer *digestAuth, at time.Time, alg, method, uri, user, password string, count int, edit func(*digest.Challenge)) digestCredentials {
	t.Helper()
	var chal *digest.Challenge
	for _, v := range issuer.challenges(at, false) {
		c, err := digest.ParseChallenge(v)
		if err != nil {
			t.Fatal(err)
		}
		if c.Algorithm == alg {
			chal = c
			break
		}
	}
	if chal == nil {
		chal, _ = digest.ParseChallenge(issuer.challenges(at, false)[0])
		chal.Algorithm = alg
	}
	if edit != nil {
		edit(chal)
	}
	cred, err := digest.Digest(chal, digest.Options{Method: method, URI: uri, Username: user, Password: password, Count: count})
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseDigestCredentials(cred.String())
	if err != nil {
		t.Fatalf("parse %q: %v", cred.String(), err)
	}
	return c
}

func TestDigestVerify(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	d := newDigestAuth("parley.localhost", nil, testSecrets())
	both := newDigestAuth("parley.localhost", []string{AlgorithmSHA256, AlgorithmMD5}, testSecrets())
	other := newDigestAuth("parley.localhost", nil, nil) // another key: another run

	sign := func(issuer *digestAuth, at time.Time, method, user, password string, edit func(*digest.Challenge)) digestCredentials {
		return signWith(t, issuer, at, "MD5", method, "sip:parley.localhost", user, password, 1, edit)
	}
	sha := func(issuer *digestAuth, user, password string) digestCredentials {
		return signWith(t, issuer, now, "SHA-256", "REGISTER", "sip:parley.localhost", user, password, 1, nil)
	}
	tests := []struct {
		name   string
		d      *digestAuth // d when nil
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
		{name: "expired nonce, wrong password", c: sign(d, now, "REGISTER", "alice", "guess", nil), method: "REGISTER", at: now.Add(nonceTTL + time.Second), user: "alice", want: authFailed},
		{name: "nonce from the future", c: sign(d, now.Add(2*time.Minute), "REGISTER", "alice", "secret", nil), method: "REGISTER", at: now, user: "alice", want: authStale},
		{name: "nonce from another run", c: sign(other, now, "REGISTER", "alice", "secret", nil), method: "REGISTER", at: now, user: "alice", want: authStale},
		{name: "nonce from another run, wrong password", c: sign(other, now, "REGISTER", "alice", "guess", nil), method: "REGISTER", at: now, user: "alice", want: authFailed},
		{name: "without qop (RFC 2069)", c: sign(d, now, "REGISTER", "alice", "secret", func(c *digest.Challenge) { c.QOP = nil }), method: "REGISTER", at: now, user: "alice", want: authOK},
		{name: "SHA-256 not offered", c: sha(d, "alice", "secret"), method: "REGISTER", at: now, user: "alice", want: authFailed},
		{name: "SHA-256", d: both, c: sha(both, "alice", "secret"), method: "REGISTER", at: now, user: "alice", want: authOK},
		{name: "SHA-256, wrong password", d: both, c: sha(both, "alice", "guess"), method: "REGISTER", at: now, user: "alice", want: authFailed},
		{name: "SHA-256, user with an MD5 HA1 only", d: both, c: sha(both, "bob", "hunter2"), method: "REGISTER", at: now, user: "bob", want: authFailed},
		{name: "MD5 beside SHA-256", d: both, c: sign(both, now, "REGISTER", "alice", "secret", nil), method: "REGISTER", at: now, user: "alice", want: authOK},
		{name: "auth-int", c: sign(d, now, "REGISTER", "alice", "secret", func(c *digest.Challenge) { c.QOP = []string{"auth-int"} }), method: "REGISTER", at: now, user: "alice", want: authFailed},
		{name: "another realm", c: sign(d, now, "REGISTER", "alice", "secret", func(c *digest.Challenge) { c.Realm = "pbx.example.org" }), method: "REGISTER", at: now, user: "", want: authNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dd := d
			if tt.d != nil {
				dd = tt.d
			}
			user, got, why := dd.verify(tt.c, tt.method, tt.at)
			if got != tt.want || user != tt.user {
				t.Fatalf("verify = %q, %d (%s); want %q, %d", user, got, why, tt.user, tt.want)
			}
		})
	}

	t.Run("hand-made credentials", func(t *testing.T) {
		nonce := d.nonces.issue(now)
		ha2 := md5Hex("MESSAGE:sip:x@parley.localhost")
		c := digestCredentials{username: "alice", realm: "parley.localhost", nonce: nonce, uri: "sip:x@parley.localhost",
			qop: "auth", nc: "0000000A", cnonce: "abc"}
		// The response hashes nc as written (uppercase here), and may be
		// written in uppercase itself.
		c.response = strings.ToUpper(md5Hex(ha1("alice", "parley.localhost", "secret") + ":" + nonce + ":0000000A:abc:auth:" + ha2))
		if _, got, why := d.verify(c, "MESSAGE", now); got != authOK {
			t.Errorf("verify = %d (%s), want authOK", got, why)
		}
		c.cnonce = ""
		if _, got, _ := d.verify(c, "MESSAGE", now); got != authFailed {
			t.Errorf("qop=auth without cnonce: %d, want authFailed", got)
		}
		if _, got, _ := d.verify(digestCredentials{realm: "parley.localhost"}, "MESSAGE", now); got != authFailed {
			t.Errorf("empty credentials: %d, want authFailed", got)
		}
	})
}

// TestDigestReplay: each nonce count of a nonce is accepted once, in any
// order within the window; a nonce without qop is accepted once; a nonce
// whose slot a newer one took is stale.
func TestDigestReplay(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	d := newDigestAuth("parley.localhost", nil, testSecrets())
	chal, err := digest.ParseChallenge(d.challenges(now, false)[0])
	if err != nil {
		t.Fatal(err)
	}
	withCount := func(nc int) digestCredentials {
		cred, err := digest.Digest(chal, digest.Options{Method: "MESSAGE", URI: "sip:bob@parley.localhost", Username: "alice", Password: "secret", Count: nc})
		if err != nil {
			t.Fatal(err)
		}
		c, err := parseDigestCredentials(cred.String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	steps := []struct {
		nc   int
		want authResult
	}{
		{1, authOK}, {1, authReplayed}, {3, authOK}, {2, authOK}, {2, authReplayed}, {3, authReplayed},
		{100, authOK}, {37, authOK}, {36, authReplayed} /* below the window */, {99, authOK}, {100, authReplayed},
	}
	for _, s := range steps {
		if _, got, why := d.verify(withCount(s.nc), "MESSAGE", now); got != s.want {
			t.Errorf("nc=%d: %d (%s), want %d", s.nc, got, why, s.want)
		}
	}
	if _, got, _ := d.verify(digestCredentials{username: "alice", realm: "parley.localhost", nonce: chal.Nonce, uri: "sip:bob@parley.localhost",
		qop: "auth", nc: "00000000", cnonce: "x", response: "0"}, "MESSAGE", now); got != authFailed {
		t.Errorf("nc=0: %d, want authFailed", got)
	}

	t.Run("one-time nonce without qop", func(t *testing.T) {
		c := signWith(t, d, now, "MD5", "REGISTER", "sip:parley.localhost", "alice", "secret", 1, func(c *digest.Challenge) { c.QOP = nil })
		for i, want := range []authResult{authOK, authReplayed, authReplayed} {
			if _, got, why := d.verify(c, "REGISTER", now); got != want {
				t.Errorf("use %d: %d (%s), want %d", i+1, got, why, want)
			}
		}
	})
	t.Run("forgotten nonce", func(t *testing.T) {
		c := signWith(t, d, now, "MD5", "REGISTER", "sip:parley.localhost", "alice", "secret", 1, nil)
		for range nonceSlots {
			d.nonces.issue(now)
		}
		if _, got, why := d.verify(c, "REGISTER", now); got != authStale {
			t.Errorf("a nonce %d nonces old: %d (%s), want authStale", nonceSlots, got, why)
		}
	})
}

func TestDigestChallenge(t *testing.T) {
	now := time.Now()
	d := newDigestAuth("parley.localhost", []string{AlgorithmSHA256, AlgorithmMD5}, nil)
	cs := d.challenges(now, true)
	if len(cs) != 2 {
		t.Fatalf("challenges = %q, want SHA-256 and MD5", cs)
	}
	var nonces []string
	for i, alg := range []string{"SHA-256", "MD5"} {
		chal, err := digest.ParseChallenge(cs[i])
		if err != nil {
			t.Fatalf("icholy/digest cannot parse %q: %v", cs[i], err)
		}
		if chal.Realm != "parley.localhost" || chal.Algorithm != alg || !chal.SupportsQOP("auth") || !chal.Stale {
			t.Errorf("challenge %d: %+v", i, chal)
		}
		if _, _, ok := d.nonces.open(chal.Nonce); !ok {
			t.Errorf("nonce %q is not one of ours", chal.Nonce)
		}
		nonces = append(nonces, chal.Nonce)
	}
	if nonces[0] != nonces[1] {
		t.Errorf("the challenges have two nonces: %q", nonces)
	}
	if d.challenges(now, false)[0] == cs[0] {
		t.Error("two challenges are equal")
	}
	for _, bad := range []string{"", "x", nonces[0][:20], strings.ToUpper(nonces[0]), nonces[0] + "A", flipFirst(nonces[0])} {
		if _, _, ok := d.nonces.open(bad); ok {
			t.Errorf("open(%q) ok", bad)
		}
	}
}

// flipFirst returns s with its first character changed.
func flipFirst(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
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

// FuzzDigestCredentials checks that parsing and verifying whatever a client
// sends in an Authorization header never panics, and that only a response
// computed with the password is accepted.
func FuzzDigestCredentials(f *testing.F) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	d := newDigestAuth("parley.localhost", []string{AlgorithmSHA256, AlgorithmMD5}, testSecrets())
	nonce := d.nonces.issue(now)
	for _, seed := range []string{
		`Digest username="alice", realm="parley.localhost", nonce="` + nonce + `", uri="sip:parley.localhost", response="0123456789abcdef0123456789abcdef", algorithm=MD5, cnonce="c1", qop=auth, nc=00000001`,
		`Digest username="bob", realm="parley.localhost", nonce="` + nonce + `", uri="sip:parley.localhost", response="00", algorithm=SHA-256`,
		`Digest username="a\"b", realm="parley.localhost", nonce="x", uri="u", response="r", qop=auth, nc=ffffffff, cnonce=""`,
		`digest realm=parley.localhost,nonce=` + nonce + `,username=alice,uri=sip:x,response=1,nc=0000000g,qop=auth,cnonce=x`,
		`Digest username="`, `Digest ,,,`, `Basic x`,
	} {
		f.Add(seed, "MESSAGE")
	}
	f.Fuzz(func(t *testing.T, header, method string) {
		c, err := parseDigestCredentials(header)
		if err != nil {
			return
		}
		if _, res, _ := d.verify(c, method, now); res == authOK || res == authReplayed {
			t.Fatalf("accepted %q", header)
		}
		_, _, _ = d.nonces.open(c.nonce)
	})
}
