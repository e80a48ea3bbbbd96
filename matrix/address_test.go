package matrix

import (
	"strings"
	"testing"

	"github.com/parleygw/parley/mapping"
)

var _ mapping.Codec = AddressCodec{}

func TestAddressCodecSplit(t *testing.T) {
	tests := []struct {
		name, in     string
		user, server string
		wantErr      bool
	}{
		{name: "plain", in: "@alice:example.org", user: "alice", server: "example.org"},
		{name: "ghost", in: "@_xmpp_bob=40example.org:localhost", user: "_xmpp_bob=40example.org", server: "localhost"},
		{name: "all grammar chars", in: "@a.b_c=d-e/f+g9:example.org", user: "a.b_c=d-e/f+g9", server: "example.org"},
		{name: "port", in: "@alice:example.org:8448", user: "alice", server: "example.org:8448"},
		{name: "ipv4", in: "@alice:127.0.0.1:8008", user: "alice", server: "127.0.0.1:8008"},
		{name: "ipv6", in: "@alice:[::1]:8448", user: "alice", server: "[::1]:8448"},
		{name: "historical upper case", in: "@Alice:example.org", user: "Alice", server: "example.org"},
		{name: "historical punctuation", in: "@a!b#c$~:example.org", user: "a!b#c$~", server: "example.org"},
		{name: "no sigil", in: "alice:example.org", wantErr: true},
		{name: "room id", in: "!room:example.org", wantErr: true},
		{name: "no server", in: "@alice", wantErr: true},
		{name: "empty server", in: "@alice:", wantErr: true},
		{name: "empty localpart", in: "@:example.org", wantErr: true},
		{name: "space in localpart", in: "@al ice:example.org", wantErr: true},
		{name: "non-ascii localpart", in: "@alicé:example.org", wantErr: true},
		{name: "control char", in: "@al\x00ice:example.org", wantErr: true},
		{name: "bad server", in: "@alice:exa mple.org", wantErr: true},
		{name: "server with path", in: "@alice:example.org/x", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "too long", in: "@" + strings.Repeat("a", 250) + ":example.org", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, server, err := AddressCodec{}.Split(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Split(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if user != tt.user || server != tt.server {
				t.Errorf("Split(%q) = %q, %q; want %q, %q", tt.in, user, server, tt.user, tt.server)
			}
		})
	}
}

func TestAddressCodecJoin(t *testing.T) {
	tests := []struct {
		name, user, server string
		want               string
		wantErr            bool
	}{
		{name: "plain", user: "alice", server: "example.org", want: "@alice:example.org"},
		{name: "ghost", user: "_xmpp_bob=40example.org", server: "localhost", want: "@_xmpp_bob=40example.org:localhost"},
		{name: "grammar chars", user: "a.b_c=d-e/f+g9", server: "example.org:8448", want: "@a.b_c=d-e/f+g9:example.org:8448"},
		{name: "upper case", user: "Alice", server: "example.org", wantErr: true},
		{name: "historical punctuation", user: "a!b", server: "example.org", wantErr: true},
		{name: "colon", user: "a:b", server: "example.org", wantErr: true},
		{name: "at", user: "a@b", server: "example.org", wantErr: true},
		{name: "empty user", user: "", server: "example.org", wantErr: true},
		{name: "empty server", user: "alice", server: "", wantErr: true},
		{name: "bad server", user: "alice", server: "ex ample", wantErr: true},
		{name: "too long", user: strings.Repeat("a", 250), server: "example.org", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AddressCodec{}.Join(tt.user, tt.server)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Join(%q, %q) error = %v, wantErr %v", tt.user, tt.server, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Join(%q, %q) = %q, want %q", tt.user, tt.server, got, tt.want)
			}
			if err == nil {
				u, s, err := AddressCodec{}.Split(got)
				if err != nil || u != tt.user || s != tt.server {
					t.Errorf("Split(Join()) = %q, %q, %v", u, s, err)
				}
			}
		})
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{"@alice:example.org", "@a:[::1]:80", "@:x", "@Al!ce:1.2.3.4", "alice", "@a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		user, server, err := AddressCodec{}.Split(in)
		if err != nil {
			return
		}
		if got := "@" + user + ":" + server; got != in {
			t.Errorf("Split(%q) = %q, %q: does not rebuild the input", in, user, server)
		}
		if joined, err := (AddressCodec{}).Join(user, server); err == nil && joined != in {
			t.Errorf("Join(Split(%q)) = %q", in, joined)
		}
	})
}
