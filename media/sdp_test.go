package media

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/parleygw/parley/event"
)

func crlf(lines ...string) []byte { return []byte(strings.Join(lines, "\r\n") + "\r\n") }

func readSDP(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "sdp", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSDP(t *testing.T) {
	pcma := event.Codec{Name: "PCMA", ClockRate: 8000, PayloadType: 8}
	pcmu := event.Codec{Name: "PCMU", ClockRate: 8000, PayloadType: 0}
	te := event.Codec{Name: "telephone-event", ClockRate: 8000, PayloadType: 101, FMTP: "0-11,16"}
	head := []string{"v=0", "o=- 1 2 IN IP4 192.0.2.1", "s=-"}
	tests := []struct {
		name string
		sdp  []byte
		want AudioSDP
	}{
		{"sipp uac_pcap", readSDP(t, "sipp_uac_pcap.sdp"), AudioSDP{
			Addr: netip.MustParseAddrPort("127.0.0.1:6000"), Media: event.Media{Codecs: []event.Codec{pcma, te}},
			Direction: SendRecv, SessionID: 53655765, Version: 2353687637,
		}},
		{"baresip", readSDP(t, "baresip.sdp"), AudioSDP{
			Addr: netip.MustParseAddrPort("127.0.0.1:10264"), Media: event.Media{Codecs: []event.Codec{
				{Name: "opus", ClockRate: 48000, Channels: 2, PayloadType: 96, FMTP: "stereo=1;sprop-stereo=1"},
				{Name: "G722", ClockRate: 8000, PayloadType: 9}, pcmu, pcma,
				{Name: "telephone-event", ClockRate: 8000, PayloadType: 101, FMTP: "0-15"},
			}},
			Direction: SendRecv, Ptime: 20, SessionID: 1706017441, Version: 3418574231,
		}},
		{"static types without rtpmap, media-level c=", crlf(append(head, "t=0 0", "m=audio 4000 RTP/AVP 0 8", "c=IN IP4 192.0.2.9", "a=sendonly")...), AudioSDP{
			Addr: netip.MustParseAddrPort("192.0.2.9:4000"), Media: event.Media{Codecs: []event.Codec{pcmu, pcma}},
			Direction: SendOnly, SessionID: 1, Version: 2,
		}},
		{"hold with 0.0.0.0", crlf(append(head, "c=IN IP4 0.0.0.0", "t=0 0", "m=audio 4000 RTP/AVP 0")...), AudioSDP{
			Media: event.Media{Codecs: []event.Codec{pcmu}}, Direction: SendRecv, SessionID: 1, Version: 2,
		}},
		{"session-level inactive", crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "a=inactive", "m=audio 4000 RTP/AVP 0")...), AudioSDP{
			Addr: netip.MustParseAddrPort("192.0.2.1:4000"), Media: event.Media{Codecs: []event.Codec{pcmu}}, Direction: Inactive, SessionID: 1, Version: 2,
		}},
		{"port 0", crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 0 RTP/AVP 0")...), AudioSDP{
			Port0: true, Media: event.Media{Codecs: []event.Codec{pcmu}}, Direction: SendRecv, SessionID: 1, Version: 2,
		}},
		{"video first, IPv6", crlf(append(head, "c=IN IP6 2001:db8::1", "t=0 0", "m=video 5000 RTP/AVP 96", "a=rtpmap:96 H264/90000", "m=audio 4002 RTP/AVP 97 0", "a=rtpmap:97 opus/48000/2", "a=recvonly")...), AudioSDP{
			Addr:      netip.MustParseAddrPort("[2001:db8::1]:4002"),
			Media:     event.Media{Codecs: []event.Codec{{Name: "opus", ClockRate: 48000, Channels: 2, PayloadType: 97}, pcmu}},
			Direction: RecvOnly, SessionID: 1, Version: 2,
		}},
		{"dynamic type without rtpmap left out", crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 98 0")...), AudioSDP{
			Addr: netip.MustParseAddrPort("192.0.2.1:4000"), Media: event.Media{Codecs: []event.Codec{pcmu}}, Direction: SendRecv, SessionID: 1, Version: 2,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSDP(tt.sdp)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseSDPErrors(t *testing.T) {
	head := []string{"v=0", "o=- 1 2 IN IP4 192.0.2.1", "s=-"}
	tests := []struct {
		name, want string
		sdp        []byte
	}{
		{"empty", "sdp: empty body", nil},
		{"not SDP", "sdp:", []byte("hello")},
		{"no audio", "no RTP/AVP audio stream", crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "m=video 5000 RTP/AVP 96")...)},
		{"SRTP only", "audio is offered over RTP/SAVP only", crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 5000 RTP/SAVP 0")...)},
		{"no c=", "sdp: m=audio line 5: no connection address", crlf(append(head, "t=0 0", "m=audio 4000 RTP/AVP 0")...)},
		{"hostname", `sdp: m=audio line 5: connection address "pbx.example.org" is not an IP address`, crlf(append(head, "t=0 0", "m=audio 4000 RTP/AVP 0", "c=IN IP4 pbx.example.org")...)},
		{"IP6 type, IPv4 address", "is not an IP6 address", crlf(append(head, "c=IN IP6 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 0")...)},
		{"multicast", "multicast", crlf(append(head, "c=IN IP4 224.2.1.1/127", "t=0 0", "m=audio 4000 RTP/AVP 0")...)},
		{"bad rtpmap", "sdp: m=audio line 6: a=rtpmap:96 opus is malformed", crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 96", "a=rtpmap:96 opus")...)},
		{"bad payload type", `format "abc" is not an RTP payload type`, crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP abc")...)},
		{"payload type above 127", `format "200"`, crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 200")...)},
		{"only telephone-event", "no audio codec", crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 101", "a=rtpmap:101 telephone-event/8000")...)},
		{"no codec known", "media has no codec", crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 96")...)},
		{"bad ptime", "a=ptime:x", crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 0", "a=ptime:x")...)},
		{"twice", "listed twice", crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 0 0")...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSDP(tt.sdp)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one with %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "sdp: ") {
				t.Errorf("error %q does not start with sdp:", err)
			}
		})
	}
	if _, err := ParseSDP(crlf(append(head, "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 5000 RTP/SAVP 0")...)); !errors.Is(err, ErrNoAudio) {
		t.Errorf("SRTP only: %v, want ErrNoAudio", err)
	}
}

func TestWriteSDPRoundTrip(t *testing.T) {
	for _, in := range []AudioSDP{
		{Addr: netip.MustParseAddrPort("127.0.0.1:20000"), Direction: SendRecv, Ptime: 20, SessionID: 7, Version: 1, Media: event.Media{Codecs: []event.Codec{
			{Name: "PCMA", ClockRate: 8000, PayloadType: 8},
			{Name: "telephone-event", ClockRate: 8000, PayloadType: 101, FMTP: "0-16"},
		}}},
		{Addr: netip.MustParseAddrPort("[2001:db8::5]:20002"), Direction: RecvOnly, SessionID: 8, Version: 3, Media: event.Media{Codecs: []event.Codec{
			{Name: "opus", ClockRate: 48000, Channels: 2, PayloadType: 111, FMTP: "minptime=10;useinbandfec=1"},
		}}},
	} {
		b := WriteSDP(in)
		out, err := ParseSDP(b)
		if err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		if !reflect.DeepEqual(in, out) {
			t.Errorf("wrote\n%s\nread %+v, want %+v", b, out, in)
		}
	}
	// Without an address (hold), port 0 and 0.0.0.0.
	b := WriteSDP(AudioSDP{Direction: Inactive, Media: event.Media{Codecs: []event.Codec{{Name: "PCMU", ClockRate: 8000}}}})
	if s := string(b); !strings.Contains(s, "c=IN IP4 0.0.0.0\r\n") || !strings.Contains(s, "m=audio 0 RTP/AVP 0\r\n") || !strings.Contains(s, "a=inactive\r\n") {
		t.Errorf("wrote\n%s", s)
	}
}

func TestDirectionReverse(t *testing.T) {
	for d, want := range map[Direction]Direction{SendRecv: SendRecv, SendOnly: RecvOnly, RecvOnly: SendOnly, Inactive: Inactive, "": SendRecv} {
		if got := d.Reverse(); got != want {
			t.Errorf("%q.Reverse() = %q, want %q", d, got, want)
		}
	}
}

func TestAnswerCodecs(t *testing.T) {
	pcmu := event.Codec{Name: "PCMU", ClockRate: 8000, PayloadType: 0}
	g729 := event.Codec{Name: "G729", ClockRate: 8000, PayloadType: 18}
	opus := event.Codec{Name: "opus", ClockRate: 48000, Channels: 2, PayloadType: 111}
	te8 := event.Codec{Name: "telephone-event", ClockRate: 8000, PayloadType: 101, FMTP: "0-15"}
	te48 := event.Codec{Name: "telephone-event", ClockRate: 48000, PayloadType: 110}
	tests := []struct {
		name      string
		offer     []event.Codec
		supported []event.Codec
		want      []event.Codec
		ok        bool
	}{
		{"first supported, with its DTMF", []event.Codec{g729, pcmu, te48, te8}, Forwardable, []event.Codec{pcmu, te8}, true},
		{"opus with 48 kHz DTMF", []event.Codec{opus, pcmu, te8, te48}, Forwardable, []event.Codec{opus, te48}, true},
		{"no DTMF offered", []event.Codec{pcmu}, Forwardable, []event.Codec{pcmu}, true},
		{"DTMF not supported", []event.Codec{pcmu, te8}, []event.Codec{{Name: "pcmu", ClockRate: 8000, PayloadType: 0}}, []event.Codec{pcmu}, true},
		{"none shared", []event.Codec{g729, te8}, Forwardable, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := AnswerCodecs(event.Media{Codecs: tt.offer}, tt.supported)
			if ok != tt.ok || !reflect.DeepEqual(got.Codecs, tt.want) {
				t.Errorf("got %v, %v; want %v, %v", got.Codecs, ok, tt.want, tt.ok)
			}
		})
	}
}

// FuzzParseSDP: ParseSDP never panics, and what it accepts (with a port)
// is valid media that WriteSDP writes and ParseSDP reads back the same.
func FuzzParseSDP(f *testing.F) {
	f.Add(readSDP(f, "sipp_uac_pcap.sdp"))
	f.Add(readSDP(f, "baresip.sdp"))
	f.Add([]byte("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n"))
	f.Add([]byte("v=0\r\no=- 1 2 IN IP6 ::1\r\ns=-\r\nt=0 0\r\nm=audio 4000/2 RTP/AVP 96 0\r\nc=IN IP6 ::1\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 x\r\na=ptime:20\r\n"))
	f.Add([]byte("v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 99999 RTP/AVP 0\r\n"))
	f.Add([]byte("v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96 /0\r\na=fmtp:\r\n"))
	f.Add([]byte("v=0\r\nm=audio\r\n"))
	f.Add([]byte("v=0\no=- 1 2 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\nm=audio 4000 RTP/AVP 0 8 101\na=rtpmap:101 telephone-event/8000\na=sendonly\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSDP(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "sdp:") {
				t.Fatalf("error %q does not start with sdp:", err)
			}
			return
		}
		if s.Port0 || !s.Addr.IsValid() {
			return
		}
		if err := s.Media.Validate(); err != nil {
			t.Fatalf("accepted invalid media: %v", err)
		}
		again, err := ParseSDP(WriteSDP(s))
		if err != nil {
			t.Fatalf("cannot read what WriteSDP wrote of %+v: %v", s, err)
		}
		if again.Addr != s.Addr || !reflect.DeepEqual(again.Media, s.Media) {
			t.Fatalf("round trip: %+v, want %+v", again, s)
		}
	})
}
