package sip

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestAuthBackoff(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	attacker := netip.MustParseAddr("203.0.113.7")
	other := netip.MustParseAddr("198.51.100.9")

	t.Run("doubles after the free failures, up to the maximum", func(t *testing.T) {
		b := newAuthBackoff()
		var got []time.Duration
		for range backoffFree + 12 {
			got = append(got, b.fail("alice", attacker, now))
		}
		for i, d := range got {
			var want time.Duration
			if i >= backoffFree {
				want = min(backoffMax, backoffBase<<(i-backoffFree))
			}
			if d != want {
				t.Errorf("failure %d: back-off %s, want %s", i+1, d, want)
			}
		}
		if blocked, until := b.blocked("alice", attacker, now); !blocked || !until.Equal(now.Add(backoffMax)) {
			t.Errorf("blocked = %v until %s", blocked, until)
		}
		if blocked, _ := b.blocked("alice", attacker, now.Add(backoffMax+time.Second)); blocked {
			t.Error("still blocked after the back-off")
		}
		if blocked, _ := b.blocked("alice", attacker, now.Add(backoffForget+time.Hour)); blocked {
			t.Error("blocked after being forgotten")
		}
		if d := b.fail("alice", attacker, now.Add(backoffForget+time.Hour)); d != 0 {
			t.Errorf("first failure after being forgotten: back-off %s", d)
		}
	})

	t.Run("per user, from any source, existing or not", func(t *testing.T) {
		b := newAuthBackoff()
		for i := range backoffFree + 1 {
			src := netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
			b.fail("nobody", src, now)
		}
		if blocked, _ := b.blocked("nobody", other, now); !blocked {
			t.Error("a username guessed from many sources is not backed off")
		}
		if blocked, _ := b.blocked("alice", other, now); blocked {
			t.Error("another username is backed off")
		}
	})

	t.Run("per source, whatever the username", func(t *testing.T) {
		b := newAuthBackoff()
		for i := range backoffFree + 1 {
			b.fail(fmt.Sprintf("user%d", i), attacker, now)
		}
		if blocked, _ := b.blocked("fresh-name", attacker, now); !blocked {
			t.Error("a source spraying usernames is not backed off")
		}
		if blocked, _ := b.blocked("fresh-name", other, now); blocked {
			t.Error("another source is backed off")
		}
	})

	t.Run("an IPv6 /64 is one source", func(t *testing.T) {
		b := newAuthBackoff()
		for i := range backoffFree + 1 {
			b.fail(fmt.Sprintf("user%d", i), netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i+1)), now)
		}
		if blocked, _ := b.blocked("x", netip.MustParseAddr("2001:db8:1:2:ffff::1"), now); !blocked {
			t.Error("another address of the /64 is not backed off")
		}
		if blocked, _ := b.blocked("x", netip.MustParseAddr("2001:db8:1:3::1"), now); blocked {
			t.Error("another /64 is backed off")
		}
	})

	t.Run("the user's own phone is spared", func(t *testing.T) {
		b := newAuthBackoff()
		phone := netip.MustParseAddr("192.0.2.50")
		b.succeed("alice", phone, now)
		for range backoffFree + 3 {
			b.fail("alice", attacker, now)
		}
		if blocked, _ := b.blocked("alice", phone, now); blocked {
			t.Error("alice's phone, which authenticated before, is backed off")
		}
		if blocked, _ := b.blocked("alice", other, now); !blocked {
			t.Error("a new source for alice is not backed off")
		}
		later := now.Add(goodSourceTTL + time.Minute)
		for range backoffFree + 1 {
			b.fail("alice", attacker, later)
		}
		if blocked, _ := b.blocked("alice", phone, later); !blocked {
			t.Error("the phone is still spared a day after it last authenticated")
		}
	})

	t.Run("bounded under a spray of usernames and sources", func(t *testing.T) {
		b := newAuthBackoff()
		for range backoffFree + 5 {
			b.fail("alice", attacker, now)
		}
		for i := range 50_000 {
			src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			b.fail(fmt.Sprintf("spray%d", i), src, now)
		}
		if n, m := len(b.users.entries), len(b.sources.entries); n > backoffKeys || m > backoffKeys {
			t.Errorf("remembers %d users and %d sources, want at most %d each", n, m, backoffKeys)
		}
		if blocked, _ := b.blocked("alice", other, now); !blocked {
			t.Error("the spray made the table forget the user under attack")
		}
	})
}
