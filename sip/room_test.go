package sip

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

const testRoom = "sip:team@" + testDomain

var (
	_ bridges.RoomHost   = (*fakeHost)(nil)
	_ bridges.RosterHost = (*fakeHost)(nil)
)

// A MESSAGE to a portal's SIP address is a post in the room, authenticated
// as any; its room commands are membership changes.
func TestMessageToRoom(t *testing.T) {
	host := newFakeHost()
	host.rooms = []event.Address{{Network: event.SIP, ID: testRoom}}
	a := startAdapter(t, host, nil)
	phone := newPeerUA(t)
	send := func(body, name string) event.Event {
		t.Helper()
		req := newMessage("UDP", a.udp, "sip:alice@"+testDomain, testRoom, body)
		req.From().DisplayName = name
		if res := phone.doAuth(req, "alice", alicePassword); res.StatusCode != 202 {
			t.Fatalf("MESSAGE %q to the room: %d %s, want 202", body, res.StatusCode, res.Reason)
		}
		select {
		case evt := <-host.dispatchCh:
			return evt
		case <-time.After(10 * time.Second):
			t.Fatal("nothing dispatched")
			return nil
		}
	}
	room := event.Address{Network: event.SIP, ID: testRoom}
	alice := event.Address{Network: event.SIP, ID: "sip:alice@" + testDomain}

	m, ok := send("hello room", "Alice L.").(*event.Message)
	if !ok || !m.Room || m.To != room || m.From != alice || m.FromName != "Alice L." || m.Body != "hello room" {
		t.Errorf("a post dispatched as %#v", m)
	}
	// Without a display name, the phone is named by its user part.
	if m, ok := send("again", "").(*event.Message); !ok || m.FromName != "alice" {
		t.Errorf("a post without a display name dispatched as %#v", m)
	}
	for _, c := range []struct {
		body string
		want event.MemberChange
	}{{"/leave", event.MemberLeft}, {" /JOIN\r\n", event.MemberJoined}} {
		mb, ok := send(c.body, "").(*event.Member)
		if !ok || !mb.Room || mb.To != room || mb.From != alice || mb.Change != c.want {
			t.Errorf("%q dispatched as %#v", c.body, mb)
		}
	}
	// Elsewhere, a command is only text.
	req := newMessage("UDP", a.udp, "sip:alice@"+testDomain, ghost, "/leave")
	if res := phone.doAuth(req, "alice", alicePassword); res.StatusCode != 202 {
		t.Fatalf("MESSAGE to a ghost: %d", res.StatusCode)
	}
	if m := a.host.waitDispatch(t); m.Room || m.Body != "/leave" {
		t.Errorf("/leave to a ghost dispatched as %#v", m)
	}
	// /who is answered by the adapter, from the room.
	host.mu.Lock()
	host.members = []bridges.RoomMember{{Address: event.Address{Network: event.Matrix, ID: "@mona:hs"}, Name: "Mona M"},
		{Address: event.Address{Network: event.XMPP, ID: "xena@example.org"}},
		{Address: alice, Name: "Alice L."}, {Address: event.Address{Network: event.SIP, ID: "sip:bob@" + testDomain}}}
	host.mu.Unlock()
	phone.listenUDP()
	register(t, phone, "UDP", a.udp, "alice", alicePassword, "<sip:alice@"+phone.addr+">")
	req = newMessage("UDP", a.udp, "sip:alice@"+testDomain, testRoom, " /Who ")
	if res := phone.doAuth(req, "alice", alicePassword); res.StatusCode != 202 {
		t.Fatalf("/who: %d %s, want 202", res.StatusCode, res.Reason)
	}
	answer := phone.waitMessage()
	if got, want := string(answer.Body()), "In team: Mona M, xena@example.org; phones: Alice L. (you), bob."; got != want || answer.From().Address.Addr() != testRoom {
		t.Errorf("/who answered %q from %s, want %q", got, answer.From().Value(), want)
	}
	select {
	case evt := <-host.dispatchCh:
		t.Errorf("/who dispatched %#v", evt)
	default:
	}

	// An unauthenticated sender may not post.
	if res := phone.do(newMessage("UDP", a.udp, "sip:mallory@evil.example", testRoom, "hi")); res.StatusCode != 403 {
		t.Errorf("a stranger's post: %d, want 403", res.StatusCode)
	}
}

// A post for a phone comes from the room's address, with the speaker's name
// in the display name and before the text; each phone gets its own request;
// a phone's own membership change is confirmed.
func TestSendRoomPost(t *testing.T) {
	a := startAdapter(t, nil, nil)
	phones := map[string]*peerUA{}
	for _, user := range []string{"alice", "bob"} {
		p := newPeerUA(t)
		p.listenUDP()
		pw := alicePassword
		if user == "bob" {
			pw = bobPassword
		}
		register(t, p, "UDP", a.udp, user, pw, "<sip:"+user+"@"+p.addr+">")
		phones[user] = p
	}
	post := func(to string) *event.Message {
		return &event.Message{Header: event.Header{ID: "xmpp-post-1", Room: true, FromName: "Carol C.", Time: time.Now(),
			From: event.Address{Network: event.SIP, ID: testRoom}, To: event.Address{Network: event.SIP, ID: "sip:" + to + "@" + testDomain}},
			Body: "lunch?"}
	}
	callIDs := map[string]bool{}
	for user, p := range phones {
		if _, err := a.Send(context.Background(), post(user)); err != nil {
			t.Fatalf("Send to %s: %v", user, err)
		}
		req := p.waitMessage()
		from := req.From()
		if from.Address.Addr() != testRoom || displayName(from.DisplayName) != "Carol C. (team)" || string(req.Body()) != "Carol C.: lunch?" {
			t.Errorf("%s got %q from %s", user, req.Body(), from.Value())
		}
		callIDs[req.CallID().Value()] = true
	}
	if len(callIDs) != 2 {
		t.Errorf("the two phones got Call-IDs %v, want one each", callIDs)
	}
	for change, want := range map[event.MemberChange]string{
		event.MemberJoined: "You are in team: what you write to this address goes to the room. Send /leave to leave.",
		event.MemberLeft:   "You left team. Send /join, or any message, to join again.",
	} {
		mb := &event.Member{Header: post("bob").Header, Change: change}
		mb.ID = "p1/" + change.String()
		if _, err := a.Send(context.Background(), mb); err != nil {
			t.Fatalf("Send %s: %v", change, err)
		}
		req := phones["bob"].waitMessage()
		if string(req.Body()) != want || req.From().Address.Addr() != testRoom {
			t.Errorf("%s: bob got %q from %s", change, req.Body(), req.From().Value())
		}
	}
	if _, err := a.Send(context.Background(), &event.Member{Header: post("bob").Header}); err == nil {
		t.Error("a membership change without a change was sent")
	}
	outside := &event.Member{Header: post("bob").Header, Change: event.MemberJoined}
	outside.Room = false
	if _, err := a.Send(context.Background(), outside); !bridges.IsPermanent(err) {
		t.Errorf("a membership change outside a room: %v, want a permanent error", err)
	}
}

// FuzzRoomCommand: whatever a phone writes to a room is a post or one of
// the commands, and only a command's own words are one.
func FuzzRoomCommand(f *testing.F) {
	for _, s := range []string{"/leave", "/join", "/who", " /LEAVE \r\n", "/leave now", "hello", "", "/", "/whois", "\u00a0/join\u2028", "/le\u0307ave"} {
		f.Add(s)
	}
	words := map[roomCommand]string{leave: commandLeave, join: commandJoin, who: commandWho}
	f.Fuzz(func(t *testing.T, body string) {
		c := parseRoomCommand(body)
		if c == post {
			return
		}
		w, ok := words[c]
		if !ok {
			t.Fatalf("%q read as command %d", body, c)
		}
		if !strings.EqualFold(strings.TrimFunc(body, unicode.IsSpace), w) {
			t.Fatalf("%q read as %s", body, w)
		}
	})
}
