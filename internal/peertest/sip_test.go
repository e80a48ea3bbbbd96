package peertest

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSippScenariosEmbedded(t *testing.T) {
	want := []string{"uac_message.xml", "uac_message_expect.xml", "uac_register_auth.xml", "uac_register_then_uas.xml", "uas_message.xml"}
	if got := SippScenarios(); !slices.Equal(got, want) {
		t.Fatalf("SippScenarios() = %v, want %v", got, want)
	}
	for _, name := range want {
		if _, ok := sippSpecs[name]; !ok {
			t.Errorf("no sippSpecs entry for %s", name)
		}
		if !strings.Contains(SippScenario(name), "<scenario name=") {
			t.Errorf("%s does not look like a sipp scenario", name)
		}
	}
}

func TestParseSippMessageLog(t *testing.T) {
	log := "----------------------------------------------- 2024-01-02 10:11:12.000001\n" +
		"UDP message sent (120 bytes):\n\n" +
		"MESSAGE sip:bob@pbx.localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-1\r\n" +
		"f: <sip:alice@pbx.localhost>;tag=1\r\nCSeq: 1 MESSAGE\r\nContent-Length:    8\r\n\r\nhi there\n" +
		"----------------------------------------------- 2024-01-02 10:11:12.000002\n" +
		"UDP message received [99] bytes :\n\n" +
		"SIP/2.0 202 Accepted\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n\n" +
		"----------------------------------------------- 2024-01-02 10:11:12.000003\n" +
		"TCP message received [99] bytes :\n\n" +
		"MESSAGE sip:x@parley.localhost SIP/2.0\r\nContent-Type: text/plain\r\nl: 12\r\n\r\nline1\r\nline2\n"
	p := filepath.Join(t.TempDir(), "messages.log")
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	msgs, err := ParseSippMessageLog(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 {
		t.Fatalf("got %d messages, want 3: %+v", len(msgs), msgs)
	}
	if m := msgs[0]; m.Received || m.Method() != "MESSAGE" || m.Body != "hi there" || m.Header("From") != "<sip:alice@pbx.localhost>;tag=1" {
		t.Errorf("sent MESSAGE parsed as %+v", m)
	}
	if m := msgs[1]; !m.Received || m.StatusCode() != 202 || m.Method() != "MESSAGE" || m.IsRequest() {
		t.Errorf("202 parsed as %+v", m)
	}
	if m := msgs[2]; m.Transport != "TCP" || m.RequestURI() != "sip:x@parley.localhost" || m.Body != "line1\r\nline2" {
		t.Errorf("received MESSAGE parsed as %+v (body %q)", m, m.Body)
	}
	if got := filterSip(msgs, "message"); len(got) != 1 || got[0].RequestURI() != "sip:x@parley.localhost" {
		t.Errorf("filterSip(MESSAGE) = %+v", got)
	}
}

func TestKamailioStartStop(t *testing.T) {
	skipSIPShort(t)
	k := StartKamailio(t, KamailioOptions{})
	if k.Domain != "pbx.localhost" || k.Host != "127.0.0.1" || k.Port == 0 {
		t.Fatalf("unexpected Kamailio %+v", k)
	}
	if code, err := SipOptionsPing(k.Addr, time.Second); err != nil || code != 200 {
		t.Fatalf("OPTIONS: %d, %v", code, err)
	}
	if err := dialable(k.Addr); err != nil {
		t.Fatalf("TCP: %v", err)
	}
	k.Stop(t)
	if _, err := SipOptionsPing(k.Addr, 200*time.Millisecond); err == nil {
		t.Fatalf("Kamailio still answers after Stop")
	}
	start := time.Now()
	k.Start(t)
	t.Logf("Kamailio restarted in %v", time.Since(start).Round(time.Millisecond))
	if code, err := SipOptionsPing(k.Addr, time.Second); err != nil || code != 200 {
		t.Fatalf("OPTIONS after restart: %d, %v", code, err)
	}
}

func TestSippRegisterOnKamailio(t *testing.T) {
	skipSIPShort(t)
	k := StartKamailio(t, KamailioOptions{Users: map[string]string{"alice": "alice-secret"}})

	res := RunSipp(t, SippOptions{
		Scenario:     "uac_register_auth.xml",
		Target:       k.Addr,
		Service:      "alice",
		AuthPassword: "alice-secret",
		Vars:         map[string]string{"domain": k.Domain},
	})
	if res.Successful != 1 || res.Failed != 0 {
		t.Fatalf("register: %d successful, %d failed", res.Successful, res.Failed)
	}
	contacts := k.Contacts(t, "alice")
	if len(contacts) != 1 || !strings.HasPrefix(contacts[0], "sip:alice@127.0.0.1:") {
		t.Fatalf("alice's contacts = %v", contacts)
	}
	var codes []int
	for _, m := range res.Messages() {
		if m.Received {
			codes = append(codes, m.StatusCode())
		}
	}
	if !slices.Equal(codes, []int{401, 200}) {
		t.Errorf("register got responses %v, want [401 200]", codes)
	}

	// A user added at run time registers over TCP.
	k.AddUser(t, "carol", "1234")
	RunSipp(t, SippOptions{
		Scenario:     "uac_register_auth.xml",
		Target:       k.Addr,
		Transport:    "tcp",
		Service:      "carol",
		AuthPassword: "1234",
		Vars:         map[string]string{"domain": k.Domain},
	})
	if c := k.Contacts(t, "carol"); len(c) != 1 || !strings.Contains(c[0], "transport=TCP") {
		t.Errorf("carol's contacts = %v", c)
	}

	// A wrong password is challenged again: the call fails.
	bad := RunSipp(t, SippOptions{
		Scenario:     "uac_register_auth.xml",
		Target:       k.Addr,
		Service:      "alice",
		AuthPassword: "wrong",
		Vars:         map[string]string{"domain": k.Domain},
		AllowFailure: true,
	})
	if bad.OK() || bad.Failed != 1 || bad.ExitCode != 1 {
		t.Errorf("wrong password: exit %d, %d successful, %d failed; want a failed call", bad.ExitCode, bad.Successful, bad.Failed)
	}
}

func TestSippMessageToUserRegisteredOnKamailio(t *testing.T) {
	skipSIPShort(t)
	k := StartKamailio(t, KamailioOptions{
		Users:     map[string]string{"alice": "alice-secret", "bob": "bob-secret"},
		ProxyAuth: true,
	})

	// bob: a registered user agent waiting for three MESSAGEs.
	bob := StartSipp(t, SippOptions{
		Scenario:     "uac_register_then_uas.xml",
		Target:       k.Addr,
		Service:      "bob",
		AuthPassword: "bob-secret",
		Vars:         map[string]string{"domain": k.Domain, "messages": "3"},
		Timeout:      20 * time.Second,
	})
	contacts := k.WaitRegistered(t, "bob", 5*time.Second)
	if !strings.Contains(contacts[0], bob.Addr) {
		t.Fatalf("bob registered %v, want a contact at %s", contacts, bob.Addr)
	}

	// alice (authenticated by Kamailio with a 407) sends two MESSAGEs to
	// sip:bob@pbx.localhost through Kamailio.
	res := RunSipp(t, SippOptions{
		Scenario:     "uac_message.xml",
		Target:       k.Addr,
		Service:      "bob",
		AuthUser:     "alice",
		AuthPassword: "alice-secret",
		Calls:        2,
		Vars: map[string]string{
			"domain": k.Domain,
			"from":   k.URI("alice"),
			"body":   "hello bob, ünïcode ✓",
		},
	})
	if res.Successful != 2 {
		t.Fatalf("MESSAGE calls: %d successful, %d failed", res.Successful, res.Failed)
	}
	var challenged bool
	for _, m := range res.Messages() {
		if m.Received && m.StatusCode() == 407 {
			challenged = true
		}
	}
	if !challenged {
		t.Errorf("Kamailio did not challenge alice's MESSAGE with 407 (ProxyAuth)")
	}

	// What Parley does: a MESSAGE from its own domain, with Kamailio as
	// outbound proxy (preloaded Route), is not challenged and reaches bob.
	if code := sendMessageViaProxy(t, k, "sip:bob@"+k.Domain, "sip:x@parley.localhost", "from parley"); code != 200 {
		t.Errorf("MESSAGE from parley.localhost through Kamailio: %d, want 200", code)
	}

	got := bob.WaitReceived(t, "MESSAGE", 3, 5*time.Second)
	bres := bob.Wait(t)
	if bres.Successful != 1 {
		t.Errorf("bob's call: %d successful, %d failed", bres.Successful, bres.Failed)
	}
	if m := got[2]; m.Body != "from parley" || !strings.Contains(m.Header("From"), "sip:x@parley.localhost") || m.Header("Route") != "" {
		t.Errorf("bob got %q from %q (Route %q)", m.Body, m.Header("From"), m.Header("Route"))
	}
	for _, m := range got[:2] {
		if m.Body != "hello bob, ünïcode ✓" || !strings.Contains(m.Header("From"), "sip:alice@pbx.localhost") ||
			!strings.HasPrefix(m.RequestURI(), "sip:bob@127.0.0.1:") || m.Header("Content-Type") != "text/plain;charset=UTF-8" {
			t.Errorf("bob received %q from %q (R-URI %s, type %s)", m.Body, m.Header("From"), m.RequestURI(), m.Header("Content-Type"))
		}
	}
	logs := strings.Join(bres.Logs(), "\n")
	if !strings.Contains(logs, "REGISTERED bob@pbx.localhost") || strings.Count(logs, "body=hello bob") != 2 || !strings.Contains(logs, "body=from parley") {
		t.Errorf("bob's <log> lines:\n%s", logs)
	}

	// Without credentials alice's MESSAGE gets the 407; to a user nobody
	// registered, 404; to a domain Kamailio does not serve, 403.
	for _, c := range []struct{ user, domain, from, expect string }{
		{"bob", k.Domain, k.URI("alice"), "407"},
		{"nobody", k.Domain, "sip:someone@elsewhere.example", "404"},
		{"x", "elsewhere.example", "sip:someone@elsewhere.example", "403"},
	} {
		RunSipp(t, SippOptions{
			Scenario: "uac_message_expect.xml",
			Target:   k.Addr,
			Service:  c.user,
			Vars:     map[string]string{"domain": c.domain, "from": c.from, "expect": c.expect},
			Name:     "expect_" + c.expect,
		})
	}
	// A wrong expectation fails the call.
	wrong := RunSipp(t, SippOptions{
		Scenario:     "uac_message_expect.xml",
		Target:       k.Addr,
		Service:      "nobody",
		Vars:         map[string]string{"domain": k.Domain, "expect": "202"},
		AllowFailure: true,
	})
	if wrong.OK() || wrong.Failed != 1 {
		t.Errorf("expecting 202 for a 404: exit %d, %d failed", wrong.ExitCode, wrong.Failed)
	}
}

func TestKamailioForwardsDomainToParleyStandIn(t *testing.T) {
	skipSIPShort(t)
	// A sipp UAS stands in for Parley: it answers MESSAGE with 200.
	parley := StartSipp(t, SippOptions{Scenario: "uas_message.xml", Calls: 2, Name: "parley"})
	k := StartKamailio(t, KamailioOptions{
		Users:         map[string]string{"alice": "alice-secret"},
		ProxyAuth:     true,
		ForwardDomain: "parley.localhost",
	})
	// No forward target yet: 503.
	RunSipp(t, SippOptions{
		Scenario: "uac_message_expect.xml",
		Target:   k.Addr,
		Service:  "x",
		Vars:     map[string]string{"domain": "parley.localhost", "expect": "503"},
	})
	k.SetForwardTo(t, parley.Addr)

	// alice, a PBX user, authenticates (407) before Kamailio forwards.
	for _, body := range []string{"to parley", "line 1\nline 2"} {
		res := RunSipp(t, SippOptions{
			Scenario:     "uac_message.xml",
			Target:       k.Addr,
			Service:      "x",
			AuthUser:     "alice",
			AuthPassword: "alice-secret",
			Vars:         map[string]string{"domain": "parley.localhost", "from": k.URI("alice"), "body": body},
		})
		if n := len(res.Messages()); n != 4 { // MESSAGE, 407, MESSAGE with credentials, 200
			t.Errorf("alice's MESSAGE took %d messages, want 4 (with a 407)", n)
		}
	}
	got := parley.WaitReceived(t, "MESSAGE", 2, 5*time.Second)
	res := parley.Wait(t)
	if res.Successful != 2 {
		t.Errorf("parley stand-in: %d successful, %d failed", res.Successful, res.Failed)
	}
	for i, want := range []string{"to parley", "line 1\nline 2"} {
		m := got[i]
		if m.RequestURI() != "sip:x@parley.localhost" || m.Body != want || !strings.Contains(m.Header("Via"), k.Addr) {
			t.Errorf("stand-in got %s with body %q, Via %q", m.RequestURI(), m.Body, m.Header("Via"))
		}
		if pa := m.Header("Proxy-Authorization"); pa != "" {
			t.Errorf("Kamailio forwarded alice's credentials: %s", pa)
		}
	}
}

func TestKamailioOverTCP(t *testing.T) {
	skipSIPShort(t)
	// The Parley stand-in listens on TCP; Kamailio forwards to it over TCP.
	parley := StartSipp(t, SippOptions{Scenario: "uas_message.xml", Transport: "tcp", Calls: 10, Name: "parley-tcp"})
	k := StartKamailio(t, KamailioOptions{
		Users:            map[string]string{"carol": "carol-secret"},
		ForwardDomain:    "parley.localhost",
		ForwardTo:        parley.Addr,
		ForwardTransport: "tcp",
	})
	// carol registers over TCP and waits for one MESSAGE.
	carol := StartSipp(t, SippOptions{
		Scenario:     "uac_register_then_uas.xml",
		Target:       k.Addr,
		Transport:    "tcp",
		Service:      "carol",
		AuthPassword: "carol-secret",
		Vars:         map[string]string{"domain": k.Domain},
		Timeout:      20 * time.Second,
	})
	k.WaitRegistered(t, "carol", 5*time.Second)

	RunSipp(t, SippOptions{
		Scenario:  "uac_message.xml",
		Target:    k.Addr,
		Transport: "tcp",
		Service:   "x",
		Vars:      map[string]string{"domain": "parley.localhost", "from": "sip:carol@" + k.Domain, "body": "over tcp"},
	})
	RunSipp(t, SippOptions{
		Scenario: "uac_message.xml",
		Target:   k.Addr,
		Service:  "carol",
		Vars:     map[string]string{"domain": k.Domain, "from": "sip:x@parley.localhost", "body": "to carol over tcp"},
	})
	if m := carol.WaitReceived(t, "MESSAGE", 1, 5*time.Second)[0]; m.Body != "to carol over tcp" || m.Transport != "TCP" {
		t.Errorf("carol got %q over %s", m.Body, m.Transport)
	}
	carol.Wait(t)

	if m := parley.WaitReceived(t, "MESSAGE", 1, 5*time.Second)[0]; m.Body != "over tcp" || m.Transport != "TCP" {
		t.Errorf("stand-in got %q over %s", m.Body, m.Transport)
	}
	// The stand-in waits for 10 calls: Stop ends it early.
	res := parley.Stop(t)
	if res.Successful != 1 || res.Failed != 0 {
		t.Errorf("stopped stand-in: exit %d, %d successful, %d failed", res.ExitCode, res.Successful, res.Failed)
	}
	t.Logf("stopped stand-in: exit %d after %v", res.ExitCode, res.Duration.Round(time.Millisecond))
}

// sendMessageViaProxy sends a MESSAGE over UDP to Kamailio as outbound proxy
// (Route: <ProxyURI>) the way Parley does and returns the final status code.
func sendMessageViaProxy(t *testing.T, k *Kamailio, to, from, body string) int {
	t.Helper()
	c, err := net.Dial("udp", k.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	callID := randomSecret(8) + "@parley.localhost"
	req := "MESSAGE " + to + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + c.LocalAddr().String() + ";branch=z9hG4bK-" + randomSecret(6) + ";rport\r\n" +
		"Route: <" + k.ProxyURI() + ">\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <" + from + ">;tag=" + randomSecret(4) + "\r\n" +
		"To: <" + to + ">\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: 1 MESSAGE\r\n" +
		"Content-Type: text/plain;charset=UTF-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	code, err := sipUDPRequest(c, req, callID)
	if err != nil {
		t.Fatalf("MESSAGE via %s: %v\n--- tail of %s ---\n%s", k.Addr, err, k.LogPath, k.Log())
	}
	return code
}

// skipSIPShort skips tests that start servers under -short (make unit).
func skipSIPShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts Kamailio and sipp; skipped with -short")
	}
}
