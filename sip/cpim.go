package sip

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// maxCPIMHeaders bounds the header lines of each block of a CPIM message.
const maxCPIMHeaders = 64

// cpimMessage is a parsed message/cpim body (RFC 3862): the message headers
// (From, To, DateTime, Subject, NS, Require...), then the headers of the
// encapsulated MIME object, then its content.
type cpimMessage struct {
	Headers        []cpimHeader
	ContentHeaders []cpimHeader
	Content        []byte
}

// cpimHeader is one "Name: value" line, the value without the leading
// space.
type cpimHeader struct {
	Name, Value string
}

// contentType returns the value of the encapsulated object's Content-Type
// header, or "" when it has none (MIME then means text/plain;
// charset=us-ascii, RFC 2045 §5.2).
func (m *cpimMessage) contentType() string {
	for _, h := range m.ContentHeaders {
		if strings.EqualFold(h.Name, "Content-Type") {
			return h.Value
		}
	}
	return ""
}

var (
	errCPIMNoBlank = errors.New("CPIM: a header block does not end with a blank line")
	errCPIMHeader  = errors.New("CPIM: malformed header line")
	errCPIMTooMany = fmt.Errorf("CPIM: more than %d header lines in a block", maxCPIMHeaders)
)

// parseCPIM parses a message/cpim body: a block of message headers, a blank
// line, a block of MIME headers, a blank line and the content (RFC 3862
// §2). Lines end with CRLF; a bare LF is accepted too. Header lines are
// "Name: value" with a token name; they are not folded (RFC 3862 §3.1).
// The content is returned as is.
func parseCPIM(body []byte) (*cpimMessage, error) {
	headers, rest, err := cpimHeaderBlock(body)
	if err != nil {
		return nil, fmt.Errorf("message headers: %w", err)
	}
	content, rest, err := cpimHeaderBlock(rest)
	if err != nil {
		return nil, fmt.Errorf("MIME headers: %w", err)
	}
	return &cpimMessage{Headers: headers, ContentHeaders: content, Content: rest}, nil
}

// cpimHeaderBlock reads header lines up to and including the blank line
// that ends them, and returns the headers and what follows.
func cpimHeaderBlock(b []byte) ([]cpimHeader, []byte, error) {
	var hs []cpimHeader
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return nil, nil, errCPIMNoBlank
		}
		line := b[:i]
		b = b[i+1:]
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			return hs, b, nil
		}
		if len(hs) == maxCPIMHeaders {
			return nil, nil, errCPIMTooMany
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !isToken(string(name)) {
			return nil, nil, errCPIMHeader
		}
		for _, c := range value {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return nil, nil, errCPIMHeader
			}
		}
		hs = append(hs, cpimHeader{Name: string(name), Value: strings.TrimLeft(string(value), " \t")})
	}
}
