package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mid "maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// toneDetected checks a voipclient result line: the tone it listened for
// was there, and media came.
func toneDetected(t *testing.T, who string, res map[string]any) {
	t.Helper()
	ratio, _ := res["tone_ratio"].(float64)
	packets, _ := res["packets_received"].(float64)
	if detected, _ := res["tone_detected"].(bool); !detected || packets < 50 {
		t.Errorf("%s did not hear the phone's tone: %v", who, res)
	}
	t.Logf("%s: tone ratio %.3f over %.0f packets", who, ratio, packets)
}

// phoneHeard checks a baresip phone's recording for hz.
func phoneHeard(t *testing.T, who string, p *peertest.Baresip, hz float64) {
	t.Helper()
	heard, rate := p.Received(t)
	share := peertest.ToneShare(heard, rate, hz, time.Second)
	if share < 0.5 {
		t.Errorf("%s did not hear %.0f Hz: share %.3f of %d samples", who, hz, share, len(heard))
	}
	t.Logf("%s: %.0f Hz share %.3f of %d samples", who, hz, share, len(heard))
}

// SIP → Matrix: a phone (baresip) calls a Matrix user's address; the user's
// client (aiortc) answers; each hears the other's tone; the phone hangs up
// and the client gets m.call.hangup.
func TestCallSIPToMatrix(t *testing.T) {
	st := newStack(t, stackSettings{})
	st.start(true)
	st.hs.Register(t, "carol", "carolpassword")
	client := peertest.StartVoIPClient(t, "--homeserver", st.hs.URL, "--user", "carol", "--password", "carolpassword",
		"--answer", "--tone", "440", "--detect", "1000", "--control", "440", "--timeout", "60")
	client.Next("ready", 30*time.Second)
	phone := peertest.StartBaresip(t, peertest.BaresipOptions{
		User: "1001", Password: sipUsers["1001"], Domain: sipDomain, Registrar: st.sipAddr, ToneHz: 1000,
		Dial: "sip:matrix_carol_localhost@" + sipDomain, QuitAfter: 12 * time.Second,
	})
	client.Next("invite", 30*time.Second)
	phone.WaitLog(t, "Call established", 30*time.Second)
	res := client.Next("result", 40*time.Second)
	if res["ended_by"] != "remote" {
		t.Errorf("the phone's hangup did not end the Matrix call: %v", res)
	}
	toneDetected(t, "the Matrix client", res)
	phone.Wait(t, 20*time.Second)
	phoneHeard(t, "the phone", phone, 440)
}

// Matrix → SIP: the Matrix user calls the phone's ghost in their DM; the
// phone (baresip) rings and answers; each hears the other; the Matrix
// user's hangup sends the phone a BYE.
func TestCallMatrixToSIP(t *testing.T) {
	st := newStack(t, stackSettings{})
	st.start(true)
	phone := peertest.StartBaresip(t, peertest.BaresipOptions{
		User: "1002", Password: sipUsers["1002"], Domain: sipDomain, Registrar: st.sipAddr, ToneHz: 1000,
	})
	phone.WaitLog(t, "200 OK", 10*time.Second) // registered
	carol := peertest.ConnectMatrix(t, st.hs, "carol", "carolpassword")
	ghost := mid.UserID(fmt.Sprintf("@_sip_1002_%s:localhost", sipDomain))
	room, err := carol.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Invite: []mid.UserID{ghost}, IsDirect: true, Preset: "trusted_private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	waitJoined(t, carol, room.RoomID, ghost)
	client := peertest.StartVoIPClient(t, "--homeserver", st.hs.URL, "--user", "carol", "--password", "carolpassword",
		"--room", room.RoomID.String(), "--call", ghost.String(), "--tone", "440", "--detect", "1000", "--control", "440",
		"--hangup-after", "5", "--timeout", "60")
	client.Next("answer", 30*time.Second)
	res := client.Next("result", 40*time.Second)
	toneDetected(t, "the Matrix client", res)
	phone.WaitLog(t, "terminated", 10*time.Second)
	phoneHeard(t, "the phone", phone, 440)
	waitMetric(t, st, `parley_calls_ended_total{reason="normal"}`, 1)
	// The Matrix client's RTCP reports on the media it got reach the
	// metrics, as a phone's do.
	waitMetric(t, st, `parley_media_reported_loss_ratio_count{network="matrix"}`, 1)
}

// Ring all devices: a phone calls Erin's alias; Erin has a phone (1003)
// and a Matrix account; both ring, her Matrix client answers, and her phone
// stops ringing with a CANCEL that says the call was answered elsewhere.
func TestCallRingsEveryDevice(t *testing.T) {
	st := newStack(t, stackSettings{})
	st.start(true)
	st.hs.Register(t, "erin", "erinpassword")
	desk := peertest.StartBaresip(t, peertest.BaresipOptions{
		Name: "erin-desk-phone", User: "1003", Password: sipUsers["1003"], Domain: sipDomain, Registrar: st.sipAddr,
		ToneHz: 700, Manual: true, Trace: true,
	})
	desk.WaitLog(t, "200 OK", 10*time.Second) // registered
	client := peertest.StartVoIPClient(t, "--homeserver", st.hs.URL, "--user", "erin", "--password", "erinpassword",
		"--answer", "--tone", "440", "--detect", "1000", "--control", "440", "--timeout", "60")
	client.Next("ready", 30*time.Second)
	caller := peertest.StartBaresip(t, peertest.BaresipOptions{
		User: "1001", Password: sipUsers["1001"], Domain: sipDomain, Registrar: st.sipAddr, ToneHz: 1000,
		Dial: "sip:erin@" + sipDomain, QuitAfter: 12 * time.Second,
	})
	desk.WaitLog(t, "INVITE sip:1003", 20*time.Second) // the desk phone rings
	client.Next("invite", 30*time.Second)
	caller.WaitLog(t, "Call established", 30*time.Second)
	desk.WaitLog(t, `Reason: SIP;cause=200;text="Call completed elsewhere"`, 10*time.Second)
	res := client.Next("result", 40*time.Second)
	toneDetected(t, "Erin's Matrix client", res)
	caller.Wait(t, 20*time.Second)
	phoneHeard(t, "the caller", caller, 440)
	_, m := st.get("/metrics")
	if v := metricValue(m, `parley_calls_ended_total{reason="normal"}`); v != 1 {
		t.Errorf("calls ended normally: %v", v)
	}
}

// Restart: Parley is killed (SIGKILL) during two calls, phone to phone and
// phone to Matrix. At the next start it ends what it left behind: every
// phone gets a BYE and the Matrix client an m.call.hangup, so no device
// stays in a dead call.
func TestCallsEndedAfterCrash(t *testing.T) {
	st := newStack(t, stackSettings{})
	st.start(true)
	st.hs.Register(t, "carol", "carolpassword")
	client := peertest.StartVoIPClient(t, "--homeserver", st.hs.URL, "--user", "carol", "--password", "carolpassword",
		"--answer", "--tone", "440", "--detect", "1000", "--timeout", "90")
	client.Next("ready", 30*time.Second)
	callee := peertest.StartBaresip(t, peertest.BaresipOptions{
		User: "1002", Password: sipUsers["1002"], Domain: sipDomain, Registrar: st.sipAddr, ToneHz: 1000,
	})
	callee.WaitLog(t, "200 OK", 10*time.Second)
	caller := peertest.StartBaresip(t, peertest.BaresipOptions{
		User: "1001", Password: sipUsers["1001"], Domain: sipDomain, Registrar: st.sipAddr, ToneHz: 440,
		Dial: "sip:1002@" + sipDomain,
	})
	toMatrix := peertest.StartBaresip(t, peertest.BaresipOptions{
		User: "1003", Password: sipUsers["1003"], Domain: sipDomain, Registrar: st.sipAddr, ToneHz: 1000,
		Dial: "sip:matrix_carol_localhost@" + sipDomain,
	})
	caller.WaitLog(t, "Call established", 30*time.Second)
	toMatrix.WaitLog(t, "Call established", 30*time.Second)
	client.Next("media", 30*time.Second)

	st.stop(syscall.SIGKILL)
	st.start(true)
	for _, p := range []*peertest.Baresip{caller, callee, toMatrix} {
		p.WaitLog(t, "terminated", 30*time.Second)
	}
	if res := client.Next("result", 30*time.Second); res["ended_by"] != "remote" {
		t.Errorf("the Matrix call was not ended by Parley after its restart: %v", res)
	}
	// Four legs were left: two SIP legs of the phone call, the phone's leg
	// and the Matrix leg of the other.
	log := st.log()
	if n := strings.Count(log, "sip call left over by an earlier run ended"); n != 3 {
		t.Errorf("%d SIP legs ended after the restart, want 3", n)
	}
	if n := strings.Count(log, "leftover call hung up"); n != 1 {
		t.Errorf("%d Matrix legs hung up after the restart, want 1", n)
	}
}
