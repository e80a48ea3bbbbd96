package media

import (
	"strings"
	"testing"

	"github.com/pion/rtp"
)

func TestCheckRTP(t *testing.T) {
	good, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, CSRC: []uint32{1, 2}}, Payload: []byte{1, 2, 3}}).Marshal()
	ext := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111}, Payload: []byte{9}}
	if err := ext.SetExtension(1, []byte{0xaa}); err != nil {
		t.Fatal(err)
	}
	withExt, _ := ext.Marshal()
	padded, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, Padding: true, PaddingSize: 4}, Payload: []byte{1}}).Marshal()
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"with CSRC", good, true},
		{"with extension", withExt, true},
		{"padded", padded, true},
		{"short", good[:11], false},
		{"version 1", append([]byte{0x40}, good[1:]...), false},
		{"CSRC past the end", []byte{0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false},
		{"extension past the end", append([]byte{0x90}, withExt[1:14]...), false},
		{"padding past the end", []byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200}, false},
		{"zero padding", []byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false},
	} {
		if err := checkRTP(tc.b); (err == nil) != tc.ok {
			t.Errorf("%s: checkRTP = %v", tc.name, err)
		}
	}
}

func TestCheckRTCP(t *testing.T) {
	rr := []byte{0x80, 201, 0, 1, 0, 0, 0, 1}
	bye := []byte{0x81, 203, 0, 1, 0, 0, 0, 1}
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"receiver report", rr, true},
		{"compound", append(append([]byte{}, rr...), bye...), true},
		{"RTP payload type", []byte{0x80, 0, 0, 1, 0, 0, 0, 1}, false},
		{"length past the end", []byte{0x80, 201, 0, 9, 0, 0, 0, 1}, false},
		{"trailing bytes", append(append([]byte{}, rr...), 0x80), false},
		{"short", []byte{0x80}, false},
	} {
		if err := checkRTCP(tc.b); (err == nil) != tc.ok {
			t.Errorf("%s: checkRTCP = %v", tc.name, err)
		}
	}
}

// FuzzCheckRTP holds checkRTP to pion/rtp: what it accepts, pion parses
// (unless pion refuses the content of RFC 8285 extension elements, which the
// relay forwards unread), and pion then finds the payload where checkRTP's
// header and padding lengths say.
func FuzzCheckRTP(f *testing.F) {
	good, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, CSRC: []uint32{7}}, Payload: []byte{1, 2, 3}}).Marshal()
	ext := &rtp.Packet{Header: rtp.Header{Version: 2}, Payload: []byte{9}}
	if err := ext.SetExtension(1, []byte{0xaa, 0xbb}); err != nil {
		f.Fatal(err)
	}
	withExt, _ := ext.Marshal()
	for _, s := range [][]byte{good, withExt, {0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, {0x80}, {}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkRTP(b) != nil {
			return
		}
		var p rtp.Packet
		if err := p.Unmarshal(b); err != nil {
			if b[0]&0x10 != 0 && strings.Contains(err.Error(), "extension") {
				return
			}
			t.Fatalf("checkRTP accepted %x, pion refuses it: %v", b, err)
		}
		n := 12 + 4*int(b[0]&0x0f)
		if b[0]&0x10 != 0 {
			n += 4 + 4*(int(b[n+2])<<8|int(b[n+3]))
		}
		pad := 0
		if b[0]&0x20 != 0 {
			pad = int(b[len(b)-1])
		}
		if len(p.Payload) != len(b)-n-pad {
			t.Fatalf("%x: pion's payload is %d bytes, checkRTP's lengths say %d", b, len(p.Payload), len(b)-n-pad)
		}
	})
}

// FuzzCheckRTCP: checkRTCP never panics and accepts only whole packets.
func FuzzCheckRTCP(f *testing.F) {
	f.Add([]byte{0x80, 201, 0, 1, 0, 0, 0, 1})
	f.Add([]byte{0x80, 200, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkRTCP(b) != nil {
			return
		}
		for len(b) > 0 {
			n := 4 * (int(b[2])<<8 | int(b[3]) + 1)
			b = b[n:]
		}
	})
}
