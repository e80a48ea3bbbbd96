package peertest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BaresipOptions configure one baresip user agent: a real SIP phone that
// registers, calls or answers on its own, sends a sine tone and records
// what it receives (module sndfile).
type BaresipOptions struct {
	// Name labels the phone in logs.
	Name string
	// User and Password are the account's digest credentials at Domain,
	// registered through Registrar (host:port). Without Registrar the
	// phone does not register.
	User, Password, Domain, Registrar string
	// ToneHz is the frequency of the tone it sends (ausine).
	ToneHz int
	// Dial, when set, is the URI it calls once registered; otherwise it
	// answers the first call at once, unless Manual: then it only rings.
	Dial   string
	Manual bool
	// Trace logs every SIP message baresip sends and receives (-s).
	Trace bool
	// DialAfter delays the call (default 1 s, the registration's time).
	DialAfter time.Duration
	// QuitAfter ends baresip (hanging up its call) after this long.
	QuitAfter time.Duration
	// RTPPorts is baresip's media port range, "17000-17099" (default: from
	// 17000, a range of its own per phone).
	RTPPorts string
}

// Baresip is a running baresip.
type Baresip struct {
	Dir  string
	Log  string
	proc *process
}

var (
	baresipMu     sync.Mutex
	baresipRanges = map[string]bool{}
	baresipPorts  = map[int]bool{}
)

// StartBaresip starts baresip with its own configuration directory.
func StartBaresip(t TB, o BaresipOptions) *Baresip {
	t.Helper()
	bin, err := lookBinary("baresip")
	Require(t, "baresip", err)
	dir := t.TempDir()
	if o.Name == "" {
		o.Name = "baresip-" + o.User
	}
	baresipMu.Lock()
	if o.RTPPorts == "" {
		for base := 17000; ; base += 100 {
			r := fmt.Sprintf("%d-%d", base, base+99)
			if !baresipRanges[r] {
				baresipRanges[r] = true
				o.RTPPorts = r
				break
			}
		}
	}
	// baresip binds its SIP port (UDP, TCP) and the next one (TLS): a
	// port whose successor is free too, and that no other phone of this
	// process was given (it may not have bound its ports yet).
	port := FreePort(t)
	for baresipPorts[port] || baresipPorts[port+1] || !tcpFree(port+1) || !udpFree(port+1) {
		port = FreePort(t)
	}
	baresipPorts[port], baresipPorts[port+1] = true, true
	baresipMu.Unlock()
	rec := filepath.Join(dir, "rec")
	if err := os.MkdirAll(rec, 0o755); err != nil {
		t.Fatal(err)
	}
	config := strings.Join([]string{
		"poll_method poll",
		fmt.Sprintf("sip_listen 127.0.0.1:%d", port),
		"net_interface 127.0.0.1",
		"audio_player aufile," + filepath.Join(dir, "played.wav"),
		fmt.Sprintf("audio_source ausine,%d", o.ToneHz),
		"audio_alert aufile," + filepath.Join(dir, "alert.wav"),
		"ausrc_srate 48000", "ausrc_channels 2", "auplay_srate 48000",
		"rtp_ports " + o.RTPPorts,
		"snd_path " + rec,
		"module_path /usr/lib/baresip/modules",
		"module g711.so", "module ausine.so", "module aufile.so", "module sndfile.so",
		"module_app account.so", "module_app menu.so",
		"",
	}, "\n")
	mode := "auto"
	if o.Manual {
		mode = "manual"
	}
	account := fmt.Sprintf("<sip:%s@%s>;answermode=%s", o.User, o.Domain, mode)
	if o.Registrar != "" {
		account += fmt.Sprintf(";auth_pass=%s;outbound=\"sip:%s\";regint=300", o.Password, o.Registrar)
	} else {
		account += ";regint=0"
	}
	writeFile(t, filepath.Join(dir, "config"), config)
	writeFile(t, filepath.Join(dir, "accounts"), account+"\n")
	writeFile(t, filepath.Join(dir, "contacts"), "")
	argv := []string{bin, "-f", dir}
	if o.Trace {
		argv = append(argv, "-s")
	}
	if o.QuitAfter > 0 {
		argv = append(argv, "-t", fmt.Sprint(int(o.QuitAfter.Seconds())))
	}
	b := &Baresip{Dir: dir, Log: filepath.Join(dir, "baresip.log")}
	if o.Dial != "" {
		after := o.DialAfter
		if after == 0 {
			after = time.Second
		}
		// baresip runs -e commands at once; give the registration its time
		// by starting the caller later.
		time.Sleep(after)
		argv = append(argv, "-e", "/dial "+o.Dial)
	}
	b.proc = startProcess(t, o.Name, dir, b.Log, syscall.SIGTERM, nil, nil, argv...)
	t.Cleanup(b.proc.stop)
	return b
}

func tcpFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

func udpFree(port int) bool {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// WaitLog waits until baresip's log has a line containing s.
func (b *Baresip) WaitLog(t TB, s string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if data, _ := os.ReadFile(b.Log); strings.Contains(string(data), s) {
			return
		}
		if b.proc.exited() || time.Now().After(deadline) {
			t.Fatalf("peertest: %s never logged %q\n--- tail of %s ---\n%s", b.proc.name, s, b.Log, logTail(b.Log))
		}
	}
}

// Wait waits for baresip to exit, at most d.
func (b *Baresip) Wait(t TB, d time.Duration) {
	t.Helper()
	select {
	case <-b.proc.done:
	case <-time.After(d):
		t.Fatalf("peertest: %s still running after %v\n--- tail of %s ---\n%s", b.proc.name, d, b.Log, logTail(b.Log))
	}
}

// Received returns what baresip received in its last call, decoded: mono
// samples and their rate (the sndfile module's "-dec.wav").
func (b *Baresip) Received(t TB) ([]float64, int) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(b.Dir, "rec", "*-dec.wav"))
	if len(files) == 0 {
		t.Fatalf("peertest: %s recorded nothing\n--- tail of %s ---\n%s", b.proc.name, b.Log, logTail(b.Log))
	}
	sort.Strings(files)
	samples, rate, err := ReadWAV(files[len(files)-1])
	if err != nil {
		t.Fatal(err)
	}
	return samples, rate
}

// ReadWAV reads a 16-bit PCM WAV file and returns its first channel.
func ReadWAV(path string) ([]float64, int, error) {
	d, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	if len(d) < 12 || string(d[:4]) != "RIFF" || string(d[8:12]) != "WAVE" {
		return nil, 0, fmt.Errorf("%s: not a WAV file", path)
	}
	var channels, bits, rate int
	for o := 12; o+8 <= len(d); {
		id, n := string(d[o:o+4]), int(binary.LittleEndian.Uint32(d[o+4:]))
		body := d[o+8 : min(o+8+n, len(d))]
		switch id {
		case "fmt ":
			if len(body) < 16 || binary.LittleEndian.Uint16(body) != 1 {
				return nil, 0, fmt.Errorf("%s: not PCM", path)
			}
			channels, rate, bits = int(binary.LittleEndian.Uint16(body[2:])), int(binary.LittleEndian.Uint32(body[4:])), int(binary.LittleEndian.Uint16(body[14:]))
		case "data":
			if bits != 16 || channels == 0 {
				return nil, 0, fmt.Errorf("%s: %d-bit with %d channels, want 16-bit PCM", path, bits, channels)
			}
			frame := 2 * channels
			out := make([]float64, 0, len(body)/frame)
			for i := 0; i+frame <= len(body); i += frame {
				out = append(out, float64(int16(binary.LittleEndian.Uint16(body[i:])))/32768)
			}
			return out, rate, nil
		}
		o += 8 + n + n%2
	}
	return nil, 0, errors.New(path + ": no data chunk")
}

// ToneShare returns which share of the signal's energy is at hz (Goertzel),
// over the samples past the first skip seconds: near 1 for a pure tone at
// hz, near 0 for silence or another tone.
func ToneShare(samples []float64, rate int, hz float64, skip time.Duration) float64 {
	from := min(int(skip.Seconds()*float64(rate)), len(samples))
	s := samples[from:]
	if len(s) == 0 {
		return 0
	}
	w := 2 * math.Pi * hz / float64(rate)
	coeff := 2 * math.Cos(w)
	var s1, s2, energy float64
	for _, x := range s {
		s0 := x + coeff*s1 - s2
		s2, s1 = s1, s0
		energy += x * x
	}
	if energy == 0 {
		return 0
	}
	power := s1*s1 + s2*s2 - coeff*s1*s2
	// A pure tone of N samples has Goertzel power N²A²/4 and energy NA²/2.
	return power / (energy * float64(len(s)) / 2)
}
