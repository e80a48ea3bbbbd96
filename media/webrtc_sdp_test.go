package media

import (
	"strings"
	"testing"

	"github.com/parleygw/parley/event"
)

// elementOffer is the shape of an Element Web offer (trimmed).
const elementOffer = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
	"a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n" +
	"a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
	"a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n" +
	"a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n" +
	"a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n" +
	"a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n"

func TestParseWebRTCMedia(t *testing.T) {
	m, err := ParseWebRTCMedia(elementOffer)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range m.Codecs {
		got = append(got, c.String())
	}
	want := "111 opus/48000/2,9 G722/8000,0 PCMU/8000,8 PCMA/8000,110 telephone-event/48000,126 telephone-event/8000"
	if strings.Join(got, ",") != want {
		t.Fatalf("codecs = %s\nwant %s", strings.Join(got, ","), want)
	}
	if m.Codecs[0].FMTP != "minptime=10;useinbandfec=1" {
		t.Fatalf("opus fmtp = %q", m.Codecs[0].FMTP)
	}
	// static payload types without rtpmap
	m, err = ParseWebRTCMedia("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 8 0\r\n")
	if err != nil || len(m.Codecs) != 2 || m.Codecs[0] != (event.Codec{Name: "PCMA", ClockRate: 8000, PayloadType: 8}) {
		t.Fatalf("static: %v %v", m, err)
	}
}

func TestParseWebRTCMediaRefuses(t *testing.T) {
	for name, s := range map[string]string{
		"not sdp":   "hello",
		"no audio":  "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n",
		"rejected":  "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n",
		"only dtmf": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 101\r\na=rtpmap:101 telephone-event/8000\r\n",
		"unknown":   "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 97\r\na=rtpmap:97 iLBC/8000\r\n",
	} {
		if m, err := ParseWebRTCMedia(s); err == nil {
			t.Errorf("%s: parsed %v", name, m)
		}
	}
}

func FuzzParseWebRTCMedia(f *testing.F) {
	f.Add(elementOffer)
	f.Add("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000/1\r\na=fmtp:101 0-16\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseWebRTCMedia(s)
		if err != nil {
			return
		}
		if verr := m.Validate(); verr != nil {
			t.Fatalf("parsed media does not validate: %v", verr)
		}
	})
}

func FuzzParseCandidate(f *testing.F) {
	f.Add("candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host")
	f.Add("candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.2 rport 46154 generation 0 ufrag abcd network-cost 999")
	f.Add("a=end-of-candidates")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCandidate(s)
		if err != nil || c == "" {
			return
		}
		if !strings.HasPrefix(c, "candidate:") || strings.ContainsAny(c, "\r\n") {
			t.Fatalf("candidate %q taken as %q", s, c)
		}
	})
}
