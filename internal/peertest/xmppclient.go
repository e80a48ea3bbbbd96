package peertest

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

//go:embed xmppclient.py
var xmppClientScript []byte

// XMPPEvent is one thing an XMPPClient saw: Ev is "online", "message",
// "groupchat" (a post in a room: Room, Nick, ID, Body, Delayed), "joined"
// (the client's own presence in a room: Room, Nick), "configured" (a room
// took the client's configuration: Room), "error", "receipt", "presence"
// or "disconnected".
type XMPPEvent struct {
	Ev   string `json:"ev"`
	From string `json:"from"`
	// Type, Show and Status describe a presence stanza ("" type is
	// available; "subscribe", "subscribed", "unavailable", ...).
	Type      string `json:"type"`
	Show      string `json:"show"`
	Status    string `json:"status"`
	ID        string `json:"id"`
	Body      string `json:"body"`
	Nick      string `json:"nick"`
	Condition string `json:"condition"`
	Text      string `json:"text"`
	// Room is the bare JID of the room of a groupchat, joined or
	// configured event; Nick is then the occupant's nick in it.
	Room    string `json:"room"`
	Delayed bool   `json:"delayed"` // a groupchat from the room's history
	// SID is a groupchat's stanza-id given by the room (XEP-0359), when
	// the room gives one: the same in every copy, history included.
	SID string `json:"sid"`
}

// XMPPClient is a real XMPP client, slixmpp from Debian's python3-slixmpp,
// logged in to Prosody over c2s. Its events arrive on Events in order.
type XMPPClient struct {
	JID    string
	Events chan XMPPEvent

	mu    sync.Mutex
	stdin io.WriteCloser
}

// ConnectXMPP logs user in to p with slixmpp and waits until it is online.
func ConnectXMPP(t TB, p *Prosody, user, password string) *XMPPClient {
	t.Helper()
	python := "/usr/bin/python3"
	_, err := os.Stat(python)
	if err == nil {
		err = exec.Command(python, "-c", "import slixmpp").Run()
	}
	Require(t, "slixmpp (Debian python3-slixmpp)", err)
	script := filepath.Join(t.TempDir(), "xmppclient.py")
	if err := os.WriteFile(script, xmppClientScript, 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(p.C2SAddr, ":")
	c := &XMPPClient{JID: user + "@" + p.Domain, Events: make(chan XMPPEvent, 4096)}
	cmd := exec.Command(python, script, c.JID, password, host, port)
	cmd.Stderr = &prefixWriter{t: t, prefix: "slixmpp " + c.JID + ": "}
	c.stdin, _ = cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start slixmpp: %v", err)
	}
	t.Cleanup(func() {
		_ = c.stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e XMPPEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				c.Events <- e
			}
		}
		close(c.Events)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, ok := c.Next(ctx, func(e XMPPEvent) bool { return e.Ev == "online" }); !ok {
		t.Fatalf("slixmpp %s did not come online", c.JID)
	}
	return c
}

// Send sends a chat message with the given stanza id; with receipt it asks
// for an XEP-0184 delivery receipt.
func (c *XMPPClient) Send(t TB, to, id, body string, receipt bool) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "send", "to": to, "id": id, "body": body, "receipt": receipt})
}

// SetPresence sends the client's presence: show is "" (available), "away",
// "xa", "dnd", "chat" or "unavailable".
func (c *XMPPClient) SetPresence(t TB, show, status string) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "presence", "show": show, "status": status})
}

// Subscribe asks to, in the roster sense, to share its presence.
func (c *XMPPClient) Subscribe(t TB, to string) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "subscribe", "to": to})
}

// JoinRoom enters the multi-user chat room (a bare JID) as nick, without
// history; a "joined" event follows once the room accepted it.
func (c *XMPPClient) JoinRoom(t TB, room, nick string) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "join", "room": room, "nick": nick})
}

// Quit ends the client's session without leaving its rooms first: the
// server tells them it went offline.
func (c *XMPPClient) Quit(t TB) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "quit"})
}

// JoinRoomWithHistory enters room as nick and asks for its last history
// posts (XEP-0045 §7.2.15).
func (c *XMPPClient) JoinRoomWithHistory(t TB, room, nick string, history int) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "join", "room": room, "nick": nick, "history": history})
}

// RejoinRoom enters room as nick asking for the history since the time
// since (what the client missed while it was away); a "joined" event
// follows.
func (c *XMPPClient) RejoinRoom(t TB, room, nick string, since time.Time) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "join", "room": room, "nick": nick, "since": since.UTC().Format("2006-01-02T15:04:05Z")})
}

// SendGroupchat posts body in room with the given stanza id.
func (c *XMPPClient) SendGroupchat(t TB, room, id, body string) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "groupchat", "room": room, "id": id, "body": body})
}

// SetSubject changes the subject of room, which the client joined (XEP-0045
// §8.1); the room tells every occupant, or answers with an error.
func (c *XMPPClient) SetSubject(t TB, room, subject string) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "subject", "room": room, "subject": subject})
}

// ChangeNick changes the client's nick in room, which it joined, to nick
// (XEP-0045 §7.6).
func (c *XMPPClient) ChangeNick(t TB, room, nick string) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "nick", "room": room, "nick": nick})
}

// LeaveRoom leaves room, where the client is nick, with an optional status.
func (c *XMPPClient) LeaveRoom(t TB, room, nick, status string) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "leave", "room": room, "nick": nick, "status": status})
}

// LetOccupantsChangeSubject configures room, as its owner, so that every
// occupant may change its subject (muc#roomconfig_changesubject), with
// whois as in ConfigureRoom. A "configured" event follows, or an "error".
func (c *XMPPClient) LetOccupantsChangeSubject(t TB, room, whois string) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "configure", "room": room, "whois": whois, "changesubject": true})
}

// ConfigureRoom sets, as the room's owner, who may see the occupants' real
// JIDs: whois "anyone" (a non-anonymous room) or "moderators". A
// "configured" event follows, or an "error" from the room.
func (c *XMPPClient) ConfigureRoom(t TB, room, whois string) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "configure", "room": room, "whois": whois})
}

// ConfigurePersistentRoom is ConfigureRoom, and makes the room persistent:
// it outlives its occupants and a restart of the server.
func (c *XMPPClient) ConfigurePersistentRoom(t TB, room, whois string) {
	t.Helper()
	c.command(t, map[string]any{"cmd": "configure", "room": room, "whois": whois, "persistent": true})
}

func (c *XMPPClient) command(t TB, cmd map[string]any) {
	t.Helper()
	line, _ := json.Marshal(cmd)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.stdin.Write(append(line, '\n')); err != nil {
		t.Fatalf("command slixmpp: %v", err)
	}
}

// Next returns the next event that match accepts, dropping the others, or
// false when ctx ends or the client exits first.
func (c *XMPPClient) Next(ctx context.Context, match func(XMPPEvent) bool) (XMPPEvent, bool) {
	for {
		select {
		case e, ok := <-c.Events:
			if !ok {
				return XMPPEvent{}, false
			}
			if match == nil || match(e) {
				return e, true
			}
		case <-ctx.Done():
			return XMPPEvent{}, false
		}
	}
}

// prefixWriter copies a child's standard error into the test log.
type prefixWriter struct {
	t      TB
	prefix string
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" {
			w.t.Log(w.prefix + line)
		}
	}
	return len(p), nil
}
