package peertest

import (
	"context"
	"encoding/xml"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// RegisterMany creates the accounts prefix1 … prefixN of p's domain, all
// with password, in one call to Prosody's admin shell (the server must be
// running). It takes about 5 ms per account: Prosody derives each SCRAM key.
func (p *Prosody) RegisterMany(t TB, prefix string, n int, password string) {
	t.Helper()
	code := fmt.Sprintf(">local um = require'core.usermanager'; for i = 1, %d do assert(um.create_user(%s .. i, %s, %s)) end",
		n, luaString(prefix), luaString(password), luaString(p.Domain))
	cmd := exec.Command("prosodyctl", "--config", p.config, "shell", code)
	cmd.Dir = p.Dir
	out := runCmd(t, fmt.Sprintf("prosody register %d accounts", n), cmd)
	if strings.Contains(string(out), "rror") {
		t.Fatalf("peertest: prosody register %d accounts: %s", n, out)
	}
}

// XMPPSwarm is many light XMPP clients in the test process (mellium, one
// goroutine each), logged in to Prosody at once: enough to be thousands of
// watchers of one contact, which a Python client per user could not be. Each
// client counts the presence it receives; nothing else is recorded.
type XMPPSwarm struct {
	clients []*swarmClient
	// presences counts, by bare sender JID, the presence stanzas of
	// availability (available or unavailable) all clients received.
	mu        sync.Mutex
	presences map[string]*atomic.Int64
}

type swarmClient struct {
	jid  jid.JID
	sess *xmpp.Session
	// last is the status text of the last availability presence the
	// client received.
	last atomic.Pointer[string]
}

// ConnectSwarm logs in the users prefix1 … prefixN of p (see RegisterMany),
// at most 50 at a time, and sends each one's initial presence. The clients
// log out at the end of the test.
func ConnectSwarm(t TB, p *Prosody, prefix string, n int, password string) *XMPPSwarm {
	t.Helper()
	s := &XMPPSwarm{clients: make([]*swarmClient, n), presences: map[string]*atomic.Int64{}}
	t.Cleanup(func() {
		for _, c := range s.clients {
			if c != nil {
				_ = c.sess.Close()
				_ = c.sess.Conn().Close()
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout(time.Duration(n)*20*time.Millisecond+30*time.Second))
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 50)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := s.login(ctx, p, fmt.Sprintf("%s%d", prefix, i+1), password)
			if err != nil {
				errs <- err
				return
			}
			s.clients[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatalf("peertest: swarm: %v (%d more errors)", err, len(errs))
	}
	return s
}

// login opens one client's session, starts reading its stanzas, and sends
// its initial presence.
func (s *XMPPSwarm) login(ctx context.Context, p *Prosody, user, password string) (*swarmClient, error) {
	addr, err := jid.New(user, p.Domain, "swarm")
	if err != nil {
		return nil, err
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.C2SAddr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", p.C2SAddr, err)
	}
	// Prosody here serves c2s without TLS on loopback; the session is
	// marked secure so that SASL may proceed.
	sess, err := xmpp.NewSession(ctx, addr.Domain(), addr, conn, xmpp.Secure, xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
		return xmpp.StreamConfig{Features: []xmpp.StreamFeature{xmpp.SASL("", password, sasl.ScramSha1), xmpp.BindResource()}}
	}))
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("log in %s: %w", addr, err)
	}
	c := &swarmClient{jid: sess.LocalAddr(), sess: sess}
	go func() {
		_ = sess.Serve(xmpp.HandlerFunc(func(t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			return s.handle(c, t, start)
		}))
	}()
	if err := sess.Send(ctx, stanza.Presence{}.Wrap(nil)); err != nil {
		return nil, fmt.Errorf("initial presence of %s: %w", addr, err)
	}
	return c, nil
}

// handle counts the availability presence a client receives, and records
// its status text.
func (s *XMPPSwarm) handle(c *swarmClient, r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
	if start.Name.Local != "presence" {
		return nil
	}

	var from, typ string
	for _, a := range start.Attr {
		switch a.Name.Local {
		case "from":
			from = a.Value
		case "type":
			typ = a.Value
		}
	}
	if typ != "" && typ != "unavailable" {
		return nil
	}
	bare, _, _ := strings.Cut(from, "/")
	status := statusText(r)
	c.last.Store(&status)
	s.counter(bare).Add(1)
	return nil
}

// statusText reads the inner tokens of a presence and returns the text of
// its <status/> child.
func statusText(r xml.TokenReader) string {
	var b strings.Builder
	depth, in := 0, false
	for {
		tok, err := r.Token()
		if err != nil {
			return b.String()
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			depth++
			in = depth == 1 && tok.Name.Local == "status"
		case xml.EndElement:
			depth--
			in = false
		case xml.CharData:
			if in {
				b.Write(tok)
			}
		}
	}
}

// Showing returns how many clients' last availability presence had the
// status text status.
func (s *XMPPSwarm) Showing(status string) int {
	n := 0
	for _, c := range s.clients {
		if p := c.last.Load(); p != nil && *p == status {
			n++
		}
	}
	return n
}

func (s *XMPPSwarm) counter(bare string) *atomic.Int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.presences[bare]
	if c == nil {
		c = new(atomic.Int64)
		s.presences[bare] = c
	}
	return c
}

// Subscribe has every client ask for the presence of contact (a bare JID),
// at most 50 at a time and perSecond requests a second (0: unpaced).
func (s *XMPPSwarm) Subscribe(ctx context.Context, contact string, perSecond int) error {
	to, err := jid.Parse(contact)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	sem := make(chan struct{}, 50)
	start := time.Now()
	for i, c := range s.clients {
		if perSecond > 0 {
			time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(perSecond))))
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := c.sess.Send(ctx, stanza.Presence{To: to, Type: stanza.SubscribePresence}.Wrap(nil)); err != nil {
				failed.CompareAndSwap(nil, &err)
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return fmt.Errorf("subscribe to %s: %w", contact, *err)
	}
	return nil
}

// Presences returns how many availability presence stanzas (available or
// unavailable) from the bare JID from the clients have received in all.
func (s *XMPPSwarm) Presences(from string) int64 {
	return s.counter(from).Load()
}

// Len returns the number of clients.
func (s *XMPPSwarm) Len() int { return len(s.clients) }
