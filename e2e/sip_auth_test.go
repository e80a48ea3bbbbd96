package e2e

import (
	"crypto/md5"
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

// TestSIPPasswordGuessingSlowed guesses phone 1001's password for 8 s the
// way SIPVicious's svcrack does (one MESSAGE with Proxy-Authorization per
// guess, reusing the last nonce, waiting for each answer, waiting out 503
// Retry-After), with the right password as guess 50, and reports how many
// guesses parley answered and how many it checked (its info lines). The
// test stack's rate limit is 10000/s; with the default of 20/s, 20 guesses
// a second were checked before the back-off, and svcrack found a password
// at position 50 of its list in about 3 s.
//
//	go test ./e2e -run TestSIPPasswordGuessingSlowed -v
func TestSIPPasswordGuessingSlowed(t *testing.T) {
	st := newStack(t, stackSettings{homeserver: "synapse", logLevel: "info"})
	st.start(true)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const duration = 8 * time.Second
	uri := "sip:echo@" + sipDomain
	request := func(n int, auth string) (string, string) {
		req := fmt.Sprintf("MESSAGE %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-guess-%d;rport\r\n"+
			"From: <sip:1001@%s>;tag=g%d\r\nTo: <%s>\r\nCall-ID: guess-%d@attacker.example\r\nCSeq: %d MESSAGE\r\n"+
			"Max-Forwards: 70\r\n%sContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
			uri, conn.LocalAddr(), n, sipDomain, n, uri, n, n, auth)
		return sendRaw(t, conn, st.sipAddr, req)
	}
	md5hex := func(s string) string { return fmt.Sprintf("%x", md5.Sum([]byte(s))) }
	nonceOf := func(res string) string {
		_, rest, _ := strings.Cut(res, `nonce="`)
		nonce, _, _ := strings.Cut(rest, `"`)
		return nonce
	}
	_, res := request(0, "")
	nonce := nonceOf(res)
	start := time.Now()
	answered, found, n := 0, 0, 0
	for i := 0; time.Since(start) < duration; n++ {
		password := fmt.Sprintf("guess%03d", i)
		if i == 49 {
			password = sipUsers["1001"]
		}
		ha2 := md5hex("MESSAGE:" + uri)
		cnonce := fmt.Sprintf("c%d", n)
		resp := md5hex(md5hex("1001:"+sipDomain+":"+password) + ":" + nonce + ":00000001:" + cnonce + ":auth:" + ha2)
		line, res := request(n+1, fmt.Sprintf(`Proxy-Authorization: Digest username="1001", realm="%s", nonce="%s", uri="%s", `+
			`response="%s", algorithm=MD5, qop=auth, nc=00000001, cnonce="%s"`+"\r\n", sipDomain, nonce, uri, resp, cnonce))
		switch {
		case strings.HasPrefix(line, "SIP/2.0 503 "):
			time.Sleep(time.Second)
			continue
		case strings.HasPrefix(line, "SIP/2.0 407 "):
			nonce = nonceOf(res)
			if strings.Contains(res, "stale=true") {
				continue
			}
		default:
			found++
		}
		answered++
		i++
	}
	elapsed := time.Since(start)
	checked := strings.Count(st.log(), `msg="sip authentication failed"`)
	t.Logf("%d guesses answered in %s (%.1f/s); parley checked %d (%.2f/s); the right password (guess 50) accepted: %v",
		answered, elapsed.Round(time.Millisecond), float64(answered)/elapsed.Seconds(), checked, float64(checked)/elapsed.Seconds(), found > 0)
	if checked <= 5 {
		t.Errorf("parley logged %d failed authentications, want every checked guess logged", checked)
	}
	if checked > answered/4 {
		t.Errorf("parley checked %d of %d guesses: guessing is not slowed", checked, answered)
	}
}
