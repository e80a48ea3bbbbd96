package media

import (
	"testing"

	"github.com/pion/rtp"
)

// headers keeps the headers a track writes.
type headers []rtp.Header

func (h *headers) WriteRTP(hd *rtp.Header, _ []byte) (int, error) {
	*h = append(*h, *hd)
	return 0, nil
}

func (h *headers) Write(b []byte) (int, error) { return len(b), nil }

// When the media feeding a WebRTC leg changes source (early media from one
// device, then the answer from another), the client sees one stream whose
// sequence numbers go on by one: a jump back would look like replayed SRTP.
func TestTrackContinuesAcrossSources(t *testing.T) {
	var got headers
	tr := &localTrack{w: &got, ssrc: 777}
	send := func(ssrc uint32, seq uint16, ts uint32) {
		if err := tr.write(&rtp.Header{Version: 2, PayloadType: 0, SSRC: ssrc, SequenceNumber: seq, Timestamp: ts}, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		send(1, 20000+uint16(i), 160000+uint32(i)*160)
	}
	for i := range 5 {
		send(2, 5000+uint16(i), 999+uint32(i)*160)
	}
	for i, h := range got {
		if h.SSRC != 777 || h.SequenceNumber != 20000+uint16(i) {
			t.Fatalf("packet %d: ssrc %d seq %d, want 777 and %d", i, h.SSRC, h.SequenceNumber, 20000+i)
		}
		if i > 0 && h.Timestamp <= got[i-1].Timestamp {
			t.Fatalf("packet %d: timestamp %d after %d", i, h.Timestamp, got[i-1].Timestamp)
		}
	}
	if !got[10].Marker || got[11].Marker {
		t.Error("the new source's first packet is not marked as a new talkspurt")
	}
}
