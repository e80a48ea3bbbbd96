package xmpp

import (
	"testing"

	"github.com/parleygw/parley/mapping"
)

// An adapter does not import mapping; the test checks the contract.
var _ mapping.Codec = AddressCodec{}

func TestAddressCodecSplit(t *testing.T) {
	tests := []struct {
		id, user, domain string
		wantErr          bool
	}{
		{id: "alice@example.org", user: "alice", domain: "example.org"},
		{id: "Alice@Example.ORG", user: "alice", domain: "example.org"},
		{id: "bob%matrix.org@matrix.localhost", user: "bob%matrix.org", domain: "matrix.localhost"},
		{id: "example.org", user: "", domain: "example.org"},
		{id: "élodie@exämple.org", user: "élodie", domain: "exämple.org"},
		{id: "alice@example.org/phone", wantErr: true},
		{id: "", wantErr: true},
		{id: "@example.org", wantErr: true},
		{id: "alice@", wantErr: true},
		{id: "a b@example.org", wantErr: true},
	}
	var c AddressCodec
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			user, domain, err := c.Split(tt.id)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Split(%q) = %q, %q, nil; want an error", tt.id, user, domain)
				}
				return
			}
			if err != nil || user != tt.user || domain != tt.domain {
				t.Fatalf("Split(%q) = %q, %q, %v; want %q, %q, nil", tt.id, user, domain, err, tt.user, tt.domain)
			}
		})
	}
}

func TestAddressCodecJoin(t *testing.T) {
	tests := []struct {
		user, domain, want string
		wantErr            bool
	}{
		{user: "alice", domain: "example.org", want: "alice@example.org"},
		{user: "Alice", domain: "EXAMPLE.org", want: "alice@example.org"},
		{user: "bob%matrix.org", domain: "matrix.localhost", want: "bob%matrix.org@matrix.localhost"},
		{user: "", domain: "example.org", want: "example.org"},
		{user: "alice", domain: "", wantErr: true},
		{user: "a@b", domain: "example.org", wantErr: true},
		{user: "a/b", domain: "example.org", wantErr: true},
		{user: "a b", domain: "example.org", wantErr: true},
		{user: "alice", domain: "exa mple.org", wantErr: true},
	}
	var c AddressCodec
	for _, tt := range tests {
		t.Run(tt.user+"@"+tt.domain, func(t *testing.T) {
			got, err := c.Join(tt.user, tt.domain)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Join(%q, %q) = %q, nil; want an error", tt.user, tt.domain, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Join(%q, %q) = %q, %v; want %q, nil", tt.user, tt.domain, got, err, tt.want)
			}
		})
	}
}

func TestAddressCodecRoundTrip(t *testing.T) {
	var c AddressCodec
	for _, id := range []string{"alice@example.org", "bob%matrix.org@matrix.localhost", "example.org"} {
		user, domain, err := c.Split(id)
		if err != nil {
			t.Fatalf("Split(%q): %v", id, err)
		}
		got, err := c.Join(user, domain)
		if err != nil || got != id {
			t.Errorf("Join(Split(%q)) = %q, %v", id, got, err)
		}
	}
}
