package sip

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// tortureAnswer is the answer the adapter must give to one message of
// testdata/torture, as testdata/torture/answers.txt says.
type tortureAnswer struct {
	name    string // file name without .sip
	section string // the RFC 4475 section that discusses it
	status  int    // 0: no answer at all (the message is a response)
	reason  string // a word the reason phrase must hold, or ""
}

// tortureAnswers reads testdata/torture/answers.txt: one line per message,
// "name section status [reason word]", status "none" for no answer.
func tortureAnswers(t testing.TB) []tortureAnswer {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "torture", "answers.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var out []tortureAnswer
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 3 {
			t.Fatalf("answers.txt: %q: want name, section, status", line)
		}
		a := tortureAnswer{name: fields[0], section: fields[1], reason: strings.Join(fields[3:], " ")}
		if fields[2] != "none" {
			if a.status, err = strconv.Atoi(fields[2]); err != nil {
				t.Fatalf("answers.txt: %q: %v", line, err)
			}
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTortureAnswersListed keeps answers.txt and the messages in step.
func TestTortureAnswersListed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "torture", "*.sip"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, a := range tortureAnswers(t) {
		if listed[a.name] {
			t.Errorf("%s is listed twice", a.name)
		}
		listed[a.name] = true
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".sip")
		if !listed[name] {
			t.Errorf("%s has no line in answers.txt", name)
		}
		delete(listed, name)
	}
	for name := range listed {
		t.Errorf("%s is listed but not in testdata/torture", name)
	}
}

// rawFields returns the values of the header lines of msg named name or
// its compact form.
func rawFields(msg []byte, name, compact string) []string {
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	var out []string
	for _, line := range strings.Split(string(head), "\r\n")[1:] {
		n, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n = strings.TrimSpace(n)
		if strings.EqualFold(n, name) || (compact != "" && strings.EqualFold(n, compact)) {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// tortureKey tells the answers to a message from others: its Call-ID, or
// its CSeq when it has none.
func tortureKey(msg []byte) string {
	return tortureKeys(msg)[0]
}

// tortureKeys returns the keys an answer to msg may have: one per Call-ID
// (a message may have several), or its CSeq.
func tortureKeys(msg []byte) []string {
	var keys []string
	for _, id := range rawFields(msg, "Call-ID", "i") {
		keys = append(keys, "Call-ID "+id)
	}
	if len(keys) == 0 {
		cseq := rawFields(msg, "CSeq", "")
		keys = append(keys, "CSeq "+strings.Join(strings.Fields(strings.Join(cseq, " ")), " "))
	}
	return keys
}

// tortureClient is where the replayed messages come from. RFC 4475's
// requests carry no rport, so their answers go to the source address at
// the port of the Via (5060, or 5050 for one of them): the client binds
// those ports on a loopback address of its own, chosen at random, so that
// it clashes with no other test.
type tortureClient struct {
	conns []*net.UDPConn // conns[0] sends, from port 5060
	got   chan []byte
}

func newTortureClient(t *testing.T) *tortureClient {
	t.Helper()
	var last error
	for range 20 {
		ip := net.IPv4(127, byte(1+rand.IntN(250)), byte(rand.IntN(256)), byte(1+rand.IntN(250)))
		c := &tortureClient{got: make(chan []byte, 64)}
		for _, port := range []int{5060, 5050} {
			conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
			if err != nil {
				last = err
				break
			}
			c.conns = append(c.conns, conn)
		}
		if len(c.conns) < 2 {
			for _, conn := range c.conns {
				_ = conn.Close()
			}
			continue
		}
		for _, conn := range c.conns {
			t.Cleanup(func() { _ = conn.Close() })
			go func() {
				for {
					buf := make([]byte, 65536)
					n, err := conn.Read(buf)
					if err != nil {
						return
					}
					c.got <- buf[:n]
				}
			}()
		}
		return c
	}
	t.Fatalf("no loopback address with ports 5060 and 5050 free: %v", last)
	return nil
}

// send writes msg as one datagram to addr.
func (c *tortureClient) send(t *testing.T, addr string, msg []byte) {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.conns[0].WriteTo(msg, ua); err != nil {
		t.Fatal(err)
	}
}

// tortureResponse is a response as the client reads it: loosely, since an
// answer to a malformed request may copy its malformed headers.
type tortureResponse struct {
	version string
	code    int
	reason  string
}

func parseTortureResponse(b []byte) (*tortureResponse, error) {
	line, _, _ := strings.Cut(string(b), "\r\n")
	parts := strings.SplitN(line, " ", 3)
	if len(parts) != 3 || !strings.HasPrefix(parts[0], "SIP/") {
		return nil, fmt.Errorf("not a status line: %q", line)
	}
	code, err := strconv.Atoi(parts[1])
	if err != nil {
		return nil, fmt.Errorf("status line %q: %w", line, err)
	}
	return &tortureResponse{version: parts[0], code: code, reason: parts[2]}, nil
}

// final waits for the first final response to msg, skipping provisional
// ones and answers to earlier messages; it returns nil when none came in
// time, and the answers to other messages it saw.
func (c *tortureClient) final(msg []byte, wait time.Duration) (*tortureResponse, []string) {
	keys := map[string]bool{}
	for _, k := range tortureKeys(msg) {
		keys[k] = true
	}
	timeout := time.After(wait)
	var others []string
	for {
		select {
		case b := <-c.got:
			res, err := parseTortureResponse(b)
			if err != nil {
				others = append(others, err.Error())
				continue
			}
			if !keys[tortureKey(b)] {
				others = append(others, firstLine(string(b))+" ("+tortureKey(b)+")")
				continue
			}
			if res.code >= 200 {
				return res, others
			}
		case <-timeout:
			return nil, others
		}
	}
}

// TestTorture replays RFC 4475's messages (testdata/torture) as UDP
// datagrams, each at an adapter of its own (several messages share a
// transaction's branch, as the RFC means each to stand alone), and checks
// each answer against answers.txt: a final response with the status listed
// and the reason naming the fault, or none at all for responses.
func TestTorture(t *testing.T) {
	client := newTortureClient(t)
	for _, want := range tortureAnswers(t) {
		t.Run(want.name, func(t *testing.T) {
			a := startAdapter(t, nil, nil)
			msg, err := os.ReadFile(filepath.Join("testdata", "torture", want.name+".sip"))
			if err != nil {
				t.Fatal(err)
			}
			client.send(t, a.udp, msg)
			if want.status == 0 {
				p := client.probe("after-" + want.name)
				client.send(t, a.udp, p)
				res, others := client.final(p, 5*time.Second)
				if res == nil {
					t.Fatalf("no answer to the OPTIONS sent after it")
				}
				for _, o := range others {
					for _, k := range tortureKeys(msg) {
						if strings.HasSuffix(o, "("+k+")") {
							t.Errorf("%s (RFC 4475 §%s) was answered: %s", want.name, want.section, o)
						}
					}
				}
				return
			}
			res, others := client.final(msg, 5*time.Second)
			if res == nil {
				t.Fatalf("%s (RFC 4475 §%s): no answer, want %d (also seen: %q)", want.name, want.section, want.status, others)
			}
			if res.code != want.status || !strings.Contains(strings.ToLower(res.reason), strings.ToLower(want.reason)) {
				t.Errorf("%s (RFC 4475 §%s): %d %s, want %d %s", want.name, want.section, res.code, res.reason, want.status, want.reason)
			}
			if res.version != "SIP/2.0" {
				t.Errorf("answered with version %q", res.version)
			}
		})
	}
}

// TestTortureSurvived replays all of RFC 4475's messages at one adapter:
// afterwards it still answers OPTIONS and takes a MESSAGE.
func TestTortureSurvived(t *testing.T) {
	a := startAdapter(t, nil, func(c *Config) {
		c.RateLimit = RateLimit{PerSecond: 1000, Burst: 1000}
	})
	client := newTortureClient(t)
	msgs, err := tortureMessages()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		client.send(t, a.udp, m)
	}
	p := client.probe("after-all")
	client.send(t, a.udp, p)
	if res, _ := client.final(p, 5*time.Second); res == nil || res.code != 200 {
		t.Fatalf("OPTIONS after the torture messages: %v", res)
	}
	phone := newPeerUA(t)
	if res := phone.doAuth(newMessage("UDP", a.udp, "sip:alice@"+testDomain, ghost, "still here"), "alice", alicePassword); res.StatusCode != 202 {
		t.Fatalf("MESSAGE after the torture messages: %d %s", res.StatusCode, res.Reason)
	}
	if m := a.host.waitDispatch(t); m.Body != "still here" {
		t.Errorf("dispatched %q", m.Body)
	}
}

// probe returns an OPTIONS from the client's sending socket with rport, so
// that its answer comes back there.
func (c *tortureClient) probe(branch string) []byte {
	return []byte(strings.Replace(options(branch), "127.0.0.1:5999;rport", c.conns[0].LocalAddr().String()+";rport", 1))
}

var errNoTortureFiles = errors.New("no files in testdata/torture")

// tortureMessages returns the raw messages of testdata/torture.
func tortureMessages() ([][]byte, error) {
	files, err := filepath.Glob(filepath.Join("testdata", "torture", "*.sip"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errNoTortureFiles
	}
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// FuzzMalformed runs raw bytes (seeds: RFC 4475's messages) through what
// the adapter does with datagrams sipgo cannot parse or key: nothing may
// panic, and an answer is a SIP/2.0 response with a 4xx or 505 status whose
// copied headers cannot inject lines. What the adapter's parser takes goes
// through checkSyntax.
func FuzzMalformed(f *testing.F) {
	msgs, err := tortureMessages()
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range msgs {
		f.Add(m)
	}
	f.Add([]byte("OPTIONS sip:a@b\r\nVia: SIP/2.0/UDP h\r\n\r\n"))
	f.Add([]byte("X  y\r\nv: SIP/2.0/UDP [::1]:0;rport\r\nTo: a\nb\r\n\r\n"))
	a := goldenAdapter(f)
	p := newParser()
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = hasRFC3261Branch(data)
		if m, ok := diagnose(data, p); ok {
			res := string(m.response("parley"))
			r, err := parseTortureResponse([]byte(res))
			if err != nil {
				t.Fatalf("answer %q: %v", res, err)
			}
			if r.version != "SIP/2.0" || (r.code != 505 && (r.code < 400 || r.code > 499)) {
				t.Fatalf("answer %q", firstLine(res))
			}
			head, _, _ := strings.Cut(res, "\r\n\r\n")
			for _, line := range strings.Split(head, "\r\n")[1:] {
				if strings.ContainsAny(line, "\r\n") || !strings.Contains(line, ": ") {
					t.Fatalf("answer line %q", line)
				}
			}
		}
		msg, err := p.ParseSIP(data)
		if err != nil {
			return
		}
		if req, ok := msg.(*sip.Request); ok {
			if r := a.checkSyntax(req); r != nil && (r.code < 400 || r.code > 599) {
				t.Fatalf("checkSyntax answered %d", r.code)
			}
		}
	})
}

// TestCheckSyntaxAllocates: the checks every request goes through allocate
// nothing for a well-formed request without Date (parsing a Date does; few
// phones send one), nor does the look at each datagram's Via.
func TestCheckSyntaxAllocates(t *testing.T) {
	a := goldenAdapter(t)
	req, err := parseRaw([]byte(rawSIP("MESSAGE "+ghost+" SIP/2.0",
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
		"From: <sip:1001@pbx.example.org>;tag=1", "To: <"+ghost+">", "Call-ID: c1", "CSeq: 1 MESSAGE",
		"Max-Forwards: 70", "User-Agent: phone", "Content-Type: text/plain")("hi")))
	if err != nil {
		t.Fatal(err)
	}
	if r := a.checkSyntax(req); r != nil {
		t.Fatalf("checkSyntax: %d %s", r.code, r.reason)
	}
	if n := testing.AllocsPerRun(100, func() { _ = a.checkSyntax(req) }); n > 0 {
		t.Errorf("checkSyntax allocates %.0f times per request", n)
	}
	data := []byte(options("allocs"))
	if n := testing.AllocsPerRun(100, func() { _ = hasRFC3261Branch(data) }); n > 0 {
		t.Errorf("hasRFC3261Branch allocates %.0f times per datagram", n)
	}
}
