package sip

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// This file answers what sipgo does not: UDP datagrams it cannot parse,
// and requests of RFC 2543 peers, whose transactions it cannot key.
//
// sipgo reads a UDP socket one datagram at a time and parses each before it
// reads the next; a datagram it parsed reaches the transport layer's
// handlers, on the same goroutine, and one it could not parse is dropped.
// So the adapter gives sipgo its UDP sockets wrapped in a udpConn, and
// watches the transport layer: when sipgo asks for the next datagram and
// the last one never reached the transport layer, it was malformed, and the
// adapter answers it with a 400 that names the fault (or 505, 416) if it
// holds a Via to answer to (RFC 3261 §18.2.2; RFC 4475 §3.1.2).
//
// Over TCP and TLS a message sipgo cannot parse leaves no boundary to find
// the next one at, so sipgo closes the connection; that stays so.

// udpConn wraps a UDP listener socket given to sipgo. ReadFrom is called by
// sipgo's one reader goroutine of the socket.
type udpConn struct {
	net.PacketConn
	a *Adapter

	// Owned by the reader goroutine.
	last     []byte // the last datagram handed to sipgo
	lastFrom net.Addr

	// from is the source of the datagram sipgo is parsing now, and
	// delivered whether it reached the transport layer; written by the
	// reader and by the transport layer's handler, on the same goroutine
	// for this socket's datagrams but on others for other sockets'.
	mu        sync.Mutex
	from      netip.AddrPort
	delivered bool
}

// parsing records that sipgo is given a datagram from src.
func (c *udpConn) parsing(src netip.AddrPort) {
	c.mu.Lock()
	c.from, c.delivered = src, false
	c.mu.Unlock()
}

// dropped reports whether the datagram last given to sipgo never reached
// the transport layer.
func (c *udpConn) dropped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.from.IsValid() && !c.delivered
}

// udpConns are the adapter's wrapped UDP sockets.
type udpConns struct {
	mu    sync.RWMutex
	conns []*udpConn
}

func (s *udpConns) add(c *udpConn) {
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
}

func (s *udpConns) remove(c *udpConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.conns {
		if x == c {
			s.conns = append(s.conns[:i], s.conns[i+1:]...)
			return
		}
	}
}

// delivered marks the datagram from src as parsed on every socket that is
// parsing one from src. Marking another socket's datagram that came from
// the same source at the same time can only cost that one its 400.
func (s *udpConns) delivered(src netip.AddrPort) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range s.conns {
		c.mu.Lock()
		if c.from == src {
			c.delivered = true
		}
		c.mu.Unlock()
	}
}

// first returns the first socket of the address family of ip, or nil.
func (s *udpConns) first(ip netip.Addr) *udpConn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range s.conns {
		if la, ok := c.LocalAddr().(*net.UDPAddr); ok {
			if l, ok := netip.AddrFromSlice(la.IP); ok && l.Unmap().Is4() == ip.Is4() {
				return c
			}
		}
	}
	return nil
}

// onTransportMessage is the transport layer's handler: it sees every
// message sipgo parsed, on the goroutine that read it.
func (a *Adapter) onTransportMessage(m sip.Message) {
	if m.Transport() != "UDP" {
		return
	}
	src, err := netip.ParseAddrPort(m.Source())
	if err != nil {
		return
	}
	a.udp.delivered(netip.AddrPortFrom(src.Addr().Unmap(), src.Port()))
}

// ReadFrom answers the last datagram if sipgo dropped it, then reads the
// next one. A datagram whose request sipgo's transaction layer would refuse
// (RFC 2543 style: no RFC 3261 branch, and no From tag) is handled here
// and not handed to sipgo.
func (c *udpConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		if c.lastFrom != nil && c.dropped() {
			c.a.answerMalformed(c, c.last, c.lastFrom)
		}
		c.lastFrom = nil
		c.parsing(netip.AddrPort{})
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, from, err
		}
		data := b[:n]
		if !hasRFC3261Branch(data) && c.a.handleStateless(c, data, from) {
			continue
		}
		c.last = append(c.last[:0], data...)
		c.lastFrom = from
		c.parsing(addrPort(from))
		return n, from, nil
	}
}

// addrPort returns the address and port of a UDP address, unmapped.
func addrPort(addr net.Addr) netip.AddrPort {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// hasRFC3261Branch reports whether the first Via line of a raw message has
// a branch with RFC 3261's magic cookie: sipgo keys the transaction of
// such a request by it. A cheap look at the bytes; a message it says no to
// is parsed once more (see handleStateless).
func hasRFC3261Branch(data []byte) bool {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return false
		}
		line := data[:i]
		data = data[i+1:]
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			if len(bytes.TrimSpace(line)) == 0 {
				return false // end of the headers
			}
			continue
		}
		name = bytes.TrimSpace(name)
		if bytes.EqualFold(name, []byte("via")) || bytes.EqualFold(name, []byte("v")) {
			value, _, _ = bytes.Cut(value, []byte(","))
			return bytes.Contains(value, []byte(";branch="+sip.RFC3261BranchMagicCookie))
		}
	}
	return false
}

// handleStateless parses data, a datagram whose top Via has no RFC 3261
// branch, and when it is a request whose transaction sipgo cannot key (RFC
// 2543 allowed a From without tag), handles it without a transaction: the
// response is written once, to the address RFC 3261 §18.2.2 names. It
// reports whether it did; otherwise data goes to sipgo as usual.
func (a *Adapter) handleStateless(c *udpConn, data []byte, from net.Addr) bool {
	msg, err := a.parser.ParseSIP(data)
	if err != nil {
		return false
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		return false
	}
	if _, err := sip.ServerTxKeyMake(req); err == nil || req.Via() == nil {
		return false
	}
	req.SetTransport("UDP")
	req.SetSource(from.String())
	h := a.handlers[req.Method]
	if h == nil {
		h = a.handlers[""]
	}
	go h(req, &statelessTx{c: c, req: req, done: make(chan struct{})})
	return true
}

// answerMalformed answers data, a datagram from src that sipgo could not
// parse, when it is a request with a Via: 400 with the fault as reason
// (505 for another SIP version, 416 for a Request-URI of another scheme).
// Responses and what is not SIP at all are dropped. The answer counts
// against the source's rate limit like any request.
func (a *Adapter) answerMalformed(c *udpConn, data []byte, src net.Addr) {
	m, ok := diagnose(data, a.parser)
	if !ok {
		a.log.Debug("sip datagram dropped", "source", src.String(), "len", len(data))
		return
	}
	ap := addrPort(src)
	if a.peerByAddr(ap.Addr()) == nil {
		if ok, _ := a.limiter.Allow(ap.Addr(), a.now()); !ok {
			return
		}
	}
	dest := netip.AddrPortFrom(ap.Addr(), m.viaPort)
	if m.rport {
		dest = ap
	}
	if _, err := c.WriteTo(m.response(a.cfg.UserAgent), net.UDPAddrFromAddrPort(dest)); err != nil {
		a.log.Debug("sip respond failed", "status", m.code, "source", src.String(), "err", err)
	}
	a.log.Debug("sip malformed request answered", "status", m.code, "reason", m.reason, "source", src.String())
}

// malformed is what diagnose learns of a request sipgo cannot parse.
type malformed struct {
	code   int
	reason string
	// lines are the header lines to copy into the response, "Name: value"
	// (Via, From, To, Call-ID, CSeq, as they came).
	lines []string
	// viaPort is the port of the top Via's sent-by (5060 when absent)
	// and rport whether it asks for the source port (RFC 3581).
	viaPort uint16
	rport   bool
	hasTag  bool // the To header has a tag
}

// response returns the response to the malformed request.
func (m *malformed) response(server string) []byte {
	var b bytes.Buffer
	b.WriteString("SIP/2.0 " + strconv.Itoa(m.code) + " " + m.reason + "\r\n")
	for _, l := range m.lines {
		b.WriteString(l)
		if !m.hasTag && strings.HasPrefix(l, "To: ") {
			b.WriteString(";tag=" + derive("tag", "malformed")[:16])
		}
		b.WriteString("\r\n")
	}
	b.WriteString("Server: " + server + "\r\nContent-Length: 0\r\n\r\n")
	return b.Bytes()
}

// diagnose finds what makes data, a message sipgo cannot parse, malformed,
// and the headers to answer with. It returns false when data is not a
// request, or has no Via to answer to.
func diagnose(data []byte, p *sip.Parser) (*malformed, bool) {
	head, body, complete := bytes.Cut(data, []byte("\r\n\r\n"))
	lines := strings.Split(string(head), "\r\n")
	start := lines[0]
	if strings.HasPrefix(start, "SIP/") || !looksLikeRequestLine(start) {
		return nil, false
	}
	m := &malformed{code: 400, viaPort: 5060}
	m.code, m.reason = requestLineFault(start)
	headers := unfold(lines[1:])
	contentLength := -1
	for _, h := range headers {
		if h == "" {
			continue // a message without the blank line after its headers
		}
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			if m.reason == "" {
				m.reason = "Malformed Header Line"
			}
			continue
		}
		canon := canonicalHeader(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		if _, err := headerParsers.ParseHeader(nil, []byte(h)); err != nil && m.reason == "" {
			m.reason = "Malformed " + canon + " Header"
		}
		switch canon {
		case "Via", "From", "To", "Call-ID", "CSeq":
			m.lines = append(m.lines, canon+": "+withoutControls(value))
		case "Content-Length":
			n, err := strconv.Atoi(value)
			if err != nil || n < 0 {
				if m.reason == "" {
					m.reason = "Malformed Content-Length Header"
				}
				continue
			}
			contentLength = n
		}
		if canon == "To" && toHasTag(value) {
			m.hasTag = true
		}
	}
	if m.reason == "" {
		switch {
		case !complete:
			m.reason = "Missing End Of Headers"
		case contentLength > len(body):
			m.reason = "Content-Length Larger Than Body"
		default:
			m.reason = "Bad Request"
		}
	}
	var via string
	for _, l := range m.lines {
		if strings.HasPrefix(l, "Via: ") {
			via = strings.TrimPrefix(l, "Via: ")
			break
		}
	}
	if via == "" {
		return nil, false
	}
	m.viaPort, m.rport = viaTarget(via)
	return m, true
}

// looksLikeRequestLine reports whether a start line begins with a method
// token followed by a space: what is worth answering at all.
func looksLikeRequestLine(s string) bool {
	method, _, ok := strings.Cut(s, " ")
	if !ok || method == "" {
		return false
	}
	for i := 0; i < len(method); i++ {
		if !isTokenChar(method[i]) {
			return false
		}
	}
	return true
}

// isTokenChar reports whether c may appear in a token (RFC 3261 §25.1).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-.!%*_+`'~", c) >= 0
}

// requestLineFault returns the answer to a Request-Line that sipgo refused,
// or 400 and "" when the fault is not there: Request-Line = Method SP
// Request-URI SP SIP-Version CRLF (RFC 3261 §7.1, §25.1).
func requestLineFault(s string) (int, string) {
	parts := strings.Split(s, " ")
	fields := strings.Fields(s)
	switch {
	case len(fields) == 2 && len(parts) == 2:
		return 400, "Missing SIP Version"
	case len(parts) != 3 || len(fields) != 3 || s != strings.TrimSpace(s) || strings.ContainsAny(s, "\t"):
		return 400, "Malformed Request-Line"
	}
	uri, version := parts[1], parts[2]
	if !strings.EqualFold(version, "SIP/2.0") {
		if strings.HasPrefix(strings.ToUpper(version), "SIP/") {
			return 505, "Version Not Supported"
		}
		return 400, "Malformed SIP Version"
	}
	var u sip.Uri
	if err := sip.ParseUri(uri, &u); err != nil {
		if scheme, _, ok := strings.Cut(uri, ":"); ok && validScheme(scheme) {
			if s := strings.ToLower(scheme); s != "sip" && s != "sips" {
				return 416, "Unsupported URI Scheme"
			}
		}
		return 400, "Malformed Request-URI"
	}
	return 400, ""
}

// validScheme reports whether s is a URI scheme: ALPHA *( ALPHA / DIGIT /
// "+" / "-" / "." ) (RFC 3986 §3.1).
func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// unfold joins header continuation lines (starting with SP or HTAB) to the
// line before them (RFC 3261 §7.3.1).
func unfold(lines []string) []string {
	var out []string
	for _, l := range lines {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(out) > 0 {
			out[len(out)-1] += " " + strings.TrimSpace(l)
			continue
		}
		out = append(out, l)
	}
	return out
}

// compactHeaders are RFC 3261's compact header names (§7.3.3) and the
// full names.
var compactHeaders = map[string]string{
	"v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact",
	"l": "Content-Length", "c": "Content-Type", "e": "Content-Encoding",
	"k": "Supported", "s": "Subject",
}

// canonicalHeader returns the usual spelling of a header name.
func canonicalHeader(name string) string {
	lower := strings.ToLower(name)
	if full, ok := compactHeaders[lower]; ok {
		return full
	}
	switch lower {
	case "call-id":
		return "Call-ID"
	case "cseq":
		return "CSeq"
	}
	b := []byte(lower)
	up := true
	for i, c := range b {
		if up && c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
		up = c == '-'
	}
	return string(b)
}

// withoutControls drops control characters from a header value copied into a
// response.
func withoutControls(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// toHasTag reports whether a raw To value has a tag parameter.
func toHasTag(v string) bool {
	if i := strings.LastIndexByte(v, '>'); i >= 0 {
		v = v[i:]
	}
	for _, p := range strings.Split(v, ";")[1:] {
		name, _, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(name), "tag") {
			return true
		}
	}
	return false
}

// viaTarget returns the port of a raw Via value's sent-by (5060 when it
// names none) and whether it has rport.
func viaTarget(via string) (uint16, bool) {
	via, _, _ = strings.Cut(via, ",")
	var h sip.ViaHeader
	if out, err := headerParsers.ParseHeader(nil, []byte("Via: "+via)); err == nil && len(out) > 0 {
		if v, ok := out[0].(*sip.ViaHeader); ok {
			h = *v
		}
	}
	if h.Host == "" {
		// Unparsable: "SIP/2.0/UDP host[:port];params", loosely.
		rest := via
		for range 2 {
			_, rest, _ = strings.Cut(rest, "/")
		}
		fields := strings.Fields(strings.SplitN(rest, ";", 2)[0])
		port := uint16(5060)
		if len(fields) >= 2 {
			if _, p, err := net.SplitHostPort(fields[1]); err == nil {
				if n, err := strconv.ParseUint(p, 10, 16); err == nil && n > 0 {
					port = uint16(n)
				}
			}
		}
		return port, hasRport(via)
	}
	port := uint16(5060)
	if h.Port > 0 && h.Port < 65536 {
		port = uint16(h.Port)
	}
	return port, h.Params != nil && h.Params.Has("rport")
}

// hasRport reports whether a raw Via value has the rport parameter.
func hasRport(via string) bool {
	for _, p := range strings.Split(via, ";")[1:] {
		name, _, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(name), "rport") {
			return true
		}
	}
	return false
}

// statelessTx is the transaction of a request handled without one (see
// handleStateless): Respond writes the response once to the address RFC
// 3261 §18.2.2 names.
type statelessTx struct {
	c    *udpConn
	req  *sip.Request
	once sync.Once
	done chan struct{}
}

var _ sip.ServerTransaction = (*statelessTx)(nil)

func (t *statelessTx) Respond(res *sip.Response) error {
	_, err := t.c.WriteTo([]byte(res.String()), net.UDPAddrFromAddrPort(responseTarget(t.req)))
	return err
}

func (t *statelessTx) Terminate()                         { t.once.Do(func() { close(t.done) }) }
func (t *statelessTx) OnTerminate(sip.FnTxTerminate) bool { return false }
func (t *statelessTx) Done() <-chan struct{}              { return t.done }
func (t *statelessTx) Err() error                         { return nil }
func (t *statelessTx) Acks() <-chan *sip.Request          { return nil }
func (t *statelessTx) OnCancel(sip.FnTxCancel) bool       { return false }

// responseTarget is where a response to req, which came over UDP, goes:
// its source address, at the source port with rport (RFC 3581) or else the
// top Via's port (RFC 3261 §18.2.2).
func responseTarget(req *sip.Request) netip.AddrPort {
	src, _ := netip.ParseAddrPort(req.Source())
	port := uint16(5060)
	if v := req.Via(); v != nil {
		if v.Params != nil && v.Params.Has("rport") {
			return netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		}
		if v.Port > 0 && v.Port < 65536 {
			port = uint16(v.Port)
		}
	}
	return netip.AddrPortFrom(src.Addr().Unmap(), port)
}

// writeLarge writes res, a response to req too large for sipgo's UDP
// writes (it refuses datagrams beyond 1300 bytes, which RFC 3261 §18.1.1
// asks of requests only), straight to the UDP socket.
func (a *Adapter) writeLarge(req *sip.Request, res *sip.Response) error {
	dest := responseTarget(req)
	c := a.udp.first(dest.Addr())
	if c == nil {
		return net.ErrClosed
	}
	_, err := c.WriteTo([]byte(res.String()), net.UDPAddrFromAddrPort(dest))
	return err
}

// headerParsers are sipgo's header parsers, with stricter address headers:
// a From, To or Contact whose URI is not enclosed in "<>" may not have URI
// headers ("?"), which only name-addr allows (RFC 3261 §20.10, RFC 4475
// §3.1.2.13), and the display name of From and To is quoted or made of
// tokens (RFC 3261 §25.1, RFC 4475 §3.1.2.15; bytes beyond ASCII are let
// through, as phones send them).
var headerParsers = func() sip.HeadersParser {
	m := sip.HeadersParser{}
	for name, p := range sip.DefaultHeadersParser() {
		m[name] = p
	}
	for _, name := range []string{"from", "f", "to", "t", "contact", "m"} {
		inner := m[name]
		single := name != "contact" && name != "m"
		m[name] = func(headerName []byte, text string) (sip.Header, error) {
			if addrSpecWithHeaders(text) {
				return nil, errAddrSpecHeaders
			}
			if single && badDisplayName(text) {
				return nil, errDisplayName
			}
			return inner(headerName, text)
		}
	}
	return m
}()

// newParser returns the SIP parser of the adapter.
func newParser() *sip.Parser { return sip.NewParser(sip.WithHeadersParsers(headerParsers)) }

// The faults of address headers that sipgo's parser lets through.
var (
	errAddrSpecHeaders = errors.New("URI with headers must be enclosed in <>")
	errDisplayName     = errors.New("display name with separators must be quoted")
)

// badDisplayName reports whether the text before "<" in an address
// header's value, outside quoted strings, holds an ASCII character that is
// neither a token character nor white space.
func badDisplayName(v string) bool {
	if !strings.Contains(v, "<") {
		return false
	}
	inQuotes := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && inQuotes:
			i++
		case c == '"':
			inQuotes = !inQuotes
		case inQuotes:
		case c == '<':
			return false
		case c == ' ' || c == '\t' || c >= 0x80 || isTokenChar(c):
		default:
			return true
		}
	}
	return false
}

// addrSpecWithHeaders reports whether the first address of an address
// header's value is an addr-spec (no "<>") with URI headers.
func addrSpecWithHeaders(v string) bool {
	inQuotes := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && inQuotes:
			i++
		case c == '"':
			inQuotes = !inQuotes
		case inQuotes:
		case c == '<':
			return false
		case c == ',':
			return false
		case c == '?':
			return true
		}
	}
	return false
}
