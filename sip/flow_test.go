package sip

import (
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// flowRequest parses a REGISTER with the given Contact and Via values (top
// first) that came over transport from source.
func flowRequest(t *testing.T, contact string, vias []string, transport, source string) *sip.Request {
	t.Helper()
	var b strings.Builder
	b.WriteString("REGISTER sip:" + testDomain + " SIP/2.0\r\n")
	for _, v := range vias {
		b.WriteString("Via: " + v + "\r\n")
	}
	b.WriteString("From: <sip:alice@" + testDomain + ">;tag=1\r\nTo: <sip:alice@" + testDomain + ">\r\n" +
		"Call-ID: flow\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContact: " + contact + "\r\nContent-Length: 0\r\n\r\n")
	m, err := sip.ParseMessage([]byte(b.String()))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	req := m.(*sip.Request)
	req.SetTransport(transport)
	req.SetSource(source)
	return req
}

// TestReachByFlow is the rule that decides between a registered Contact
// and the flow of the REGISTER (see flowReason).
func TestReachByFlow(t *testing.T) {
	const (
		udp = "SIP/2.0/UDP "
		tcp = "SIP/2.0/TCP "
	)
	tests := []struct {
		name, contact string
		vias          []string
		transport     string
		source        string
		want          flowReason
	}{
		// NATed phones: their own private address in the Contact.
		{"NATed phone with rport", "<sip:alice@192.168.1.20:5060>", []string{udp + "192.168.1.20:5060;rport;branch=z9hG4bK1"}, "UDP", "203.0.113.7:40123", flowUnreachable},
		{"NATed phone without rport", "<sip:alice@192.168.1.20:5060>", []string{udp + "192.168.1.20:5060;branch=z9hG4bK1"}, "UDP", "203.0.113.7:40123", flowUnreachable},
		{"NATed phone behind a private NAT", "<sip:alice@192.168.1.20>", []string{udp + "192.168.1.20;rport;branch=z9hG4bK1"}, "UDP", "172.17.0.1:5060", flowUnreachable},
		{"carrier-grade NAT", "<sip:alice@100.64.3.4:5060>", []string{udp + "100.64.3.4:5060;rport;branch=z9hG4bK1"}, "UDP", "198.51.100.2:1024", flowUnreachable},
		{"IPv6 unique local", "<sip:alice@[fd00::20]:5060>", []string{udp + "[fd00::20]:5060;rport;branch=z9hG4bK1"}, "UDP", "[2001:db8::7]:40123", flowUnreachable},
		{"IPv6 link-local", "<sip:alice@[fe80::1]:5060>", []string{udp + "[fe80::1]:5060;branch=z9hG4bK1"}, "UDP", "[2001:db8::7]:5060", flowUnreachable},
		{"loopback Contact from another host", "<sip:alice@127.0.0.1:5060>", []string{udp + "127.0.0.1:5060;branch=z9hG4bK1"}, "UDP", "192.0.2.1:5060", flowUnreachable},
		{"unspecified address", "<sip:alice@0.0.0.0:5060>", []string{udp + "192.0.2.1:5060;branch=z9hG4bK1"}, "UDP", "192.0.2.1:5060", flowUnreachable},
		{"NATed phone over TCP", "<sip:alice@10.0.0.5:5060;transport=tcp>", []string{tcp + "10.0.0.5:5060;rport;branch=z9hG4bK1"}, "TCP", "203.0.113.7:51000", flowUnreachable},

		// RFC 5626 outbound asks for the flow.
		{"outbound", `<sip:alice@198.51.100.7:5060>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1`, []string{udp + "198.51.100.7:5060;rport;branch=z9hG4bK1"}, "UDP", "198.51.100.7:5060", flowOutbound},
		{"outbound from another address", `<sip:alice@198.51.100.7:5060>;+SIP.Instance="<urn:uuid:1>";Reg-Id=2`, []string{udp + "198.51.100.9:5080;branch=z9hG4bK1"}, "UDP", "198.51.100.9:5080", flowOutbound},
		{"ob in the Contact URI", "<sip:alice@198.51.100.7:5060;ob>", []string{udp + "198.51.100.9:5060;rport;branch=z9hG4bK1"}, "UDP", "198.51.100.9:5060", flowOutbound},
		{"reg-id without +sip.instance is not outbound", "<sip:alice@198.51.100.7:5060>;reg-id=1", []string{udp + "198.51.100.9:5060;rport;branch=z9hG4bK1"}, "UDP", "198.51.100.9:5060", flowNone},
		{"outbound through a proxy (no Path ob) is not", `<sip:alice@198.51.100.7:5060>;+sip.instance="<urn:uuid:1>";reg-id=1`, []string{udp + "198.51.100.1;branch=z9hG4bK2", udp + "198.51.100.7:5060;rport;branch=z9hG4bK1"}, "UDP", "198.51.100.1:5060", flowNone},

		// The contact is the symmetric sender itself.
		{"public phone with rport", "<sip:alice@198.51.100.7:5060>", []string{udp + "198.51.100.7:5060;rport;branch=z9hG4bK1"}, "UDP", "198.51.100.7:5060", flowSelf},
		{"static NAT: public Contact, translated port", "<sip:alice@198.51.100.7>", []string{udp + "198.51.100.7;rport;branch=z9hG4bK1"}, "UDP", "198.51.100.7:34567", flowSelf},
		{"phone over TCP", "<sip:alice@198.51.100.7:5060;transport=tcp>", []string{tcp + "198.51.100.7:5060;branch=z9hG4bK1"}, "TCP", "198.51.100.7:49152", flowSelf},
		{"IPv6 phone with rport", "<sip:alice@[2001:db8::7]:5060>", []string{udp + "[2001:db8::7]:5060;rport;branch=z9hG4bK1"}, "UDP", "[2001:db8::7]:5060", flowSelf},

		// The Contact as written (RFC 3261 §10).
		{"public phone without rport", "<sip:alice@198.51.100.7:5060>", []string{udp + "198.51.100.7:5060;branch=z9hG4bK1"}, "UDP", "198.51.100.7:5060", flowNone},
		{"loopback Contact on the source's host, another port", "<sip:alice@127.0.0.1:5071>", []string{udp + "127.0.0.1:5073;rport;branch=z9hG4bK1"}, "UDP", "127.0.0.1:5073", flowNone},
		{"private Contact equal to the source (same LAN)", "<sip:alice@192.168.1.20:5060>", []string{udp + "192.168.1.20:5062;rport;branch=z9hG4bK1"}, "UDP", "192.168.1.20:5062", flowNone},
		{"third-party registration with rport", "<sip:alice@198.51.100.8:5060>", []string{udp + "203.0.113.9:5060;rport;branch=z9hG4bK1"}, "UDP", "203.0.113.9:5060", flowNone},
		{"third-party registration over TCP", "<sip:alice@198.51.100.8:5060;transport=tcp>", []string{tcp + "198.51.100.7:5060;branch=z9hG4bK1"}, "TCP", "198.51.100.7:49152", flowNone},
		{"host name Contact", "<sip:alice@phone.example.net:5060>", []string{udp + "192.168.1.20:5060;rport;branch=z9hG4bK1"}, "UDP", "203.0.113.7:40123", flowNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := flowRequest(t, tt.contact, tt.vias, tt.transport, tt.source)
			c := req.Contact()
			if c == nil {
				t.Fatal("no Contact")
			}
			if got := reachByFlow(flowInputOf(req, c)); got != tt.want {
				t.Errorf("reachByFlow = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestLegacyFlow: bindings stored before the record had a version route as
// they did when their contact is the source's host (or unreachable), and to
// the contact when another host registered it.
func TestLegacyFlow(t *testing.T) {
	tests := []struct {
		name string
		b    binding
		want bool
	}{
		{"NATed phone", binding{Contact: "sip:a@192.168.1.20:5060", Transport: "UDP", Source: "203.0.113.7:40123", Symmetric: true}, true},
		{"NATed phone, not symmetric", binding{Contact: "sip:a@192.168.1.20:5060", Transport: "UDP", Source: "203.0.113.7:40123"}, true},
		{"phone over TCP", binding{Contact: "sip:a@198.51.100.7:5060;transport=tcp", Transport: "TCP", Source: "198.51.100.7:49152", Symmetric: true}, true},
		{"third-party registration", binding{Contact: "sip:a@198.51.100.8:5060", Transport: "UDP", Source: "203.0.113.9:5060", Symmetric: true}, false},
		{"without rport", binding{Contact: "sip:a@198.51.100.7:5060", Transport: "UDP", Source: "198.51.100.7:5060"}, false},
		{"no source", binding{Contact: "sip:a@192.168.1.20:5060", Transport: "UDP", Symmetric: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := legacyFlow(tt.b); got != tt.want {
				t.Errorf("legacyFlow = %v, want %v", got, tt.want)
			}
		})
	}
}

// FuzzReachByFlow: any Contact, Via and source a REGISTER may carry gets a
// decision without a panic, and a Contact with a host name is never taken
// as unreachable.
func FuzzReachByFlow(f *testing.F) {
	f.Add("<sip:alice@192.168.1.20:5060>", "SIP/2.0/UDP 192.168.1.20:5060;rport;branch=z9hG4bK1", "UDP", "203.0.113.7:40123")
	f.Add(`<sip:alice@198.51.100.7:5060>;+sip.instance="<urn:uuid:1>";reg-id=1`, "SIP/2.0/UDP 198.51.100.7:5060;rport;branch=z9hG4bK1", "UDP", "198.51.100.7:5060")
	f.Add("<sip:alice@127.0.0.1:5071;ob>", "SIP/2.0/UDP 127.0.0.1:5073;rport;branch=z9hG4bK1", "UDP", "127.0.0.1:5073")
	f.Add("<sip:alice@[fe80::1]:5060;transport=tcp>", "SIP/2.0/TCP [fe80::1]:5060;branch=z9hG4bK1", "TCP", "[2001:db8::7]:5060")
	f.Add("<sip:alice@phone.example.net>", "SIP/2.0/TLS phone.example.net;branch=z9hG4bK1", "TLS", "bogus")
	f.Fuzz(func(t *testing.T, contact, via, transport, source string) {
		raw := "REGISTER sip:" + testDomain + " SIP/2.0\r\nVia: " + via + "\r\nFrom: <sip:a@" + testDomain + ">;tag=1\r\n" +
			"To: <sip:a@" + testDomain + ">\r\nCall-ID: f\r\nCSeq: 1 REGISTER\r\nContact: " + contact + "\r\nContent-Length: 0\r\n\r\n"
		m, err := sip.ParseMessage([]byte(raw))
		if err != nil {
			return
		}
		req, ok := m.(*sip.Request)
		if !ok {
			return
		}
		c := req.Contact()
		if c == nil {
			return
		}
		req.SetTransport(transport)
		req.SetSource(source)
		r := reachByFlow(flowInputOf(req, c))
		if r == flowUnreachable && !sameIP(c.Address.Host, strings.Trim(c.Address.Host, "[]")) {
			t.Errorf("host name contact %q taken as unreachable", c.Address.Host)
		}
	})
}

// TestNotifyFollowsTheRule: a SUBSCRIBE with rport sent from another port
// than its Contact's gets its NOTIFYs at the Contact, like a registered
// contact; one whose Contact is a private address behind another source
// gets them over the flow.
func TestNotifyFollowsTheRule(t *testing.T) {
	a := startAdapter(t, nil, trustLoopback)
	w := newWatcherUA(t)
	sender := newWatcherUA(t) // listens on a third port, with rport
	client, err := sipgo.NewClient(sender.ua, sipgo.WithClientLogger(testLogger(t)), sipgo.WithClientNAT())
	if err != nil {
		t.Fatal(err)
	}
	sender.client = client
	if res := sender.do(w.newSubscribe(a.udp, peerWatcher, ghost, "presence", 600)); res.StatusCode != 200 {
		t.Fatalf("SUBSCRIBE: %d %s", res.StatusCode, res.Reason)
	}
	checkNotify(t, w.waitNotify(), "active;expires=")
	sender.noNotify(200 * time.Millisecond)

	natted := sender.newSubscribe(a.udp, peerWatcher, ghost, "presence", 600)
	natted.ReplaceHeader(sip.NewHeader("Contact", "<sip:watcher@192.168.1.20:5060>"))
	if res := sender.do(natted); res.StatusCode != 200 {
		t.Fatalf("SUBSCRIBE with a private Contact: %d %s", res.StatusCode, res.Reason)
	}
	checkNotify(t, sender.waitNotify(), "active;expires=")
}
