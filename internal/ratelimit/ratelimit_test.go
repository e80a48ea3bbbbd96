package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	l := New[netip.Addr](2, 2, 100)
	now := time.Unix(1000, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := range 2 {
		if ok, _ := l.Allow(a, now); !ok {
			t.Fatalf("request %d within the burst limited", i)
		}
	}
	ok, wait := l.Allow(a, now)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("third request: %v, wait %s; want limited, 500ms", ok, wait)
	}
	if ok, _ := l.Allow(b, now); !ok {
		t.Fatal("another source was limited")
	}
	if ok, _ := l.Allow(a, now.Add(500*time.Millisecond)); !ok {
		t.Fatal("no token after 500ms at 2/s")
	}
	// Time going backwards gives no tokens.
	l.Allow(a, now.Add(500*time.Millisecond))
	if ok, _ := l.Allow(a, now); ok {
		t.Fatal("allowed after going back in time")
	}
}

func TestForgetsQuietKeysFirst(t *testing.T) {
	l := New[string](1, 2, 2)
	now := time.Unix(1000, 0)
	l.Allow("a", now)
	l.Allow("b", now.Add(2*time.Second)) // a is full again by then
	l.Allow("c", now.Add(2*time.Second))
	if n := l.Len(); n != 2 {
		t.Fatalf("%d keys, want 2 (a forgotten)", n)
	}
	// b is not full: it still has a token less than the burst.
	if ok, _ := l.Allow("b", now.Add(2*time.Second)); !ok {
		t.Fatal("b limited with one token left")
	}
	if ok, _ := l.Allow("b", now.Add(2*time.Second)); ok {
		t.Fatal("b remembered with a full bucket: it was forgotten")
	}
}

func TestStaysBounded(t *testing.T) {
	const max = 1000
	l := New[netip.Addr](1, 1, max)
	now := time.Unix(1000, 0)
	for i := range max + 10 {
		l.Allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if n := l.Len(); n > max {
		t.Fatalf("%d keys, want at most %d", n, max)
	}
}
