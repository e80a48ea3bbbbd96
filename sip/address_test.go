package sip

import (
	"strings"
	"testing"

	"github.com/parleygw/parley/mapping"
)

// An adapter does not import mapping; the test checks the contract.
var _ mapping.Codec = AddressCodec{}

func TestAddressCodecSplit(t *testing.T) {
	tests := []struct {
		id, user, host string
		wantErr        bool
	}{
		{id: "sip:alice@example.org", user: "alice", host: "example.org"},
		{id: "sip:Alice@example.org", user: "Alice", host: "example.org"}, // user parts are case-sensitive
		{id: "sip:1001@192.0.2.1", user: "1001", host: "192.0.2.1"},
		{id: "sip:+4930123456@pbx.example.org", user: "+4930123456", host: "pbx.example.org"},
		{id: "sip:alice%20smith@example.org", user: "alice smith", host: "example.org"},
		{id: "sip:a%40b@example.org", user: "a@b", host: "example.org"},
		{id: "sip:%C3%A9lodie@example.org", user: "élodie", host: "example.org"},
		{id: "sip:a%3Bb%3Fc@example.org", user: "a;b?c", host: "example.org"},
		{id: "sip:alice=40example.org+xmpp@parley.localhost", user: "alice=40example.org+xmpp", host: "parley.localhost"},
		{id: "sip:o'hara-(x)_y.z!~*&$,/@example.org", user: "o'hara-(x)_y.z!~*&$,/", host: "example.org"},
		{id: "sip:bob@[2001:db8::1]", user: "bob", host: "[2001:db8::1]"},
		{id: "sip:alice@Example.org", wantErr: true},               // host not lowercase
		{id: "SIP:alice@example.org", wantErr: true},               // scheme not lowercase
		{id: "sips:alice@example.org", wantErr: true},              // sips: is stored as sip:
		{id: "sip:alice@example.org:5060", wantErr: true},          // port
		{id: "sip:alice@example.org;transport=tcp", wantErr: true}, // parameters
		{id: "sip:alice@example.org?subject=x", wantErr: true},     // headers
		{id: "sip:alice:secret@example.org", wantErr: true},        // password
		{id: "sip:alice%2dx@example.org", wantErr: true},           // lowercase escape
		{id: "sip:alice%2Dx@example.org", wantErr: true},           // escaped safe byte
		{id: "sip:alice%2@example.org", wantErr: true},             // truncated escape
		{id: "sip:a b@example.org", wantErr: true},
		{id: "sip:a;b@example.org", wantErr: true},
		{id: "sip:%00@example.org", wantErr: true},
		{id: "sip:%FF@example.org", wantErr: true}, // not UTF-8
		{id: "sip:@example.org", wantErr: true},
		{id: "sip:example.org", wantErr: true},
		{id: "sip:alice@", wantErr: true},
		{id: "sip:a@b@example.org", wantErr: true},
		{id: "sip:alice@exa_mple.org", wantErr: true},
		{id: "sip:alice@-example.org", wantErr: true},
		{id: "sip:alice@example.123", wantErr: true},
		{id: "sip:bob@[2001:DB8::1]", wantErr: true},
		{id: "sip:bob@2001:db8::1", wantErr: true},
		{id: "sip:bob@[2001:db8:0::1]", wantErr: true},
		{id: "alice@example.org", wantErr: true},
		{id: "tel:+4930123456", wantErr: true},
		{id: "", wantErr: true},
		{id: "sip:" + strings.Repeat("a", maxUserLen+1) + "@example.org", wantErr: true},
	}
	var c AddressCodec
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			user, host, err := c.Split(tt.id)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Split(%q) = %q, %q, nil; want an error", tt.id, user, host)
				}
				return
			}
			if err != nil || user != tt.user || host != tt.host {
				t.Fatalf("Split(%q) = %q, %q, %v; want %q, %q, nil", tt.id, user, host, err, tt.user, tt.host)
			}
		})
	}
}

func TestAddressCodecJoin(t *testing.T) {
	tests := []struct {
		user, host, want string
		wantErr          bool
	}{
		{user: "alice", host: "example.org", want: "sip:alice@example.org"},
		{user: "Alice", host: "EXAMPLE.org", want: "sip:Alice@example.org"},
		{user: "alice smith", host: "example.org", want: "sip:alice%20smith@example.org"},
		{user: "a@b:c;d?e%f", host: "example.org", want: "sip:a%40b%3Ac%3Bd%3Fe%25f@example.org"},
		{user: "élodie", host: "example.org", want: "sip:%C3%A9lodie@example.org"},
		{user: "bob", host: "2001:DB8::1", want: "sip:bob@[2001:db8::1]"},
		{user: "bob", host: "[2001:db8:0::1]", want: "sip:bob@[2001:db8::1]"},
		{user: "bob", host: "192.0.2.1", want: "sip:bob@192.0.2.1"},
		{user: "", host: "example.org", wantErr: true},
		{user: "alice", host: "", wantErr: true},
		{user: "a\nb", host: "example.org", wantErr: true},
		{user: "\xff", host: "example.org", wantErr: true},
		{user: "alice", host: "exa mple.org", wantErr: true},
		{user: "alice", host: "example.org:5060", wantErr: true},
		{user: "alice", host: "[::1", wantErr: true},
		{user: "alice", host: "1.2.3.4.5", wantErr: true},
		{user: "alice", host: strings.Repeat("a.", 127) + "org", wantErr: true},
	}
	var c AddressCodec
	for _, tt := range tests {
		t.Run(tt.user+"@"+tt.host, func(t *testing.T) {
			got, err := c.Join(tt.user, tt.host)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Join(%q, %q) = %q, nil; want an error", tt.user, tt.host, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Join(%q, %q) = %q, %v; want %q, nil", tt.user, tt.host, got, err, tt.want)
			}
		})
	}
}

func TestAddressCodecParse(t *testing.T) {
	tests := []struct {
		uri, want string
		wantErr   bool
	}{
		{uri: "sip:alice@example.org", want: "sip:alice@example.org"},
		{uri: "SIPS:Alice@Example.ORG:5061;transport=tls?subject=hi", want: "sip:Alice@example.org"},
		{uri: "sip:alice:secret@example.org", want: "sip:alice@example.org"},
		{uri: "sip:alice%2dsmith@example.org", want: "sip:alice-smith@example.org"},
		{uri: "sip:alice%2Dsmith@example.org", want: "sip:alice-smith@example.org"},
		{uri: "sip:+49 30@example.org;user=phone", want: "sip:+49%2030@example.org"},
		{uri: "sip:a;b@example.org", want: "sip:a%3Bb@example.org"},
		{uri: "sip:bob@[2001:DB8:0::1]:5060", want: "sip:bob@[2001:db8::1]"},
		{uri: "tel:+4930123456", wantErr: true},
		{uri: "sip:example.org", wantErr: true},
		{uri: "sip:alice@", wantErr: true},
		{uri: "sip:alice@example.org:port", wantErr: true},
		{uri: "sip:%zz@example.org", wantErr: true},
		{uri: "", wantErr: true},
	}
	var c AddressCodec
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			got, err := c.Parse(tt.uri)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Parse(%q) = %q, nil; want an error", tt.uri, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %q, %v; want %q", tt.uri, got, err, tt.want)
			}
		})
	}
}

// FuzzAddress checks the codec's round trips: whatever Split accepts, Join
// rebuilds exactly; whatever Join builds, Split takes apart into the same
// user and host; whatever Parse returns is canonical.
func FuzzAddress(f *testing.F) {
	for _, s := range []string{
		"sip:alice@example.org", "sip:alice%20smith@example.org", "sip:%C3%A9lodie@example.org",
		"sip:bob@[2001:db8::1]", "sip:1001@192.0.2.1", "sip:a%3Bb@x.y", "SIPS:A@B.C:5061;x=y",
		"sip:alice=40example.org+xmpp@parley.localhost", "sip:a%2@b", "sip:@", "tel:+1",
	} {
		f.Add(s, "user", "Example.ORG")
	}
	f.Add("", "a b@c", "::1")
	f.Add("", "é", "[::ffff:1.2.3.4]")
	var c AddressCodec
	f.Fuzz(func(t *testing.T, id, user, host string) {
		if u, h, err := c.Split(id); err == nil {
			back, err := c.Join(u, h)
			if err != nil || back != id {
				t.Fatalf("Join(Split(%q)) = %q, %v", id, back, err)
			}
		}
		if j, err := c.Join(user, host); err == nil {
			u, h, err := c.Split(j)
			if err != nil || u != user {
				t.Fatalf("Split(Join(%q, %q)) = %q, %q, %v (id %q)", user, host, u, h, err, j)
			}
			canon, _ := canonicalHost(host)
			if h != canon {
				t.Fatalf("Split(Join(%q, %q)) host %q, want %q", user, host, h, canon)
			}
		}
		if p, err := c.Parse(id); err == nil {
			if _, _, err := c.Split(p); err != nil {
				t.Fatalf("Parse(%q) = %q, not canonical: %v", id, p, err)
			}
			if again, err := c.Parse(p); err != nil || again != p {
				t.Fatalf("Parse(Parse(%q)) = %q, %v; want %q", id, again, err, p)
			}
		}
	})
}
