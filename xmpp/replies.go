package xmpp

import (
	"context"
	"encoding/xml"
	"io"

	"mellium.im/xmpp"
)

// repliesSize bounds the replies of a session waiting to be written; a
// handler with a reply to queue beyond it waits.
const repliesSize = 8192

// replies writes the session's answers to inbound messages and presence
// (errors, subscription approvals) from a goroutine of its own, so that
// reading the stream never waits on writing to it. The server may stop
// reading from the component while it has much to write to it; a reader
// that wrote its replies inline would then stop reading too, and neither
// side would move until a write timed out and dropped the connection.
type replies struct {
	queue chan []xml.Token // one stanza each
	done  chan struct{}    // closed when the writer ends
}

// startReplies starts the reply writer of sess; it ends when ctx does.
func (a *Adapter) startReplies(ctx context.Context, sess *xmpp.Session) *replies {
	r := &replies{queue: make(chan []xml.Token, repliesSize), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case toks := <-r.queue:
				if _, err := a.writeOn(ctx, sess, &tokenSlice{toks: toks}); err != nil {
					a.log.Debug("xmpp reply not written", "error", err)
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return r
}

// replyBuffer is the xmlstream.TokenWriter a handler writes its replies to:
// it splits them into stanzas and queues each on the session's replies.
type replyBuffer struct {
	ctx   context.Context
	r     *replies
	toks  []xml.Token
	depth int
}

func (b *replyBuffer) EncodeToken(t xml.Token) error {
	b.toks = append(b.toks, xml.CopyToken(t))
	switch t.(type) {
	case xml.StartElement:
		b.depth++
	case xml.EndElement:
		b.depth--
		if b.depth == 0 {
			toks := b.toks
			b.toks = nil
			select {
			case b.r.queue <- toks:
			case <-b.ctx.Done():
				return b.ctx.Err()
			}
		}
	}
	return nil
}

func (*replyBuffer) Flush() error { return nil }

// tokenSlice reads its tokens in order.
type tokenSlice struct{ toks []xml.Token }

func (s *tokenSlice) Token() (xml.Token, error) {
	if len(s.toks) == 0 {
		return nil, io.EOF
	}
	t := s.toks[0]
	s.toks = s.toks[1:]
	return t, nil
}
