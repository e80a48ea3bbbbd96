package bridges

// State is an adapter's connection state, as reported on /readyz.
type State uint8

// Adapter states.
const (
	// Starting: Start was called; the first connection is not up yet.
	Starting State = iota
	// Connected: the adapter can deliver events.
	Connected
	// Reconnecting: the connection was lost or refused; the adapter retries
	// with backoff and events wait in the outbox.
	Reconnecting
	// BadCredentials: the peer refused the adapter's secret or token. The
	// adapter still retries, with backoff, in case the peer is fixed.
	BadCredentials
	// Stopped: Stop was called.
	Stopped
)

var stateNames = [...]string{
	Starting:       "starting",
	Connected:      "connected",
	Reconnecting:   "reconnecting",
	BadCredentials: "bad_credentials",
	Stopped:        "stopped",
}

// String returns the lowercase name of s.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// Ready reports whether an adapter in state s can deliver events.
func (s State) Ready() bool { return s == Connected }
