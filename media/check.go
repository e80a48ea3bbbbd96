package media

import "errors"

// Errors of the packet checks.
var (
	errShort   = errors.New("packet shorter than its header")
	errVersion = errors.New("not RTP version 2")
	errRTCPPT  = errors.New("not an RTCP packet type")
	errLength  = errors.New("length field past the end of the packet")
)

// checkRTP checks that b is an RTP packet (RFC 3550 §5.1) whose header,
// CSRC list, extension and padding fit in it, before it is forwarded
// unchanged. It reads nothing else and does not allocate.
func checkRTP(b []byte) error {
	if len(b) < 12 {
		return errShort
	}
	if b[0]>>6 != 2 {
		return errVersion
	}
	n := 12 + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 {
		if len(b) < n+4 {
			return errShort
		}
		n += 4 + 4*(int(b[n+2])<<8|int(b[n+3]))
	}
	if len(b) < n {
		return errShort
	}
	if b[0]&0x20 != 0 {
		pad := int(b[len(b)-1])
		if pad == 0 || n+pad > len(b) {
			return errLength
		}
	}
	return nil
}

// checkRTCP checks that b is a compound RTCP packet (RFC 3550 §6.1): each
// part version 2 with a packet type of 192–223 and a length that fits.
func checkRTCP(b []byte) error {
	if len(b) < 4 {
		return errShort
	}
	for len(b) > 0 {
		if len(b) < 4 {
			return errShort
		}
		if b[0]>>6 != 2 {
			return errVersion
		}
		if b[1] < 192 || b[1] > 223 {
			return errRTCPPT
		}
		n := 4 * (int(b[2])<<8 | int(b[3]) + 1)
		if n > len(b) {
			return errLength
		}
		b = b[n:]
	}
	return nil
}
