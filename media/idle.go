package media

import "time"

// Idle returns how long neither endpoint has accepted a packet, counted at
// the latest from start.
func Idle(now, start time.Time, eps ...Endpoint) time.Duration {
	last := start
	for _, e := range eps {
		if t := e.LastPacket(); t.After(last) {
			last = t
		}
	}
	return now.Sub(last)
}
