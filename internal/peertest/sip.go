package peertest

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// SipMessage is one SIP request or response as a peer (sipp) logged it.
type SipMessage struct {
	// Received is true for a message the peer received, false for one it sent.
	Received bool
	// Transport is what the peer logged: "UDP", "TCP", ...
	Transport string
	// StartLine is the request line ("MESSAGE sip:bob@pbx.localhost SIP/2.0")
	// or the status line ("SIP/2.0 202 Accepted").
	StartLine string
	// Headers in the order of the message, names as written.
	Headers []SipHeader
	// Body is the message body, cut to Content-Length when there is one.
	Body string
}

// SipHeader is one header line of a SipMessage.
type SipHeader struct {
	Name, Value string
}

// compactSIPHeaders maps RFC 3261 compact header forms to their long names.
var compactSIPHeaders = map[string]string{
	"i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
	"c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via",
	"o": "event", "r": "refer-to", "u": "allow-events",
}

func canonicalSIPHeader(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	if long, ok := compactSIPHeaders[n]; ok {
		return long
	}
	return n
}

// Header returns the value of the first header called name (case does not
// matter; compact forms such as "f" for From match too), or "".
func (m SipMessage) Header(name string) string {
	want := canonicalSIPHeader(name)
	for _, h := range m.Headers {
		if canonicalSIPHeader(h.Name) == want {
			return h.Value
		}
	}
	return ""
}

// IsRequest reports whether the message is a request.
func (m SipMessage) IsRequest() bool { return !strings.HasPrefix(m.StartLine, "SIP/") }

// Method returns the request method ("MESSAGE"), or the CSeq method of a
// response.
func (m SipMessage) Method() string {
	if m.IsRequest() {
		method, _, _ := strings.Cut(m.StartLine, " ")
		return method
	}
	_, method, _ := strings.Cut(m.Header("CSeq"), " ")
	return strings.TrimSpace(method)
}

// RequestURI returns the Request-URI of a request, "" for a response.
func (m SipMessage) RequestURI() string {
	if !m.IsRequest() {
		return ""
	}
	f := strings.Fields(m.StartLine)
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// StatusCode returns the status code of a response, 0 for a request.
func (m SipMessage) StatusCode() int {
	if m.IsRequest() {
		return 0
	}
	f := strings.Fields(m.StartLine)
	if len(f) < 2 {
		return 0
	}
	code, _ := strconv.Atoi(f[1])
	return code
}

// ParseSipMessage parses one SIP message (start line, headers, blank line,
// body). Header lines folded with leading white space are joined.
func ParseSipMessage(raw string) (SipMessage, error) {
	raw = strings.TrimLeft(raw, "\r\n")
	head, body, hasBody := strings.Cut(raw, "\r\n\r\n")
	if !hasBody {
		head, body, _ = strings.Cut(raw, "\n\n")
	}
	lines := strings.Split(strings.ReplaceAll(head, "\r\n", "\n"), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) == "" {
		return SipMessage{}, errors.New("sip: empty message")
	}
	m := SipMessage{StartLine: strings.TrimSpace(lines[0])}
	if !strings.HasSuffix(m.StartLine, "SIP/2.0") && !strings.HasPrefix(m.StartLine, "SIP/2.0 ") {
		return SipMessage{}, fmt.Errorf("sip: not a start line: %q", m.StartLine)
	}
	for _, l := range lines[1:] {
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(m.Headers) > 0 {
			m.Headers[len(m.Headers)-1].Value += " " + strings.TrimSpace(l)
			continue
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			return SipMessage{}, fmt.Errorf("sip: bad header line %q", l)
		}
		m.Headers = append(m.Headers, SipHeader{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)})
	}
	if cl := m.Header("Content-Length"); cl != "" {
		if n, err := strconv.Atoi(strings.TrimSpace(cl)); err == nil && n >= 0 && n <= len(body) {
			body = body[:n]
		}
	}
	m.Body = body
	return m, nil
}

// sippTraceEntry matches the header of one entry of sipp's -trace_msg file:
//
//	----------------------------------------------- 2024-01-02 10:11:12.123456
//	UDP message received [452] bytes :
//
//	<message>
//
// ("UDP message sent (385 bytes):" for the other direction).
var sippTraceEntry = regexp.MustCompile(`(?m)^-{47} [^\n]*\n(\S+) (?:\S+ )?message (received \[\d+\] bytes :|sent \(\d+ bytes\):)\n\n`)

// ParseSippMessageLog parses a sipp -trace_msg file into the messages sipp
// sent and received, in order. Entries that are not SIP messages (sipp also
// logs notes such as "Discarded message ...") are skipped.
func ParseSippMessageLog(path string) ([]SipMessage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	text := string(b)
	locs := sippTraceEntry.FindAllStringSubmatchIndex(text, -1)
	var out []SipMessage
	for i, loc := range locs {
		end := len(text)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		seg := strings.TrimSuffix(text[loc[1]:end], "\n")
		// Anything sipp logged after the message (notes without a
		// separator) stays in the body unless Content-Length cuts it.
		m, err := ParseSipMessage(seg)
		if err != nil {
			continue
		}
		m.Transport = text[loc[2]:loc[3]]
		m.Received = strings.HasPrefix(text[loc[4]:loc[5]], "received")
		out = append(out, m)
	}
	return out, nil
}

// filterSip returns the received requests with the given method (all
// received requests when method is "").
func filterSip(msgs []SipMessage, method string) []SipMessage {
	var out []SipMessage
	for _, m := range msgs {
		if m.Received && m.IsRequest() && (method == "" || strings.EqualFold(m.Method(), method)) {
			out = append(out, m)
		}
	}
	return out
}

// SipOptionsPing sends one SIP OPTIONS request (no user part in the
// Request-URI) over UDP to addr (host:port) and returns the status code of the
// final response, or an error when none arrives within timeout. Provisional
// responses are skipped. It is the readiness probe of StartKamailio and works
// for any SIP server that answers OPTIONS.
func SipOptionsPing(addr string, timeout time.Duration) (int, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	_ = c.SetDeadline(deadline)
	local := c.LocalAddr().String()
	tag := randomSecret(4)
	branch := "z9hG4bK-peertest-" + randomSecret(6)
	callID := randomSecret(8) + "@peertest"
	req := "OPTIONS sip:" + addr + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=" + branch + ";rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:peertest@" + local + ">;tag=" + tag + "\r\n" +
		"To: <sip:" + addr + ">\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: 1 OPTIONS\r\n" +
		"Accept: application/sdp\r\n" +
		"Content-Length: 0\r\n\r\n"
	return sipUDPRequest(c, req, callID)
}

// sipUDPRequest writes req on the connected UDP socket c (whose deadline is
// set) and returns the status code of the first final response with the
// given Call-ID.
func sipUDPRequest(c net.Conn, req, callID string) (int, error) {
	if _, err := c.Write([]byte(req)); err != nil {
		return 0, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return 0, err
		}
		m, err := ParseSipMessage(string(buf[:n]))
		if err != nil || m.IsRequest() || m.Header("Call-ID") != callID {
			continue
		}
		if code := m.StatusCode(); code >= 200 {
			return code, nil
		}
	}
}

// freeUDPTCPPort returns a port on 127.0.0.1 that is free for both UDP and
// TCP a moment ago (a SIP server listens on both).
func freeUDPTCPPort(t TB) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("peertest: no free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatalf("peertest: no port free for both UDP and TCP")
	return 0
}

// sippMediaPorts is where sipp's media ports (-mp) come from: a band of its
// own, below the ephemeral ports that FreePort hands out (32768 on) and away
// from the media ranges of the Parleys under test (20000–25999 in e2e, the
// demo and the SIP tests, 30000 on in the media and Matrix tests) and from
// baresip's RTP ports (17000 on). Parley binds its media ports only when a
// call starts, so a sipp port taken from one of its ranges can be bound by a
// Parley in another test binary between the check here and sipp's start,
// and sipp then exits before its first call.
const sippMediaPortMin, sippMediaPortMax = 26000, 29999

// freeUDPPorts returns the first of n consecutive UDP ports on 127.0.0.1
// from sipp's band that were free a moment ago; the first one is even (RTP
// convention).
func freeUDPPorts(t TB, n int) int {
	t.Helper()
	for i := 0; i < 200; i++ {
		base := sippMediaPortMin + 2*rand.IntN((sippMediaPortMax-sippMediaPortMin+1-n)/2)
		ok := true
		var held []net.PacketConn
		for p := base; p < base+n; p++ {
			c, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				ok = false
				break
			}
			held = append(held, c)
		}
		for _, c := range held {
			c.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatalf("peertest: no %d consecutive free UDP ports", n)
	return 0
}

// portBound reports whether some socket is bound to port: proto "udp" looks at
// /proc/net/udp and udp6, "tcp" at listening sockets in /proc/net/tcp and
// tcp6. ok is false when /proc cannot be read (not Linux).
func portBound(proto string, port int) (bound, ok bool) {
	hexPort := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/" + proto, "/proc/net/" + proto + "6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		ok = true
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st ...
			if len(fields) < 4 || !strings.HasSuffix(fields[1], hexPort) {
				continue
			}
			if proto == "tcp" && fields[3] != "0A" { // TCP_LISTEN
				continue
			}
			bound = true
		}
		fh.Close()
		if bound {
			return true, true
		}
	}
	return false, ok
}
