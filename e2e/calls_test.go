package e2e

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleygw/parley/internal/peertest"
)

// g711aPcap is sipp's recording of one side of a G.711 A-law call.
const g711aPcap = "/usr/share/sip-tester/g711a.pcap"

// pcapRTP returns the RTP packets (UDP payloads) of an Ethernet/IPv4 pcap
// file, in order.
func pcapRTP(t testing.TB, path string) [][]byte {
	t.Helper()
	d, err := os.ReadFile(path)
	if err != nil {
		peertest.Require(t, "sipp's g711a.pcap (package sip-tester)", err)
	}
	if len(d) < 24 || binary.LittleEndian.Uint32(d) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(d[20:]) != 1 {
		t.Fatalf("%s: not a little-endian Ethernet pcap", path)
	}
	var out [][]byte
	for o := 24; o+16 <= len(d); {
		n := int(binary.LittleEndian.Uint32(d[o+8:]))
		frame := d[o+16 : o+16+n]
		o += 16 + n
		if len(frame) < 14+20+8 || frame[12] != 0x08 || frame[13] != 0x00 || frame[14+9] != 17 {
			continue // not IPv4/UDP
		}
		ihl := int(frame[14]&0x0f) * 4
		out = append(out, frame[14+ihl+8:])
	}
	return out
}

// phoneMedia is the media socket of a test phone whose signalling sipp does:
// it keeps every RTP packet Parley sends it and echoes each one back.
type phoneMedia struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  [][]byte
	from netip.AddrPort
	done chan struct{}
}

func newPhoneMedia(t testing.TB) *phoneMedia {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	m := &phoneMedia{conn: c, done: make(chan struct{})}
	go m.run()
	t.Cleanup(func() { _ = c.Close(); <-m.done })
	return m
}

func (m *phoneMedia) port() int { return m.conn.LocalAddr().(*net.UDPAddr).Port }

func (m *phoneMedia) run() {
	defer close(m.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := m.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m.mu.Lock()
		m.got = append(m.got, bytes.Clone(buf[:n]))
		m.from = from
		m.mu.Unlock()
		_, _ = m.conn.WriteToUDPAddrPort(buf[:n], from)
	}
}

func (m *phoneMedia) packets() ([][]byte, netip.AddrPort) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([][]byte(nil), m.got...), m.from
}

// startCallee registers a sipp phone as user and answers one call with
// uas_call.xml, its media at m.
func startCallee(t *testing.T, st *stack, user string, m *phoneMedia, hangup string) *peertest.SippProcess {
	t.Helper()
	abs := testdataPath(t, "uas_call.xml")
	p := peertest.StartSipp(t, peertest.SippOptions{
		Scenario: "uac_register_then_uas.xml", OOCScenario: abs, Target: st.sipAddr,
		Service: user, AuthPassword: sipUsers[user], Name: "callee-" + user,
		Vars: map[string]string{
			"domain": sipDomain, "messages": "1", "rtp_ip": "127.0.0.1", "rtp_port": fmt.Sprint(m.port()),
			"talk": "8000", "hangup": hangup,
		},
	})
	waitLog(t, p, "REGISTERED", 10*time.Second)
	return p
}

// waitLog waits until sipp's log has a line containing s.
func waitLog(t testing.TB, p *peertest.SippProcess, s string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); ; {
		for _, l := range p.Logs() {
			if strings.Contains(l, s) {
				return
			}
		}
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("sipp never logged %q; log: %v", s, p.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SIP → SIP: a phone plays sipp's G.711 recording through Parley to another
// registered phone. Every packet arrives byte for byte, the far side's
// packets come back through Parley, and a BYE from either end ends both
// legs.
func TestCallSIPToSIP(t *testing.T) {
	want := pcapRTP(t, g711aPcap)
	st := newStack(t, stackSettings{})
	st.start(true)
	for i, hangup := range []string{"caller", "callee"} {
		t.Run("hangup by "+hangup, func(t *testing.T) {
			media := newPhoneMedia(t)
			callee := startCallee(t, st, "1002", media, hangup)
			caller := peertest.StartSipp(t, peertest.SippOptions{
				Scenario: testdataPath(t, "uac_call.xml"), Target: st.sipAddr, Service: "1001",
				AuthPassword: sipUsers["1001"], Name: "caller",
				Vars: map[string]string{"domain": sipDomain, "to": "1002", "talk": "8000", "hangup": hangup},
			})
			// Mid-call, a third party sprays every port of Parley's media
			// range with RTP (the "RTP bleed" attack): none of it may
			// reach the callee.
			if hangup == "caller" {
				for deadline := time.Now().Add(10 * time.Second); len(firstPackets(media)) < 50 && time.Now().Before(deadline); {
					time.Sleep(20 * time.Millisecond)
				}
				sprayMediaRange(t)
			}
			caller.Wait(t)
			callee.Wait(t)

			got, from := media.packets()
			for j, p := range got {
				if len(p) >= 12 && binary.BigEndian.Uint32(p[8:]) == intruderSSRC {
					t.Fatalf("packet %d of the callee's came from the intruder: %x", j, p)
				}
			}
			if len(got) != len(want) {
				t.Errorf("the callee got %d RTP packets, the caller sent %d", len(got), len(want))
			}
			for j := range min(len(got), len(want)) {
				if !bytes.Equal(got[j], want[j]) {
					t.Fatalf("packet %d differs:\n got %x\nwant %x", j, got[j], want[j])
				}
			}
			if from.Port() < mediaPortMin || from.Port() > mediaPortMin+999 {
				t.Errorf("media came from %s, outside Parley's range", from)
			}
			// The callee's echo went back to the caller: both legs
			// counted it, in and out.
			waitMetric(t, st, `parley_calls_ended_total{reason="normal"}`, float64(i+1))
			_, m := st.get("/metrics")
			in := metricValue(m, `parley_media_packets_received_total{network="sip"}`)
			out := metricValue(m, `parley_media_packets_sent_total{network="sip"}`)
			if in < float64(2*len(want)*(i+1)) || out < float64(2*len(want)*(i+1)) {
				t.Errorf("media counted: %v in, %v out; want at least %d each way", in, out, 2*len(want)*(i+1))
			}
			if v := metricValue(m, `parley_media_packets_dropped_total{network="sip"}`); hangup == "caller" && v < 1 {
				t.Errorf("the intruder's packets were not dropped: %v", v)
			}
			if v := metricValue(m, "parley_calls_active"); v != 0 {
				t.Errorf("calls still active: %v", v)
			}
		})
	}
}

// SIP → SIP, and the caller changes codec once answered: its re-INVITE from
// µ-law to A-law reaches the callee as Parley's own re-INVITE in the callee's
// dialog (the callee's sipp checks that it offers A-law), the callee's 200
// answers A-law, and so does Parley's 200 to the caller (the caller's sipp
// checks). The A-law recording then reaches the callee byte for byte.
func TestCallSIPToSIPCodecChange(t *testing.T) {
	want := pcapRTP(t, g711aPcap)
	st := newStack(t, stackSettings{})
	st.start(true)
	media := newPhoneMedia(t)
	callee := peertest.StartSipp(t, peertest.SippOptions{
		Scenario: "uac_register_then_uas.xml", OOCScenario: testdataPath(t, "uas_call_reinvite.xml"), Target: st.sipAddr,
		Service: "1002", AuthPassword: sipUsers["1002"], Name: "callee-1002",
		Vars: map[string]string{"domain": sipDomain, "messages": "1", "rtp_ip": "127.0.0.1", "rtp_port": fmt.Sprint(media.port())},
	})
	waitLog(t, callee, "REGISTERED", 10*time.Second)
	caller := peertest.StartSipp(t, peertest.SippOptions{
		Scenario: testdataPath(t, "uac_call_reinvite.xml"), Target: st.sipAddr, Service: "1001",
		AuthPassword: sipUsers["1001"], Name: "caller",
		Vars: map[string]string{"domain": sipDomain, "to": "1002", "talk": "8000"},
	})
	caller.Wait(t)
	callee.Wait(t)

	got, _ := media.packets()
	if len(got) != len(want) {
		t.Errorf("the callee got %d RTP packets, the caller sent %d", len(got), len(want))
	}
	for j := range min(len(got), len(want)) {
		if !bytes.Equal(got[j], want[j]) {
			t.Fatalf("packet %d differs:\n got %x\nwant %x", j, got[j], want[j])
		}
	}
	waitMetric(t, st, `parley_calls_ended_total{reason="normal"}`, 1)
}

// waitMetric waits until a series of /metrics reaches want.
func waitMetric(t *testing.T, st *stack, series string, want float64) {
	t.Helper()
	var v float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		_, m := st.get("/metrics")
		if v = metricValue(m, series); v >= want {
			return
		}
	}
	t.Fatalf("%s = %v, want %v", series, v, want)
}

// SIP → SIP with two real phones: baresip 1001 calls baresip 1002 through
// Parley; each sends its own tone and hears the other's; when the caller
// hangs up, the callee's call ends too.
func TestCallSIPToSIPAudio(t *testing.T) {
	st := newStack(t, stackSettings{})
	st.start(true)
	callee := peertest.StartBaresip(t, peertest.BaresipOptions{
		User: "1002", Password: sipUsers["1002"], Domain: sipDomain, Registrar: st.sipAddr, ToneHz: 1000,
	})
	callee.WaitLog(t, "200 OK", 10*time.Second) // registered
	caller := peertest.StartBaresip(t, peertest.BaresipOptions{
		User: "1001", Password: sipUsers["1001"], Domain: sipDomain, Registrar: st.sipAddr, ToneHz: 440,
		Dial: "sip:1002@" + sipDomain, QuitAfter: 7 * time.Second,
	})
	caller.WaitLog(t, "Call established", 15*time.Second)
	caller.Wait(t, 20*time.Second)
	callee.WaitLog(t, "terminated", 10*time.Second)

	heard, rate := caller.Received(t)
	if share := peertest.ToneShare(heard, rate, 1000, time.Second); share < 0.5 {
		t.Errorf("the caller did not hear the callee's 1 kHz tone: share %.3f of %d samples", share, len(heard))
	}
	heard, rate = callee.Received(t)
	if share := peertest.ToneShare(heard, rate, 440, time.Second); share < 0.5 {
		t.Errorf("the callee did not hear the caller's 440 Hz tone: share %.3f of %d samples", share, len(heard))
	}
	waitMetric(t, st, `parley_calls_ended_total{reason="normal"}`, 1)
}

// testdataPath is the absolute path of a file of e2e/testdata, for peers
// that run in a directory of their own.
func testdataPath(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Every way a call ends reaches the other leg with the reason of the one
// table (calls/reasons.go): a phone calls another through Parley, and the
// callee refuses, rings out, is cancelled, or answers and sends no media.
func TestCallEndings(t *testing.T) {
	st := newStack(t, stackSettings{})
	st.start(true)
	tests := []struct {
		name           string
		ending, status string // the callee's
		cancel         string // the caller's
		caller, callee []string
	}{
		{"busy", "refuse", "486", "no", []string{"FINAL 486"}, nil},
		{"decline", "refuse", "603", "no", []string{"FINAL 603"}, nil},
		{"no answer", "ring", "", "no", []string{"FINAL 408"}, []string{`CANCEL reason= Q.850;cause=19;text="No answer"`}},
		{"caller cancels", "ring", "", "yes", []string{"FINAL 487"}, []string{`CANCEL reason= SIP;cause=487;text="Request terminated"`}},
		{"media timeout", "answer", "", "no", []string{"ANSWERED", `BYE reason= Q.850;cause=102;text="Media timeout"`},
			[]string{`BYE reason= Q.850;cause=102;text="Media timeout"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			media := newPhoneMedia(t)
			ooc := endingScenario(t, cmp.Or(tt.status, "486"))
			callee := peertest.StartSipp(t, peertest.SippOptions{
				Scenario: "uac_register_then_uas.xml", OOCScenario: ooc, Target: st.sipAddr,
				Service: "1002", AuthPassword: sipUsers["1002"], Name: "callee",
				Vars: map[string]string{"domain": sipDomain, "messages": "1", "ending": tt.ending,
					"rtp_ip": "127.0.0.1", "rtp_port": fmt.Sprint(media.port())},
			})
			waitLog(t, callee, "REGISTERED", 10*time.Second)
			t.Cleanup(func() { unregister(t, st, "1002") })
			caller := peertest.RunSipp(t, peertest.SippOptions{
				Scenario: testdataPath(t, "uac_call_ending.xml"), Target: st.sipAddr, Service: "1001",
				AuthPassword: sipUsers["1001"], Name: "caller", Timeout: 30 * time.Second,
				Vars: map[string]string{"domain": sipDomain, "to": "1002", "cancel": tt.cancel,
					"rtp_ip": "127.0.0.1", "rtp_port": fmt.Sprint(newPhoneMedia(t).port())},
			})
			callee.Wait(t)
			wantLogs(t, "caller", caller.Logs(), tt.caller)
			wantLogs(t, "callee", callee.Logs(), tt.callee)
		})
	}
	waitMetric(t, st, "parley_calls_active", 0)
	_, m := st.get("/metrics")
	for reason, n := range map[string]float64{"busy": 1, "declined": 1, "no-answer": 1, "cancelled": 1, "media-timeout": 1} {
		if v := metricValue(m, fmt.Sprintf(`parley_calls_ended_total{reason=%q}`, reason)); v != n {
			t.Errorf("calls ended %s: %v, want %v", reason, v, n)
		}
	}
}

// A call still ringing when Parley is SIGKILLed ends properly at the next
// start: the caller's INVITE gets 500 with a Reason (the phone stops waiting
// for an answer), and the callee, still ringing, gets a CANCEL.
func TestRingingCallEndedAfterCrash(t *testing.T) {
	st := newStack(t, stackSettings{})
	st.start(true)
	callee := peertest.StartSipp(t, peertest.SippOptions{
		Scenario: "uac_register_then_uas.xml", OOCScenario: endingScenario(t, "486"), Target: st.sipAddr,
		Service: "1002", AuthPassword: sipUsers["1002"], Name: "callee",
		Vars: map[string]string{"domain": sipDomain, "messages": "1", "ending": "ring",
			"rtp_ip": "127.0.0.1", "rtp_port": fmt.Sprint(newPhoneMedia(t).port())},
	})
	waitLog(t, callee, "REGISTERED", 10*time.Second)
	caller := peertest.StartSipp(t, peertest.SippOptions{
		Scenario: testdataPath(t, "uac_call_ending.xml"), Target: st.sipAddr, Service: "1001",
		AuthPassword: sipUsers["1001"], Name: "caller", Timeout: 60 * time.Second,
		Vars: map[string]string{"domain": sipDomain, "to": "1002", "cancel": "no",
			"rtp_ip": "127.0.0.1", "rtp_port": fmt.Sprint(newPhoneMedia(t).port())},
	})
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ringing(caller.Messages()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the caller never heard the callee ring")
		}
	}
	st.stop(syscall.SIGKILL)
	st.start(true)
	caller.Wait(t)
	callee.Wait(t)
	wantLogs(t, "caller", caller.Logs(), []string{"FINAL 500"})
	wantLogs(t, "callee", callee.Logs(), []string{`CANCEL reason= Q.850;cause=41;text="Temporary failure"`})
}

// ringing reports whether a phone's sipp received a 180.
func ringing(msgs []peertest.SipMessage) bool {
	for _, m := range msgs {
		if m.Received && m.StatusCode() == 180 {
			return true
		}
	}
	return false
}

// endingScenario writes uas_call_ending.xml with status as the final
// response of its "refuse" ending (sipp reads status codes as it loads a
// scenario) and returns its path.
func endingScenario(t *testing.T, status string) string {
	t.Helper()
	scenario, err := os.ReadFile(testdataPath(t, "uas_call_ending.xml"))
	if err != nil {
		t.Fatal(err)
	}
	ooc := filepath.Join(t.TempDir(), "uas_call_ending.xml")
	if err := os.WriteFile(ooc, bytes.ReplaceAll(scenario, []byte("[$status]"), []byte(status)), 0o600); err != nil {
		t.Fatal(err)
	}
	return ooc
}

// wantLogs checks that each wanted line is in a sipp's log, in order.
func wantLogs(t *testing.T, who string, logs, want []string) {
	t.Helper()
	i := 0
	for _, l := range logs {
		if i < len(want) && strings.Contains(l, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("%s's log lacks %q; it has:\n%s", who, want[i], strings.Join(logs, "\n"))
	}
}

// unregister removes every registered contact of user (Contact: *,
// Expires: 0), so that the next phone registered as user is its only one.
func unregister(t testing.TB, st *stack, user string) {
	t.Helper()
	peertest.RunSipp(t, peertest.SippOptions{
		Scenario: testdataPath(t, "uac_register_contacts.xml"), Target: st.sipAddr, Service: user,
		AuthPassword: sipUsers[user], Name: "unregister-" + user,
		Vars: map[string]string{"domain": sipDomain, "contacts": "*", "expires": "0"},
	})
}

// intruderSSRC marks the RTP packets of a third party.
const intruderSSRC = 0x0bad0bad

func firstPackets(m *phoneMedia) [][]byte { p, _ := m.packets(); return p }

// sprayMediaRange sends three RTP packets to every port of Parley's media
// range from a socket no leg knows.
func sprayMediaRange(t *testing.T) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pkt := make([]byte, 12+240)
	pkt[0], pkt[1] = 0x80, 8
	binary.BigEndian.PutUint32(pkt[8:], intruderSSRC)
	for range 3 {
		for port := mediaPortMin; port <= mediaPortMin+999; port++ {
			_, _ = c.WriteToUDPAddrPort(pkt, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A person in a call shows on the phone to their watchers on other
// networks, and as before after it: an XMPP user who watches phone 1002
// sees it busy, "On the phone", while 1001 calls it, then offline again.
func TestCallShowsOnThePhone(t *testing.T) {
	st := newStack(t, stackSettings{})
	st.prosody.Register(t, "alice", "alicepass")
	st.start(true)
	alice := peertest.ConnectXMPP(t, st.prosody, "alice", "alicepass")
	const phone = "1002+parley.localhost@matrix.localhost"
	alice.Subscribe(t, phone)
	callee := peertest.StartBaresip(t, peertest.BaresipOptions{
		User: "1002", Password: sipUsers["1002"], Domain: sipDomain, Registrar: st.sipAddr, ToneHz: 1000,
	})
	callee.WaitLog(t, "200 OK", 10*time.Second)
	time.Sleep(500 * time.Millisecond) // the subscription is recorded
	caller := peertest.StartBaresip(t, peertest.BaresipOptions{
		User: "1001", Password: sipUsers["1001"], Domain: sipDomain, Registrar: st.sipAddr, ToneHz: 440,
		Dial: "sip:1002@" + sipDomain, QuitAfter: 6 * time.Second,
	})
	caller.WaitLog(t, "Call established", 30*time.Second)
	waitXMPPPresence(t, alice, phone, "dnd", "On the phone")
	caller.Wait(t, 20*time.Second)
	ctx := timeout(t, 30*time.Second)
	if _, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool {
		return e.Ev == "presence" && bare(e.From) == phone && e.Type == "unavailable"
	}); !ok {
		t.Fatal("after the call, the phone did not go back to offline")
	}
}
