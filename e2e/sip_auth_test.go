package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/parleygw/parley/internal/peertest"
)

// rebuild returns m, a SIP request sipp sent, as raw text with the headers
// of set replaced (by name, case-insensitively) and body as its body.
func rebuild(m peertest.SipMessage, startLine string, set map[string]string, body string) string {
	var b strings.Builder
	if startLine == "" {
		startLine = m.StartLine
	}
	b.WriteString(startLine + "\r\n")
	done := map[string]bool{}
	for _, h := range m.Headers {
		name := strings.ToLower(h.Name)
		if name == "content-length" {
			continue
		}
		for k, v := range set {
			if strings.EqualFold(k, h.Name) {
				if done[name] {
					h.Value = ""
				} else {
					h.Value = v
				}
				done[name] = true
			}
		}
		if h.Value != "" {
			fmt.Fprintf(&b, "%s: %s\r\n", h.Name, h.Value)
		}
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return b.String()
}

// sendRaw sends req as one UDP datagram from conn to addr and returns the
// first final response (the status line and the whole text).
func sendRaw(t *testing.T, conn *net.UDPConn, addr, req string) (string, string) {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDP([]byte(req), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no answer to\n%s\n: %v", req, err)
		}
		res := string(buf[:n])
		line, _, _ := strings.Cut(res, "\r\n")
		if !strings.HasPrefix(line, "SIP/2.0 1") {
			return line, res
		}
	}
}

// lastSent returns the last request of method sipp sent with header.
func lastSent(t *testing.T, msgs []peertest.SipMessage, method, header string) peertest.SipMessage {
	t.Helper()
	for i := len(msgs) - 1; i >= 0; i-- {
		if m := msgs[i]; !m.Received && strings.HasPrefix(m.StartLine, method+" ") && m.Header(header) != "" {
			return m
		}
	}
	t.Fatalf("sipp sent no %s with %s", method, header)
	return peertest.SipMessage{}
}

// TestSIPReplayRefused: a MESSAGE and a REGISTER that sipp authenticated
// with parley, captured from sipp's message log and sent again as raw UDP
// datagrams with a new Call-ID, branch, CSeq and body (another Request-URI
// and To, another Contact, Contact: *), are refused; the message reaches
// alice once.
func TestSIPReplayRefused(t *testing.T) {
	st, alice, _, _ := chat(t, "synapse")
	ctx := timeout(t, time.Minute)
	r := sipMessage(t, st, "1001", "xmpp_alice_localhost", "pay bob 10 EUR", "202")
	if e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "message" }); !ok || e.Body != "pay bob 10 EUR" {
		t.Fatalf("alice got %+v", e)
	}
	captured := lastSent(t, r.Messages(), "MESSAGE", "Proxy-Authorization")

	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	via := func(n int) string {
		return fmt.Sprintf("SIP/2.0/UDP %s;branch=z9hG4bK-replay-%d;rport", conn.LocalAddr(), n)
	}
	line, res := sendRaw(t, conn, st.sipAddr, rebuild(captured, "", map[string]string{
		"Via": via(1), "Call-ID": "replay-1@attacker.example", "CSeq": "7 MESSAGE"}, "pay mallory 1000 EUR"))
	if !strings.HasPrefix(line, "SIP/2.0 407 ") || !strings.Contains(res, "stale=true") {
		t.Errorf("replayed MESSAGE: %s, want 407 with stale=true\n%s", line, res)
	}
	line, _ = sendRaw(t, conn, st.sipAddr, rebuild(captured, "MESSAGE sip:1002@"+sipDomain+" SIP/2.0", map[string]string{
		"Via": via(2), "Call-ID": "replay-2@attacker.example", "CSeq": "8 MESSAGE", "To": "<sip:1002@" + sipDomain + ">"}, "hi 1002"))
	if !strings.HasPrefix(line, "SIP/2.0 400 ") && !strings.HasPrefix(line, "SIP/2.0 407 ") {
		t.Errorf("replayed MESSAGE to another Request-URI: %s, want 400 or 407", line)
	}

	reg := peertest.RunSipp(t, peertest.SippOptions{Scenario: "uac_register_auth.xml", Target: st.sipAddr, Service: "1003",
		Vars: map[string]string{"domain": sipDomain, "expires": "600"}, AuthUser: "1003", AuthPassword: sipUsers["1003"], Name: "register-1003"})
	if !reg.OK() {
		t.Fatalf("sipp REGISTER:\n%s", reg.Diagnostics())
	}
	capturedReg := lastSent(t, reg.Messages(), "REGISTER", "Authorization")
	line, res = sendRaw(t, conn, st.sipAddr, rebuild(capturedReg, "", map[string]string{
		"Via": via(3), "Call-ID": "replay-3@attacker.example", "CSeq": "9 REGISTER", "Contact": "<sip:1003@203.0.113.66:5060>"}, ""))
	if !strings.HasPrefix(line, "SIP/2.0 401 ") || !strings.Contains(res, "stale=true") {
		t.Errorf("replayed REGISTER with the attacker's Contact: %s, want 401 with stale=true\n%s", line, res)
	}
	line, _ = sendRaw(t, conn, st.sipAddr, rebuild(capturedReg, "", map[string]string{
		"Via": via(4), "Call-ID": "replay-4@attacker.example", "CSeq": "10 REGISTER", "Contact": "*", "Expires": "0"}, ""))
	if !strings.HasPrefix(line, "SIP/2.0 401 ") {
		t.Errorf("replayed REGISTER with Contact: * and Expires: 0: %s, want 401", line)
	}

	short := timeout(t, 2*time.Second)
	if e, ok := alice.Next(short, func(e peertest.XMPPEvent) bool { return e.Ev == "message" }); ok {
		t.Errorf("alice got a replayed message: %+v", e)
	}
	if log := st.log(); strings.Count(log, `msg="sip authentication replayed"`) < 2 {
		t.Errorf("parley logged no replays:\n%s", tail(log, 30))
	}
}
