package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/peertest"
	"github.com/parleygw/parley/store"
)

// eachStore runs test against every implementation: Memory, SQLite, and
// PostgreSQL (started by peertest; in CI a missing PostgreSQL fails).
func eachStore(t *testing.T, test func(t *testing.T, open func() store.Store)) {
	t.Run("memory", func(t *testing.T) {
		m := store.NewMemory()
		test(t, func() store.Store { return m })
	})
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "parley.db")
		test(t, func() store.Store { return open(t, path) })
	})
	t.Run("postgres", func(t *testing.T) {
		if testing.Short() {
			t.Skip("short mode: PostgreSQL store tests need a real server")
		}
		dsn := peertest.StartPostgres(t)
		test(t, func() store.Store { return open(t, dsn) })
	})
}

func open(t *testing.T, dsn string) store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func entry(id, body string, at time.Time) *store.Entry {
	h := event.Header{ID: id, From: event.Address{Network: event.XMPP, ID: "bob@example.org"},
		To: event.Address{Network: event.XMPP, ID: "carol%hs@matrix.example.org"}}
	msg := &event.Message{Header: h, Body: body, HTML: "<b>" + body + "</b>"}
	msg.To = event.Address{Network: event.Matrix, ID: "@carol:hs"}
	return &store.Entry{Origin: h, Event: msg, Accepted: at}
}

func TestOutbox(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		ctx := context.Background()
		s := open()
		now := time.UnixMilli(time.Now().UnixMilli())
		var seqs []int64
		for i, id := range []string{"a", "b", "c"} {
			e := entry(id, "body "+id, now.Add(time.Duration(i)*time.Second))
			dup, err := s.Enqueue(ctx, e)
			if err != nil || dup {
				t.Fatalf("Enqueue %s: dup=%v err=%v", id, dup, err)
			}
			seqs = append(seqs, e.Seq)
		}
		if dup, err := s.Enqueue(ctx, entry("b", "again", now)); err != nil || !dup {
			t.Fatalf("second Enqueue of b: dup=%v err=%v, want a duplicate", dup, err)
		}
		if err := s.Done(ctx, seqs[1]); err != nil {
			t.Fatal(err)
		}
		if dup, _ := s.Enqueue(ctx, entry("b", "again", now)); !dup {
			t.Error("a delivered event is no longer recognised as a duplicate")
		}
		s = open() // reopen: what was stored survives
		got, err := s.Pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Seq != seqs[0] || got[1].Seq != seqs[2] {
			t.Fatalf("Pending = %+v", got)
		}
		m, ok := got[1].Event.(*event.Message)
		if !ok || m.Body != "body c" || m.HTML != "<b>body c</b>" || m.To.ID != "@carol:hs" || got[1].Origin.ID != "c" ||
			!got[1].Accepted.Equal(now.Add(2*time.Second)) {
			t.Errorf("round trip lost data: %+v / %+v", got[1], m)
		}
		if err := s.ForgetBefore(ctx, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if dup, _ := s.Enqueue(ctx, entry("a", "after retention", now)); dup {
			t.Error("duplicate record outlived ForgetBefore")
		}
	})
}

func TestLinks(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		ctx := context.Background()
		s := open()
		if _, ok, err := s.GetLink(ctx, "matrix", "dm:x"); ok || err != nil {
			t.Fatalf("empty store: ok=%v err=%v", ok, err)
		}
		for _, v := range []string{"!one:hs", "!two:hs"} {
			if err := s.PutLink(ctx, "matrix", "dm:x", v); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.PutLink(ctx, "xmpp", "dm:x", "other namespace"); err != nil {
			t.Fatal(err)
		}
		if v, ok, _ := open().GetLink(ctx, "matrix", "dm:x"); !ok || v != "!two:hs" {
			t.Errorf("GetLink = %q, %v", v, ok)
		}
		if err := s.DeleteLink(ctx, "matrix", "dm:x"); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.GetLink(ctx, "matrix", "dm:x"); ok {
			t.Error("link survived DeleteLink")
		}
		if v, _, _ := s.GetLink(ctx, "xmpp", "dm:x"); v != "other namespace" {
			t.Errorf("namespaces are not separate: %q", v)
		}
		for _, k := range []string{"w:a\nx", "w:a\ny", "w:ab\nz", "w:b\nx"} {
			if err := s.PutLink(ctx, "bridges", k, "1"); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ListLinks(ctx, "bridges", "w:a\n")
		if err != nil || len(got) != 2 || got["w:a\nx"] != "1" || got["w:a\ny"] != "1" {
			t.Errorf("ListLinks(w:a) = %v, %v", got, err)
		}
	})
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "parley.db")
	s := open(t, path)
	_ = s.Close()
	// Simulate a store written by a later Parley.
	db := open(t, path).(*store.SQL)
	if err := db.SetSchemaVersionForTest(context.Background(), 99); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if _, err := store.Open(context.Background(), path); err == nil {
		t.Fatal("Open accepted a schema newer than it knows")
	}
}

// A room post and a membership change keep every field through the outbox,
// the room flag and the change (stored by name) included.
func TestOutboxKeepsRoomEvents(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		ctx := context.Background()
		s := open()
		room := event.Header{ID: "m1", From: event.Address{Network: event.XMPP, ID: "team@muc.example.org/Alice"},
			To: event.Address{Network: event.XMPP, ID: "team@muc.example.org"}, Room: true, FromName: "Alice"}
		events := []event.Event{
			&event.Message{Header: room, Body: "hi"},
			&event.Member{Header: room, Change: event.MemberRenamed, Name: "Alice W.", Reason: "new nick"},
		}
		for i, evt := range events {
			evt.Head().ID = evt.Kind().String()
			if _, err := s.Enqueue(ctx, &store.Entry{Origin: *evt.Head(), Event: evt, Accepted: time.Now().Add(time.Duration(i))}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Pending(ctx)
		if err != nil || len(got) != 2 {
			t.Fatalf("pending %d, %v", len(got), err)
		}
		if m, ok := got[0].Event.(*event.Message); !ok || !m.Room || m.Body != "hi" || m.FromName != "Alice" {
			t.Errorf("post came back as %#v", got[0].Event)
		}
		if mb, ok := got[1].Event.(*event.Member); !ok || !mb.Room || mb.Change != event.MemberRenamed || mb.Name != "Alice W." || mb.Reason != "new nick" {
			t.Errorf("membership change came back as %#v", got[1].Event)
		}
	})
}

// An event going to several destinations is several entries under one
// duplicate record: stored together, in order, and recognised as a
// duplicate together; none stored when one cannot be.
func TestOutboxSeveralEntries(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		ctx := context.Background()
		s := open()
		now := time.UnixMilli(time.Now().UnixMilli())
		fanOut := func(id string, to ...string) []*store.Entry {
			var out []*store.Entry
			for _, a := range to {
				e := entry(id, "to "+a, now)
				e.Event.Head().To = event.Address{Network: event.SIP, ID: a}
				out = append(out, e)
			}
			return out
		}
		if _, err := s.Enqueue(ctx); err == nil {
			t.Error("Enqueue without entries succeeded")
		}
		first := fanOut("p1", "sip:1001@pbx", "sip:1002@pbx", "sip:1003@pbx")
		if dup, err := s.Enqueue(ctx, first...); err != nil || dup {
			t.Fatalf("Enqueue of three entries: dup=%v err=%v", dup, err)
		}
		for i := 1; i < len(first); i++ {
			if first[i].Seq <= first[i-1].Seq {
				t.Errorf("seqs %d then %d: not in order", first[i-1].Seq, first[i].Seq)
			}
		}
		again := fanOut("p1", "sip:1004@pbx", "sip:1005@pbx")
		if dup, err := s.Enqueue(ctx, again...); err != nil || !dup {
			t.Fatalf("second Enqueue of p1: dup=%v err=%v, want a duplicate", dup, err)
		}
		// An entry that cannot be encoded (only the SQL stores encode):
		// nothing of the event is stored, and it is no duplicate when it
		// comes again.
		if _, encodes := s.(*store.SQL); encodes {
			bad := fanOut("p2", "sip:1001@pbx", "sip:1002@pbx")
			bad[1].Event = &event.Member{Header: *bad[1].Event.Head(), Change: 99}
			if _, err := s.Enqueue(ctx, bad...); err == nil {
				t.Error("Enqueue of an entry that cannot be encoded succeeded")
			}
		}
		if dup, err := s.Enqueue(ctx, fanOut("p2", "sip:1001@pbx")...); err != nil || dup {
			t.Errorf("p2: dup=%v err=%v", dup, err)
		}
		if err := s.Done(ctx, first[1].Seq); err != nil {
			t.Fatal(err)
		}
		got, err := open().Pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var to []string
		for _, e := range got {
			to = append(to, e.Origin.ID+" "+e.Event.Head().To.ID)
		}
		want := []string{"p1 sip:1001@pbx", "p1 sip:1003@pbx", "p2 sip:1001@pbx"}
		if fmt.Sprint(to) != fmt.Sprint(want) {
			t.Errorf("pending %q, want %q", to, want)
		}
	})
}

// A message's IDs on the networks it crossed are linked when its delivery
// is done, and found from any of them: directly, or through an ID both are
// linked with; they outlive a reopening of the store.
func TestMessageIDs(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		ctx := context.Background()
		s := open()
		matrixPost := store.MessageRef{Network: event.Matrix, ID: "$e1"}
		posted := store.MessageRef{Network: event.XMPP, ID: "parley-1"}
		stanzaID := store.MessageRef{Network: event.XMPP, ID: "team@muc.example.org/sid-1"}
		phone := store.MessageRef{Network: event.SIP, ID: "call-1"}
		e := store.Entry{Origin: event.Header{ID: "$e1", From: event.Address{Network: event.Matrix, ID: "@a:hs"}},
			Event: &event.Message{Header: event.Header{ID: "$e1"}, Body: "hi"}, Accepted: time.Now()}
		if _, err := s.Enqueue(ctx, &e); err != nil {
			t.Fatal(err)
		}
		if err := s.Done(ctx, e.Seq, store.Same{A: matrixPost, B: posted}, store.Same{A: matrixPost, B: phone}); err != nil {
			t.Fatal(err)
		}
		if pending, _ := s.Pending(ctx); len(pending) != 0 {
			t.Fatalf("Done left %d entries", len(pending))
		}
		if err := s.LinkIDs(ctx, store.Same{A: stanzaID, B: posted}); err != nil {
			t.Fatal(err)
		}
		if err := s.LinkIDs(ctx, store.Same{A: stanzaID, B: posted}); err != nil {
			t.Fatalf("linking again: %v", err)
		}
		if err := s.LinkIDs(ctx, store.Same{A: stanzaID, B: stanzaID}); err == nil {
			t.Error("a message linked with itself")
		}
		for _, tc := range []struct {
			ref  store.MessageRef
			on   event.Network
			want string
		}{
			{matrixPost, event.XMPP, "parley-1"},
			{posted, event.Matrix, "$e1"},
			{posted, event.XMPP, "team@muc.example.org/sid-1"},
			{stanzaID, event.Matrix, "$e1"},
			{stanzaID, event.SIP, "call-1"},
			{phone, event.XMPP, "parley-1"},
			{matrixPost, event.SIP, "call-1"},
		} {
			got, ok, err := s.MessageID(ctx, tc.ref, tc.on)
			if err != nil || !ok || got != tc.want {
				t.Errorf("MessageID(%v, %s) = %q, %v, %v; want %q", tc.ref, tc.on, got, ok, err, tc.want)
			}
		}
		if got, ok, err := s.MessageID(ctx, store.MessageRef{Network: event.Matrix, ID: "$unknown"}, event.XMPP); ok || err != nil {
			t.Errorf("an unknown message: %q, %v, %v", got, ok, err)
		}
	})
}
