package matrix

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"
	"time"

	mevent "maunium.net/go/mautrix/event"

	"github.com/parleygw/parley/event"
)

const testGhost = "@_xmpp_bob=40example.org:localhost"

func loadEvent(t *testing.T, name string) *mevent.Event {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "events", name))
	if err != nil {
		t.Fatal(err)
	}
	var evt mevent.Event
	if err := json.Unmarshal(b, &evt); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &evt
}

func TestMessageFromMatrix(t *testing.T) {
	ts := time.UnixMilli(1700000000123).UTC()
	head := func(id string, tm time.Time) event.Header {
		return event.Header{
			ID:   id,
			From: event.Address{Network: event.Matrix, ID: "@alice:localhost"},
			To:   event.Address{Network: event.Matrix, ID: testGhost},
			Time: tm,
		}
	}
	tests := []struct {
		file    string
		want    *event.Message
		wantErr error
	}{
		{file: "text.json", want: &event.Message{Header: head("$text:localhost", ts), Body: "hello bob"}},
		{file: "html.json", want: &event.Message{Header: head("$html:localhost", ts), Body: "hello **bob**", HTML: "hello <strong>bob</strong>"}},
		{file: "unknown_format.json", want: &event.Message{Header: head("$fmt:localhost", ts), Body: "plain"}},
		{file: "notice.json", want: &event.Message{Header: head("$notice:localhost", ts), Body: "automated", Notice: true}},
		{file: "emote.json", want: &event.Message{Header: head("$emote:localhost", ts), Body: "/me waves", HTML: "/me <em>waves</em>"}},
		{file: "edit.json", want: &event.Message{
			Header: head("$edit:localhost", time.UnixMilli(1700000000456).UTC()), Body: "hello bobby", Replaces: "$text:localhost",
		}},
		{file: "reply.json", want: &event.Message{
			Header: head("$reply:localhost", time.UnixMilli(1700000000789).UTC()), Body: "yes, that", ReplyTo: "$earlier:localhost",
		}},
		{file: "thread.json", want: &event.Message{
			Header: head("$thread:localhost", time.UnixMilli(1700000000789).UTC()), Body: "in a thread",
		}},
		{file: "image.json", wantErr: errUnsupported},
		{file: "no_msgtype.json", wantErr: errUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := messageFromMatrix(loadEvent(t, tt.file), testGhost)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestMessageContent(t *testing.T) {
	tests := []struct {
		name string
		msg  event.Message
		want string
	}{
		{name: "text", msg: event.Message{Body: "hi"}, want: `{"msgtype":"m.text","body":"hi"}`},
		{name: "html", msg: event.Message{Body: "hi", HTML: "<b>hi</b>"},
			want: `{"msgtype":"m.text","body":"hi","format":"org.matrix.custom.html","formatted_body":"\u003cb\u003ehi\u003c/b\u003e"}`},
		{name: "notice", msg: event.Message{Body: "auto", Notice: true}, want: `{"msgtype":"m.notice","body":"auto"}`},
		{name: "relations not sent", msg: event.Message{Body: "x", ReplyTo: "id1", Replaces: "id2"}, want: `{"msgtype":"m.text","body":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(messageContent(&tt.msg))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("content = %s\nwant      %s", b, tt.want)
			}
		})
	}
}

func TestTxnID(t *testing.T) {
	a, b := txnID("msg-1"), txnID("msg-1")
	if a != b {
		t.Errorf("txnID not stable: %q, %q", a, b)
	}
	if a == txnID("msg-2") {
		t.Error("different IDs give the same txnID")
	}
	// sha256("msg-1"), first 16 bytes: the ID is persistent across versions,
	// so its derivation must not change silently.
	if want := "parley-3a0de37932e8b19746f20b22414f862f"; a != want {
		t.Errorf("txnID = %q, want %q", a, want)
	}
	if got := txnID(""); got != "" {
		t.Errorf(`txnID("") = %q, want "" (a unique ID from mautrix)`, got)
	}
	if !regexp.MustCompile(`^parley-[0-9a-f]{32}$`).MatchString(a) {
		t.Errorf("txnID = %q", a)
	}
}
