package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// The calls of the demo: each side sends a tone of its own and listens for
// the other's, so that what a transcript line says was heard was heard.
const (
	phoneToneHz = 1000 // the phone's (baresip's) tone
	bobToneHz   = 440  // bob's VoIP client's tone

	// Parley's media ports (calls.media.ports), as in config.example.yaml:
	// below the ephemeral ports that the servers' free ports come from and
	// above the phones' (baresip takes 17000 onwards). A pair that another
	// program holds is skipped.
	mediaPorts = "20000-20999"

	// phoneCallFor is how long the calling phone stays up: registration,
	// setup and about four seconds of media, then it hangs up.
	phoneCallFor = 5 * time.Second
	// bobTalks is how many seconds of media bob's client waits for before
	// it hangs up the call it placed.
	bobTalks = 3
	// toneSkip leaves out the first second of a recording (setup, jitter
	// buffer) when measuring the tone in it.
	toneSkip = time.Second
)

// requireCallPeers ends the demo at once, before any server starts, when the
// peers of the calls are missing: baresip (the phone) and the venv of the
// Matrix VoIP client (aiortc, matrix-nio).
func requireCallPeers(r *runner) {
	_, err := exec.LookPath("baresip")
	peertest.Require(r, "baresip", err)
	peertest.VoIPPython(r)
}

// calls is the calls part of the scripted conversation, after the messages.
// The phone, now a real SIP user agent (baresip, extension 1001), calls bob
// by his SIP alias; his Matrix VoIP client (voipclient.py: aiortc's WebRTC,
// matrix-nio) answers the m.call.invite from the phone's ghost; the phone
// hangs up after a few seconds. Then bob calls the phone back, from the
// direct chat dm he has with its ghost; the phone answers on its own, and
// bob hangs up. Each side reports how much of what it heard was the other's
// tone.
func (d *demo) calls(clients *runner, dm id.RoomID) {
	fmt.Printf("\ncalls: extension %s is now a real SIP phone (baresip, sending a %d Hz tone); bob answers\n", phoneUser, phoneToneHz)
	fmt.Printf("and calls with a Matrix VoIP client (voipclient.py: aiortc's WebRTC, matrix-nio; sending %d Hz).\n", bobToneHz)
	fmt.Printf("Parley relays the media on 127.0.0.1, UDP ports %s.\n", mediaPorts)
	t0 := time.Now()
	d.callMatrix(clients)
	d.callBack(clients, dm)
	d.timings = append(d.timings, timing{"calls", time.Since(t0)})
}

// callMatrix: the phone calls bob, whose client answers; the phone hangs up.
func (d *demo) callMatrix(clients *runner) {
	// A scope that prints: peertest's baresip logs no progress lines, and
	// the VoIP client prints its standard error only when the demo fails.
	call := clients.scope()
	defer call.close()
	bob := peertest.StartVoIPClient(call, "--homeserver", d.hs.URL, "--user", "bob", "--password", bobPassword,
		"--answer", "--tone", fmt.Sprint(bobToneHz), "--detect", fmt.Sprint(phoneToneHz), "--control", fmt.Sprint(bobToneHz),
		"--timeout", "60")
	bob.Next("ready", waitTimeout)

	fmt.Println("\ntranscript, continued: the phone calls bob")
	say("sip", "%s (%d Hz tone) dials %s, bob's SIP alias", phoneURI, phoneToneHz, bobAliasSIPURI)
	phone := peertest.StartBaresip(call, peertest.BaresipOptions{
		Name: "phone-" + phoneUser + "-calls", User: phoneUser, Password: phonePassword, Domain: sipDomain,
		Registrar: d.sipAddr, ToneHz: phoneToneHz, Dial: bobAliasSIPURI, QuitAfter: phoneCallFor,
	})
	dialed := time.Now() // StartBaresip returns as the phone starts, dialing at once
	room := bob.Next("room", waitTimeout)
	inv := bob.Next("invite", waitTimeout)
	say("matrix", "%v → %s: m.call.invite in %v  [%s]", inv["sender"], bobMXID, room["room_id"], round(time.Since(dialed)))
	bob.Next("answer_sent", waitTimeout)
	say("matrix", "%s → %v: m.call.answer (his client answers, %d Hz tone)", bobMXID, inv["sender"], bobToneHz)
	peer := d.phoneLog(call, phone, "Call established: ")
	say("sip", "%s: call established with %s (200 OK)  [%s]", phoneURI, peer, round(time.Since(dialed)))

	phone.Wait(call, phoneCallFor+waitTimeout)
	hungUp := time.Now()
	say("sip", "%s hangs up (BYE): call with %s", phoneURI, d.phoneLog(call, phone, "Call with "))
	h := bob.Next("hangup", waitTimeout)
	say("matrix", "%v → %s: %v (reason %v): the call ended  [%s]", inv["sender"], bobMXID, h["type"], h["reason"], round(time.Since(hungUp)))
	res := bob.Next("result", waitTimeout)
	if res["ended_by"] != "remote" {
		d.fail("the phone's hangup did not end bob's call: %v", res)
	}
	d.sayHeard(res, phone)
}

// callBack: bob calls the phone's ghost in the direct chat dm; the phone
// answers on its own; bob hangs up.
func (d *demo) callBack(clients *runner, dm id.RoomID) {
	// A scope that prints: peertest's baresip logs no progress lines, and
	// the VoIP client prints its standard error only when the demo fails.
	call := clients.scope()
	defer call.close()
	phone := peertest.StartBaresip(call, peertest.BaresipOptions{
		Name: "phone-" + phoneUser + "-answers", User: phoneUser, Password: phonePassword, Domain: sipDomain,
		Registrar: d.sipAddr, ToneHz: phoneToneHz,
	})
	phone.WaitLog(call, "200 OK", waitTimeout) // registered

	fmt.Println("\ntranscript, continued: bob calls the phone back")
	bob := peertest.StartVoIPClient(call, "--homeserver", d.hs.URL, "--user", "bob", "--password", bobPassword,
		"--room", dm.String(), "--call", phoneGhostMXID, "--tone", fmt.Sprint(bobToneHz),
		"--detect", fmt.Sprint(phoneToneHz), "--control", fmt.Sprint(bobToneHz),
		"--hangup-after", fmt.Sprint(bobTalks), "--timeout", "60")
	bob.Next("invite_sent", waitTimeout)
	called := time.Now()
	say("matrix", "%s → %s: m.call.invite in %s, the direct chat with the phone's ghost (%d Hz tone)",
		bobMXID, phoneGhostMXID, dm, bobToneHz)
	caller := d.phoneLog(call, phone, "answering call on line 1 from ")
	caller, _, _ = strings.Cut(caller, " ")
	say("sip", "%s → %s: INVITE; the phone answers on its own (200 OK, %d Hz tone)  [%s]",
		caller, phoneURI, phoneToneHz, round(time.Since(called)))
	bob.Next("answer", waitTimeout)
	say("matrix", "%s → %s: m.call.answer  [%s]", phoneGhostMXID, bobMXID, round(time.Since(called)))

	bob.Next("hangup_sent", time.Duration(bobTalks)*time.Second+waitTimeout)
	hungUp := time.Now()
	say("matrix", "%s hangs up after %d s of media (m.call.hangup)", bobMXID, bobTalks)
	ended := d.phoneLog(call, phone, "Call with ")
	if !strings.Contains(ended, " terminated") {
		d.fail("the phone's call did not end: %s", ended)
	}
	say("sip", "%s → %s: BYE: call with %s  [%s]", caller, phoneURI, ended, round(time.Since(hungUp)))
	res := bob.Next("result", waitTimeout)
	d.sayHeard(res, phone)
}

// phoneLog waits until the phone's log has a line with prefix and returns
// the rest of that line.
func (d *demo) phoneLog(call *runner, phone *peertest.Baresip, prefix string) string {
	phone.WaitLog(call, prefix, waitTimeout)
	b, err := os.ReadFile(phone.Log)
	if err != nil {
		d.fail("the phone's log: %v", err)
	}
	_, rest, _ := strings.Cut(string(b), prefix)
	line, _, _ := strings.Cut(rest, "\n")
	return strings.TrimSpace(line)
}

// sayHeard prints what each side heard of the other's tone, from bob's
// client's result line and the phone's recording, and fails the demo when
// either did not hear it.
func (d *demo) sayHeard(res map[string]any, phone *peertest.Baresip) {
	ratio, _ := res["tone_ratio"].(float64)
	control, _ := res["control_ratio"].(float64)
	packets, _ := res["packets_received"].(float64)
	detected, _ := res["tone_detected"].(bool)
	if !detected || packets < 50 {
		d.fail("bob's client did not hear the phone's %d Hz tone: %v", phoneToneHz, res)
	}
	say("matrix", "%s heard the phone's %d Hz tone: ratio %.2f over %.0f RTP packets (his own %d Hz: %.2f)",
		bobMXID, phoneToneHz, ratio, packets, bobToneHz, control)

	heard, rate := phone.Received(d.r)
	share := peertest.ToneShare(heard, rate, bobToneHz, toneSkip)
	own := peertest.ToneShare(heard, rate, phoneToneHz, toneSkip)
	if share < 0.5 {
		d.fail("the phone did not hear bob's %d Hz tone: share %.3f of %d samples", bobToneHz, share, len(heard))
	}
	say("sip", "%s heard bob's %d Hz tone: share %.2f of %.1f s recorded (its own %d Hz: %.2f)",
		phoneURI, bobToneHz, share, float64(len(heard))/float64(rate), phoneToneHz, own)
}
