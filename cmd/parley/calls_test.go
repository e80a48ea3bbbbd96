package main

import (
	"net/netip"
	"testing"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/media"
)

// With every media port pair in use Parley can carry no new call: /readyz
// says so.
func TestReadinessWhenMediaPortsRunOut(t *testing.T) {
	ports, err := media.NewPorts(netip.MustParseAddr("127.0.0.1"), 31000, 31003)
	if err != nil {
		t.Fatal(err)
	}
	states := map[event.Network]bridges.Status{event.SIP: {State: bridges.Connected}}
	if ok, body := readiness(states, ports, 0); !ok || body.Calls == nil || body.Calls.PortPairs != 2 {
		t.Fatalf("ready %v, %+v", ok, body.Calls)
	}
	var legs []*media.Leg
	for range 2 {
		l, err := ports.NewLeg()
		if err != nil {
			t.Fatal(err)
		}
		legs = append(legs, l)
	}
	ok, body := readiness(states, ports, 1)
	if ok || body.Calls.Error != "media port range 31000-31003 exhausted" || body.Calls.Active != 1 {
		t.Fatalf("ready %v, %+v", ok, body.Calls)
	}
	for _, l := range legs {
		_ = l.Close()
	}
	if ok, _ := readiness(states, ports, 0); !ok {
		t.Fatal("not ready after the legs ended")
	}
}

// One person may be in four calls at once unless the YAML says otherwise.
func TestCallsPerUserDefault(t *testing.T) {
	if got := (&CallsConfig{}).router().MaxPerUser; got != defaultCallsPerUser {
		t.Errorf("default per user: %d", got)
	}
	if got := (&CallsConfig{MaxCallsPerUser: 50}).router().MaxPerUser; got != 50 {
		t.Errorf("configured per user: %d", got)
	}
}
