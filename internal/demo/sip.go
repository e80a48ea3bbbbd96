package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// phoneCall is the SIP part of the scripted conversation. The phone, a sipp
// user agent (peertest's uac_register_then_uas.xml), registers extension 1001
// with Parley over UDP, answering the digest challenge; alice writes to its
// XMPP ghost and bob invites its Matrix ghost to a direct chat and writes,
// and the phone receives both MESSAGEs and hangs up. From the same address
// the phone then sends a MESSAGE to alice and one to bob's alias, which he
// reads on Matrix (uac_message.xml, which answers Parley's 407 challenge),
// and unregisters, so that nothing is left for a phone that is gone. Every
// sipp runs in its own process group, stopped by the clients' cleanups
// (Ctrl-C included). It returns bob's direct chat with the phone's ghost.
func (d *demo) phoneCall(clients *runner, alice *peertest.XMPPClient, inbox *xmppInbox, bob *peertest.MatrixClient) id.RoomID {
	fmt.Printf("\nconnecting the phone: extension %s of %s (sipp) registers with Parley at %s over UDP\n",
		phoneUser, sipDomain, d.sipAddr)
	quiet := clients.quiet() // the later sipp runs: no progress lines amid the transcript
	var phone *peertest.SippProcess
	var registered string
	d.timed("phone", func() {
		phone = peertest.StartSipp(clients, peertest.SippOptions{
			Scenario: "uac_register_then_uas.xml", Target: d.sipAddr, Service: phoneUser,
			AuthUser: phoneUser, AuthPassword: phonePassword,
			Vars:    map[string]string{"domain": sipDomain, "messages": "2"},
			Timeout: 3 * waitTimeout, Name: "phone-" + phoneUser, AllowFailure: true,
		})
		registered = d.waitRegistered(quiet, phone)
	})

	fmt.Println("\ntranscript, continued: the phone")
	t0 := time.Now()
	say("sip", "%s", registered)

	// alice writes to the phone's XMPP ghost.
	toPhone := []string{
		"Hello 1001, Alice here, writing from XMPP to " + phoneGhostJID + ".",
		"Hi phone, it's Bob from Matrix, in a direct chat with " + phoneGhostMXID + ".",
	}
	sent := time.Now()
	alice.Send(clients, phoneGhostJID, "demo-sip-1", toPhone[0], true)
	say("xmpp", "%s → %s: %s", aliceJID, phoneGhostJID, toPhone[0])
	d.sayPhoneGot(quiet, phone, toPhone[0], sent)
	e := inbox.wait(d, "the receipt for demo-sip-1", func(e peertest.XMPPEvent) bool {
		return e.Ev == "receipt" && e.ID == "demo-sip-1"
	})
	say("xmpp", "%s → %s: XEP-0184 receipt for %s (Parley stored the message)", bare(e.From), aliceJID, e.ID)

	// bob opens a direct chat with the phone's Matrix ghost and writes.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Invite: []id.UserID{phoneGhostMXID}, IsDirect: true, Preset: "trusted_private_chat",
	})
	if err != nil {
		d.fail("bob could not open a direct chat with %s: %v", phoneGhostMXID, err)
	}
	say("matrix", "%s invited %s to a direct chat, %s", bob.UserID, phoneGhostMXID, resp.RoomID)
	d.waitJoined(bob, resp.RoomID, phoneGhostMXID)
	say("matrix", "%s joined %s (Parley accepts invites for the phone)", phoneGhostMXID, resp.RoomID)
	sent = time.Now()
	if _, err := bob.SendText(ctx, resp.RoomID, "demo-sip-2", toPhone[1]); err != nil {
		d.fail("bob could not send to the phone: %v", err)
	}
	say("matrix", "%s → %s: %s", bob.UserID, phoneGhostMXID, toPhone[1])
	d.sayPhoneGot(quiet, phone, toPhone[1], sent)

	// The phone ends after the two MESSAGEs; the same address answers alice.
	if res := phone.Wait(quiet); !res.OK() {
		d.fail("the phone (sipp) failed: %s", res.Diagnostics())
	}
	answer := "Hi Alice, this is extension 1001 answering from a SIP phone."
	say("sip", "%s → %s: %s", phoneURI, aliceSIPURI, answer)
	sent = time.Now()
	res := d.runSipp(quiet, "the phone's MESSAGE to alice", peertest.SippOptions{
		Scenario: "uac_message.xml", Target: d.sipAddr, Service: aliceSIPUser,
		AuthUser: phoneUser, AuthPassword: phonePassword, LocalPort: phone.Port,
		Vars: map[string]string{"domain": sipDomain, "from": phoneURI, "body": answer},
		Name: "phone-" + phoneUser + "-message",
	})
	say("sip", "Parley → %s: %s", phoneURI, statusLines(res.Messages(), "MESSAGE"))
	e = inbox.wait(d, fmt.Sprintf("the phone's message %q", answer), func(e peertest.XMPPEvent) bool {
		return e.Ev == "message" && e.Body == answer
	})
	nick := ""
	if e.Nick != "" {
		nick = " (" + e.Nick + ")"
	}
	say("xmpp", "%s%s → %s: %s  [%s]", bare(e.From), nick, aliceJID, e.Body, round(time.Since(sent)))

	// The phone answers bob too, by his SIP alias; he reads it on Matrix, in
	// the direct chat he opened with the phone's ghost.
	answer = "Hi Bob, extension 1001 again: this one reaches you on Matrix."
	say("sip", "%s → %s: %s", phoneURI, bobAliasSIPURI, answer)
	sent = time.Now()
	res = d.runSipp(quiet, "the phone's MESSAGE to bob", peertest.SippOptions{
		Scenario: "uac_message.xml", Target: d.sipAddr, Service: bobAlias,
		AuthUser: phoneUser, AuthPassword: phonePassword, LocalPort: phone.Port,
		Vars: map[string]string{"domain": sipDomain, "from": phoneURI, "body": answer},
		Name: "phone-" + phoneUser + "-message-bob",
	})
	say("sip", "Parley → %s: %s", phoneURI, statusLines(res.Messages(), "MESSAGE"))
	mctx, mcancel := context.WithTimeout(context.Background(), waitTimeout)
	defer mcancel()
	m, ok := bob.NextMessage(mctx, func(m peertest.MatrixMessage) bool { return m.Body == answer })
	if !ok {
		d.fail("bob's Matrix client did not receive the phone's message %q within %s", answer, waitTimeout)
	}
	if m.Room != resp.RoomID {
		d.fail("the phone's message reached bob in %s, not in the direct chat %s", m.Room, resp.RoomID)
	}
	name := ""
	if dn, err := bob.GetDisplayName(mctx, m.Sender); err == nil && dn.DisplayName != "" {
		name = " (" + dn.DisplayName + ")"
	}
	say("matrix", "%s%s → %s: %s  [%s]", m.Sender, name, bob.UserID, m.Body, round(time.Since(sent)))

	d.phoneInLobby(quiet, inbox, bob)

	res = d.runSipp(quiet, "the phone's unregistration", peertest.SippOptions{
		Scenario: "uac_register_auth.xml", Target: d.sipAddr, Service: phoneUser,
		AuthUser: phoneUser, AuthPassword: phonePassword, LocalPort: phone.Port,
		Vars: map[string]string{"domain": sipDomain, "expires": "0"},
		Name: "phone-" + phoneUser + "-unregister",
	})
	say("sip", "%s unregistered (REGISTER, Expires: 0): %s", phoneURI, statusLines(res.Messages(), "REGISTER"))
	d.timings = append(d.timings, timing{"sip conversation", time.Since(t0)})
	quiet.close()
	return resp.RoomID
}

// waitRegistered waits until the phone's REGISTER got its 200 OK and returns
// a transcript line about it.
func (d *demo) waitRegistered(quiet *runner, phone *peertest.SippProcess) string {
	deadline := time.Now().Add(waitTimeout)
	for {
		msgs := phone.Messages()
		for _, m := range msgs {
			if m.Received && m.Method() == "REGISTER" && m.StatusCode() == 200 {
				contact := m.Header("Contact")
				return fmt.Sprintf("%s registered with Parley: %s; contact %s", phoneURI, statusLines(msgs, "REGISTER"), contact)
			}
		}
		if phone.Exited() || time.Now().After(deadline) {
			d.fail("the phone did not register within %s: %s", waitTimeout, phone.Stop(quiet).Diagnostics())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sayPhoneGot waits until the phone received a MESSAGE with body and prints
// it as the phone sees it.
func (d *demo) sayPhoneGot(quiet *runner, phone *peertest.SippProcess, body string, sent time.Time) {
	deadline := time.Now().Add(waitTimeout)
	for {
		exited := phone.Exited() // before reading: a phone that ended has logged all
		for _, m := range phone.Received("MESSAGE") {
			if strings.TrimRight(m.Body, "\r\n") != body {
				continue
			}
			from, name := nameAddr(m.Header("From"))
			to, _ := nameAddr(m.Header("To"))
			if name != "" {
				name = " (" + name + ")"
			}
			say("sip", "%s%s → %s: %s  [%s]", from, name, to, body, round(time.Since(sent)))
			return
		}
		switch {
		case exited:
			d.fail("the phone (sipp) ended before it received %q: %s", body, phone.Stop(quiet).Diagnostics())
		case time.Now().After(deadline):
			d.fail("the phone did not receive %q within %s", body, waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runSipp runs one sipp of the phone to its end (in its own process group,
// stopped by quiet's cleanups) and fails the demo unless it succeeded.
func (d *demo) runSipp(quiet *runner, what string, opts peertest.SippOptions) peertest.SippResult {
	opts.Timeout, opts.AllowFailure = waitTimeout, true
	res := peertest.StartSipp(quiet, opts).Wait(quiet)
	if !res.OK() {
		d.fail("%s failed: %s", what, res.Diagnostics())
	}
	return res
}

// statusLines lists the responses to method among the messages sipp
// received, in order: "401 Unauthorized, then 200 OK".
func statusLines(msgs []peertest.SipMessage, method string) string {
	var got []string
	for _, m := range msgs {
		if !m.Received || m.IsRequest() || m.Method() != method {
			continue
		}
		got = append(got, strings.TrimPrefix(m.StartLine, "SIP/2.0 "))
	}
	if len(got) == 0 {
		return "no answer logged"
	}
	return strings.Join(got, ", then ")
}

// waitJoined waits until user has joined room (Parley accepts invites for
// ghosts).
func (d *demo) waitJoined(c *peertest.MatrixClient, room id.RoomID, user id.UserID) {
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		members, err := c.JoinedMembers(ctx, room)
		cancel()
		if err == nil {
			if _, ok := members.Joined[user]; ok {
				return
			}
		}
		if time.Now().After(deadline) {
			d.fail("%s did not join %s within %s (last error: %v)", user, room, waitTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nameAddr splits a From or To header value, `"Name" <sip:u@h>;tag=x` or
// `sip:u@h;tag=x`, into the URI and the display name.
func nameAddr(v string) (uri, name string) {
	if i := strings.IndexByte(v, '<'); i >= 0 {
		name = strings.Trim(strings.TrimSpace(v[:i]), `"`)
		uri, _, _ = strings.Cut(v[i+1:], ">")
		return uri, name
	}
	uri, _, _ = strings.Cut(v, ";")
	return strings.TrimSpace(uri), ""
}

// sipPortOr returns port when 127.0.0.1:port is free for both UDP and TCP
// (Parley listens on both), otherwise a port that is.
func sipPortOr(r *runner, port int) int {
	if udpTCPFree(port) {
		return port
	}
	for range 100 {
		if p := peertest.FreePort(r); udpTCPFree(p) {
			return p
		}
	}
	r.Fatalf("no port of 127.0.0.1 is free for both UDP and TCP")
	return 0
}

func udpTCPFree(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer func() { _ = l.Close() }()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	_ = u.Close()
	return true
}

// phoneInLobby has the phone post in the group chat by writing to the
// portal's SIP address: alice reads it in the MUC and bob in #lobby, each
// from the phone's participant there. The phone then leaves the room with
// /leave, before it unregisters.
func (d *demo) phoneInLobby(quiet *runner, inbox *xmppInbox, bob *peertest.MatrixClient) {
	body := "Hello lobby, extension 1001 writing from a SIP phone."
	say("sip", "%s → %s: %s", phoneURI, roomSIP, body)
	sent := time.Now()
	res := d.runSipp(quiet, "the phone's post in the lobby", peertest.SippOptions{
		Scenario: "uac_message.xml", Target: d.sipAddr, Service: "lobby",
		AuthUser: phoneUser, AuthPassword: phonePassword,
		Vars: map[string]string{"domain": sipDomain, "from": phoneURI, "body": body},
		Name: "phone-" + phoneUser + "-lobby",
	})
	say("sip", "Parley → %s: %s", phoneURI, statusLines(res.Messages(), "MESSAGE"))
	e := inbox.wait(d, fmt.Sprintf("the phone's post %q", body), func(e peertest.XMPPEvent) bool {
		return e.Ev == "groupchat" && e.Room == roomMUC && e.Body == body
	})
	say("xmpp", "%s/%s → %s: %s  [%s]", roomMUC, e.Nick, roomMUC, e.Body, round(time.Since(sent)))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	m, ok := bob.NextMessage(ctx, func(m peertest.MatrixMessage) bool { return m.Room == d.lobby && m.Body == body })
	if !ok {
		d.fail("bob did not see the phone's post %q in %s within %s", body, roomAlias, waitTimeout)
	}
	say("matrix", "%s in %s: %s  [%s]", m.Sender, roomAlias, m.Body, round(time.Since(sent)))

	res = d.runSipp(quiet, "the phone's /leave", peertest.SippOptions{
		Scenario: "uac_message.xml", Target: d.sipAddr, Service: "lobby",
		AuthUser: phoneUser, AuthPassword: phonePassword,
		Vars: map[string]string{"domain": sipDomain, "from": phoneURI, "body": "/leave"},
		Name: "phone-" + phoneUser + "-lobby-leave",
	})
	say("sip", "%s → %s: /leave (%s); its participants leave the MUC and #lobby", phoneURI, roomSIP, statusLines(res.Messages(), "MESSAGE"))
}
