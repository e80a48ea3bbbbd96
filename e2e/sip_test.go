package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mid "maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// sipMessage has sipp send one MESSAGE through parley as a registered user
// of parley's domain (digest-authenticated after the 407 challenge), to
// the user part `to` of parley's domain, and expects `expect` (a status
// code) as the final answer.
func sipMessage(t *testing.T, st *stack, user, to, body, expect string) peertest.SippResult {
	t.Helper()
	vars := map[string]string{"domain": sipDomain, "body": body, "from": "sip:" + user + "@" + sipDomain, "expect": expect,
		"ctype": "text/plain;charset=UTF-8"}
	opts := peertest.SippOptions{Scenario: "uac_message_expect.xml", Target: st.sipAddr, Service: to, Vars: vars,
		Name: "message-" + user + "-" + expect, AllowFailure: true}
	if user != "" {
		scenario, err := filepath.Abs("testdata/uac_message_auth_expect.xml")
		if err != nil {
			t.Fatal(err)
		}
		opts.Scenario = scenario
		opts.Args = []string{"-au", user, "-ap", sipUsers[user]}
	}
	r := peertest.RunSipp(t, opts)
	if !r.OK() {
		t.Fatalf("sipp MESSAGE from %s to %s: want %s\n%s\nparley:\n%s", user, to, expect, exchange(r.Messages()), tail(st.log(), 20))
	}
	return r
}

// exchange prints the start lines and auth headers of a SIP exchange.
func exchange(msgs []peertest.SipMessage) string {
	var b strings.Builder
	for _, m := range msgs {
		dir := "→"
		if m.Received {
			dir = "←"
		}
		fmt.Fprintf(&b, "  %s %s", dir, m.StartLine)
		for _, h := range []string{"WWW-Authenticate", "Proxy-Authenticate", "Authorization", "Proxy-Authorization"} {
			if v := m.Header(h); v != "" {
				fmt.Fprintf(&b, " | %s: %s", h, v)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// registeredPhone is a SIP user agent (sipp) that registers user with
// parley, digest-authenticated, and then answers every MESSAGE with 200.
func registeredPhone(t *testing.T, st *stack, user string, messages int) *peertest.SippProcess {
	t.Helper()
	return peertest.StartSipp(t, peertest.SippOptions{Scenario: "uac_register_then_uas.xml", Target: st.sipAddr,
		Service: user, Vars: map[string]string{"domain": sipDomain, "messages": fmt.Sprint(messages)},
		Args: []string{"-au", user, "-ap", sipUsers[user]}, Timeout: 2 * time.Minute, Name: "phone-" + user})
}

// TestSIPMessaging: SIP MESSAGE between a SIP phone and XMPP and Matrix
// users, all four ways, with real sipp user agents.
func TestSIPMessaging(t *testing.T) {
	st, alice, bob, _ := chat(t, "synapse")
	ctx := timeout(t, 2*time.Minute)

	t.Run("sip to xmpp", func(t *testing.T) {
		sipMessage(t, st, "1001", "xmpp_alice_localhost", "hello alice, from a phone", "202")
		e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "message" })
		if !ok || e.Body != "hello alice, from a phone" || bare(e.From) != "1001+parley.localhost@matrix.localhost" {
			t.Fatalf("alice got %+v", e)
		}
	})
	t.Run("sip to matrix", func(t *testing.T) {
		sipMessage(t, st, "1001", "matrix_bob_localhost", "hello bob, from a phone", "202")
		m, ok := bob.NextMessage(ctx, nil)
		if !ok || m.Body != "hello bob, from a phone" || m.Sender != "@_sip_1001_parley.localhost:localhost" {
			t.Fatalf("bob got %+v", m)
		}
	})
	t.Run("xmpp and matrix to sip", func(t *testing.T) {
		phone := registeredPhone(t, st, "1002", 2)
		alice.Send(t, "1002+parley.localhost@matrix.localhost", "to-phone-1", "hi 1002, alice here", true)
		if e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "receipt" || e.Ev == "error" }); !ok || e.Ev != "receipt" {
			t.Fatalf("alice's message to the phone: %+v", e)
		}
		// bob starts the DM from Matrix by inviting the phone's ghost.
		resp, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []mid.UserID{"@_sip_1002_parley.localhost:localhost"},
			IsDirect: true, Preset: "trusted_private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		waitJoined(t, bob, resp.RoomID, "@_sip_1002_parley.localhost:localhost")
		if _, err := bob.SendText(ctx, resp.RoomID, "to-phone-2", "hi 1002, bob here"); err != nil {
			t.Fatal(err)
		}
		got := phone.WaitReceived(t, "MESSAGE", 2, time.Minute)
		from := map[string]string{}
		for _, m := range got {
			from[m.Body] = m.Header("From")
		}
		if f := from["hi 1002, alice here"]; !strings.Contains(f, "sip:xmpp_alice_localhost@parley.localhost") {
			t.Errorf("alice's message reached the phone from %q (bodies %v)", f, from)
		}
		if f := from["hi 1002, bob here"]; !strings.Contains(f, "sip:matrix_bob_localhost@parley.localhost") {
			t.Errorf("bob's message reached the phone from %q (bodies %v)", f, from)
		}
	})
	t.Run("offline until registered, across a restart", func(t *testing.T) {
		alice.Send(t, "1003+parley.localhost@matrix.localhost", "offline-1", "waiting for you, 1003", true)
		if e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "receipt" || e.Ev == "error" }); !ok || e.Ev != "receipt" {
			t.Fatalf("message to the offline phone: %+v", e)
		}
		st.stop(syscall.SIGTERM)
		st.start(true)
		phone := registeredPhone(t, st, "1003", 1)
		got := phone.WaitReceived(t, "MESSAGE", 1, time.Minute)
		if got[0].Body != "waiting for you, 1003" {
			t.Errorf("1003 got %q", got[0].Body)
		}
	})
}

// TestSIPContactsRegisteredFromAnotherPort: one REGISTER with rport, sent by
// sipp from a third port, binds two contacts (two sipp phones) for 1001; a
// message from XMPP to 1001 reaches both phones, not the REGISTER's source
// (RFC 3261 §10; rport alone does not make Parley answer to the flow).
func TestSIPContactsRegisteredFromAnotherPort(t *testing.T) {
	st, alice, _, _ := chat(t, "synapse")
	ctx := timeout(t, 2*time.Minute)
	var phones []*peertest.SippProcess
	var contacts []string
	for _, name := range []string{"desk", "mobile"} {
		p := peertest.StartSipp(t, peertest.SippOptions{Scenario: "uas_message.xml", Name: "phone-1001-" + name, Timeout: 2 * time.Minute})
		phones = append(phones, p)
		contacts = append(contacts, "<"+p.URI("1001")+">")
	}
	scenario, err := filepath.Abs("testdata/uac_register_contacts.xml")
	if err != nil {
		t.Fatal(err)
	}
	r := peertest.RunSipp(t, peertest.SippOptions{Scenario: scenario, Target: st.sipAddr, Service: "1001",
		Vars: map[string]string{"domain": sipDomain, "contacts": strings.Join(contacts, ", "), "expires": "600"},
		Args: []string{"-au", "1001", "-ap", sipUsers["1001"]}, Name: "register-1001-contacts", AllowFailure: true})
	if !r.OK() {
		t.Fatalf("REGISTER of two contacts:\n%s\n%s", exchange(r.Messages()), r.Diagnostics())
	}
	var bound []string
	for _, m := range r.Messages() {
		if m.Received && m.StatusCode() == 200 {
			for _, h := range m.Headers {
				if strings.EqualFold(h.Name, "Contact") || h.Name == "m" {
					bound = append(bound, h.Value)
				}
			}
		}
	}
	if len(bound) != 2 {
		t.Errorf("200 OK lists contacts %q, want both", bound)
	}

	alice.Send(t, "1001+parley.localhost@matrix.localhost", "to-both-1", "hi 1001, on every phone", true)
	if e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "receipt" || e.Ev == "error" }); !ok || e.Ev != "receipt" {
		t.Fatalf("alice's message to 1001: %+v", e)
	}
	for _, p := range phones {
		got := p.WaitReceived(t, "MESSAGE", 1, time.Minute)
		if got[0].Body != "hi 1001, on every phone" || !strings.Contains(got[0].StartLine, p.Addr) {
			t.Errorf("%s got %q %q", p.Name, got[0].StartLine, got[0].Body)
		}
	}
}

// waitJoined waits until user has joined room (the ghost accepts invites).
func waitJoined(t *testing.T, c *peertest.MatrixClient, room mid.RoomID, user mid.UserID) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		members, err := c.JoinedMembers(t.Context(), room)
		if err == nil {
			if _, ok := members.Joined[user]; ok {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not join %s", user, room)
}

// TestSIPRejections: what parley refuses, and that it keeps working.
func TestSIPRejections(t *testing.T) {
	st, alice, _, _ := chat(t, "synapse")
	ctx := timeout(t, time.Minute)

	t.Run("unauthenticated relay to another domain", func(t *testing.T) {
		r := peertest.RunSipp(t, peertest.SippOptions{Scenario: "uac_message_expect.xml", Target: st.sipAddr, Service: "someone",
			Vars: map[string]string{"domain": "elsewhere.example", "from": "sip:mallory@evil.example", "expect": "403", "body": "relay me"}})
		if !r.OK() {
			t.Fatalf("want 403:\n%s", r.Diagnostics())
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		r := peertest.RunSipp(t, peertest.SippOptions{Scenario: "uac_register_auth.xml", Target: st.sipAddr, Service: "1001",
			Vars: map[string]string{"domain": sipDomain}, Args: []string{"-au", "1001", "-ap", "not-the-password"}, AllowFailure: true})
		if r.OK() {
			t.Fatal("REGISTER with a wrong password succeeded")
		}
		var last string
		for _, m := range r.Messages() {
			if m.Received {
				last = m.StartLine
			}
		}
		if !strings.Contains(last, " 401 ") {
			t.Errorf("last answer to a wrong password: %q, want 401 again", last)
		}
	})
	t.Run("oversized body", func(t *testing.T) {
		sipMessage(t, st, "1001", "xmpp_alice_localhost", strings.Repeat("x", 3000), "413")
	})
	t.Run("unmapped address", func(t *testing.T) {
		sipMessage(t, st, "1001", "nobody", "anyone?", "404")
	})
	t.Run("garbage does no harm", func(t *testing.T) {
		conn, err := net.Dial("udp", st.sipAddr)
		if err != nil {
			t.Fatal(err)
		}
		for _, junk := range []string{"\x00\x01\x02 garbage", "MESSAGE sip:x@parley.localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK1\r\nContent-Length: 99\r\n\r\ntrunc",
			"INVITE", strings.Repeat("A", 1400)} {
			_, _ = conn.Write([]byte(junk))
		}
		_ = conn.Close()
		tcp, err := net.Dial("tcp", st.sipAddr)
		if err == nil {
			_, _ = tcp.Write([]byte("MESSAGE sip:x@parley.localhost SIP/2.0\r\nContent-Length: 5\r\n\r\n"))
			_ = tcp.Close()
		}
		// Everything still works.
		sipMessage(t, st, "1001", "xmpp_alice_localhost", "still here", "202")
		if e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "message" }); !ok || e.Body != "still here" {
			t.Fatalf("after garbage alice got %+v", e)
		}
	})
}

// TestSIPPeerMode puts parley beside a PBX (a real Kamailio serving
// pbx.localhost): parley reaches the PBX's users through it as outbound
// proxy, and the PBX hands parley the MESSAGEs for parley.localhost, which
// parley accepts because the PBX is a trusted peer for pbx.localhost.
func TestSIPPeerMode(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: end-to-end tests need real servers")
	}
	port := peertest.FreePort(t)
	kam := peertest.StartKamailio(t, peertest.KamailioOptions{Domain: "pbx.localhost",
		Users: map[string]string{"2001": "pw-2001", "2002": "pw-2002"}, ProxyAuth: true,
		ForwardDomain: sipDomain, ForwardTo: fmt.Sprintf("127.0.0.1:%d", port)})
	st := newStack(t, stackSettings{homeserver: "synapse", sipPort: port, sipProxy: kam.Addr, sipPeerDomain: "pbx.localhost"})
	st.prosody.Register(t, "alice", "alicepass")
	st.start(true)
	alice := peertest.ConnectXMPP(t, st.prosody, "alice", "alicepass")
	ctx := timeout(t, time.Minute)

	// XMPP → a phone registered on the PBX, through the outbound proxy.
	phone := peertest.StartSipp(t, peertest.SippOptions{Scenario: "uac_register_then_uas.xml", Target: kam.Addr, Service: "2001",
		Vars: map[string]string{"domain": "pbx.localhost", "messages": "1"}, AuthUser: "2001", AuthPassword: "pw-2001",
		Timeout: time.Minute, Name: "pbx-phone-2001"})
	kam.WaitRegistered(t, "2001", 10*time.Second)
	alice.Send(t, "2001+pbx.localhost@matrix.localhost", "to-pbx-1", "hello 2001 behind the PBX", true)
	got := phone.WaitReceived(t, "MESSAGE", 1, 30*time.Second)
	if got[0].Body != "hello 2001 behind the PBX" || !strings.Contains(got[0].Header("From"), "sip:xmpp_alice_localhost@parley.localhost") {
		t.Errorf("2001 got %q from %q", got[0].Body, got[0].Header("From"))
	}

	// A PBX user → XMPP: the PBX authenticates its user and relays to parley.
	r := peertest.RunSipp(t, peertest.SippOptions{Scenario: "uac_message.xml", Target: kam.Addr, Service: "xmpp_alice_localhost",
		Vars:     map[string]string{"domain": sipDomain, "from": "sip:2002@pbx.localhost", "body": "hello alice, from the PBX"},
		AuthUser: "2002", AuthPassword: "pw-2002", Name: "pbx-2002-to-alice"})
	if !r.OK() {
		t.Fatalf("MESSAGE through the PBX:\n%s", exchange(r.Messages()))
	}
	e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "message" })
	if !ok || e.Body != "hello alice, from the PBX" || bare(e.From) != "2002+pbx.localhost@matrix.localhost" {
		t.Fatalf("alice got %+v", e)
	}
}
