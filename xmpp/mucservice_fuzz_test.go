package xmpp

import (
	"bytes"
	"encoding/xml"
	"testing"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
)

// FuzzServedRoom feeds stanzas to the MUC service, in a room where alice
// is an occupant already: whatever comes, the service does not panic,
// writes well-formed stanzas, and keeps its occupants consistent.
func FuzzServedRoom(f *testing.F) {
	const (
		alice = "alice@localhost/phone"
		room  = servedRoomJID
	)
	seeds := []string{
		presenceFrom("carol@localhost/pc", room+"/carol", mucJoin, "id", "c1"),
		presenceFrom("carol@localhost/pc", room+"/carol", `<x xmlns="http://jabber.org/protocol/muc"><history maxstanzas="3" seconds="60" since="2025-01-01T00:00:00Z"/></x>`),
		presenceFrom("carol@localhost/pc", room+"/alice", mucJoin),
		presenceFrom("alice@localhost/laptop", room+"/alice", mucJoin),
		presenceFrom("alice@localhost/laptop", room+"/other", mucJoin),
		presenceFrom(alice, room+"/Alicia", ""),
		presenceFrom(alice, room+"/alice", "", "type", "unavailable"),
		presenceFrom(alice, room, "", "type", "error"),
		presenceFrom("eve@evil.example/x", room+"/eve", mucJoin),
		presenceFrom("dave@localhost/x", room+"/\u202eecila", mucJoin),
		presenceFrom("dave@localhost/x", "#bad%=zz@matrix.localhost/dave", mucJoin),
		`<message type="groupchat" id="a1" from="` + alice + `" to="` + room + `"><body>hello</body></message>`,
		`<message type="groupchat" from="` + alice + `" to="` + room + `"><subject>s</subject></message>`,
		`<message type="chat" from="` + alice + `" to="` + room + `/Bob"><body>psst</body></message>`,
		`<message type="error" from="` + alice + `" to="` + room + `"/>`,
		`<message type="groupchat" from="matrix.localhost" to="` + room + `"><body>loop</body></message>`,
		`<presence to="` + room + `/x"><x xmlns="http://jabber.org/protocol/muc"><history maxstanzas="x"/>`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a := newTestAdapter(t)
		a.host = &fakeOpenerHost{fakeHost: newFakeHost()}
		var out bytes.Buffer
		enc := xml.NewEncoder(&out)
		join := xml.NewDecoder(bytes.NewReader([]byte(presenceFrom(alice, room+"/alice", mucJoin))))
		start, _ := join.Token()
		se := start.(xml.StartElement)
		if err := a.handleServed(t.Context(), enc, xmlstream.MultiReader(xmlstream.Token(se), join), "presence"); err != nil {
			t.Fatalf("join: %v", err)
		}

		d := xml.NewDecoder(bytes.NewReader(data))
		tok, err := d.Token()
		for err == nil {
			if _, ok := tok.(xml.StartElement); ok {
				break
			}
			tok, err = d.Token()
		}
		if err != nil {
			return
		}
		s := tok.(xml.StartElement)
		if !a.isServed(servedBare(attrValue(&s, "to"))) {
			return
		}
		if err := a.handleServed(t.Context(), enc, xmlstream.MultiReader(xmlstream.Token(s), d), s.Name.Local); err != nil {
			return // a write error: the encoder refused what it was given
		}
		if err := enc.Flush(); err != nil {
			t.Fatalf("flush: %v", err)
		}
		// What was written reads back.
		rd := xml.NewDecoder(&out)
		for {
			if _, err := rd.Token(); err != nil {
				if err.Error() != "EOF" {
					t.Fatalf("written stanzas do not parse: %v\n%s", err, out.String())
				}
				break
			}
		}
		a.served.mu.Lock()
		defer a.served.mu.Unlock()
		for _, r := range a.served.rooms {
			for full, nick := range r.users {
				j, _ := jid.Parse(full)
				if o := r.occupants[nick]; o == nil || !o.user || !o.jid.Equal(j.Bare()) {
					t.Fatalf("room %s: user %s as %q, occupant %+v", r.jid, full, nick, o)
				}
			}
			for ghost, nick := range r.members {
				if o := r.occupants[nick]; o == nil || o.user || o.jid.String() != ghost {
					t.Fatalf("room %s: member %s as %q, occupant %+v", r.jid, ghost, nick, o)
				}
			}
			for nick, o := range r.occupants {
				if o.user && !r.holds(nick) || !o.user && r.members[o.jid.String()] != nick {
					t.Fatalf("room %s: occupant %q %+v held by nobody", r.jid, nick, o)
				}
			}
		}
	})
}
