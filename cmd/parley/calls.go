package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/media"
)

// CallsConfig is the calls section: where the media of calls goes, how
// WebRTC clients reach it, and the limits. Without the section Parley
// carries no calls (SIP INVITEs are refused, Matrix call invites hung up).
type CallsConfig struct {
	Media struct {
		// Address is the IP address the RTP sockets bind and, unless
		// PublicAddress is set, announce in SDP and ICE. It must be one the
		// phones and clients reach (not 0.0.0.0).
		Address string `yaml:"address"`
		// PublicAddress is announced instead of Address, for a gateway
		// behind a 1:1 NAT.
		PublicAddress string `yaml:"public_address"`
		// Ports is the UDP range for media, "20000-20999": a plain RTP leg
		// takes two ports (RTP and RTCP), and so does a WebRTC leg (one used).
		Ports string `yaml:"ports"`
	} `yaml:"media"`
	// ICEServers are the STUN and TURN servers offered to WebRTC legs.
	ICEServers []ICEServer `yaml:"ice_servers"`
	// TURNFromHomeserver adds the homeserver's TURN servers
	// (/voip/turnServer) to the ICE servers of Matrix calls.
	TURNFromHomeserver bool `yaml:"turn_from_homeserver"`
	// RingTimeout ends an unanswered call; MediaTimeout an answered one with
	// no media.
	RingTimeout  time.Duration `yaml:"ring_timeout"`
	MediaTimeout time.Duration `yaml:"media_timeout"`
	// MaxCalls limits the calls carried at once (0: no limit but the
	// port range); MaxCallsPerUser the calls one person is in at once (0:
	// defaultCallsPerUser).
	MaxCalls        int `yaml:"max_calls"`
	MaxCallsPerUser int `yaml:"max_calls_per_user"`
}

// ICEServer is one STUN or TURN server.
type ICEServer struct {
	URLs       []string `yaml:"urls"`
	Username   string   `yaml:"username"`
	Credential string   `yaml:"credential"`
}

func (c *CallsConfig) validate() error {
	var errs []error
	if c.Media.Address == "" {
		errs = append(errs, errors.New("calls.media.address: required: the IP address phones and clients send media to"))
	} else if a, err := netip.ParseAddr(c.Media.Address); err != nil {
		errs = append(errs, fmt.Errorf("calls.media.address: %q is not an IP address", c.Media.Address))
	} else if a.IsUnspecified() && c.Media.PublicAddress == "" {
		errs = append(errs, fmt.Errorf("calls.media.address: %s binds every interface; set calls.media.public_address to the address to announce", a))
	}
	if c.Media.PublicAddress != "" {
		if _, err := netip.ParseAddr(c.Media.PublicAddress); err != nil {
			errs = append(errs, fmt.Errorf("calls.media.public_address: %q is not an IP address", c.Media.PublicAddress))
		}
	}
	if _, _, err := c.portRange(); err != nil {
		errs = append(errs, err)
	}
	for i, s := range c.ICEServers {
		if len(s.URLs) == 0 {
			errs = append(errs, fmt.Errorf("calls.ice_servers[%d].urls: at least one stun: or turn: URL", i))
		}
		for _, u := range s.URLs {
			if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "stuns:") && !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
				errs = append(errs, fmt.Errorf("calls.ice_servers[%d].urls: %q is not a stun:, stuns:, turn: or turns: URL", i, u))
			}
		}
	}
	for key, d := range map[string]time.Duration{"calls.ring_timeout": c.RingTimeout, "calls.media_timeout": c.MediaTimeout} {
		if d < 0 || d > 0 && d < time.Second {
			errs = append(errs, fmt.Errorf("%s: %s is below 1s", key, d))
		}
	}
	if c.MaxCalls < 0 || c.MaxCallsPerUser < 0 {
		errs = append(errs, errors.New("calls.max_calls, calls.max_calls_per_user: a limit cannot be negative"))
	}
	return errors.Join(errs...)
}

// portRange parses Media.Ports; empty means 20000-29999.
func (c *CallsConfig) portRange() (lo, hi int, err error) {
	if c.Media.Ports == "" {
		return 20000, 29999, nil
	}
	a, b, ok := strings.Cut(c.Media.Ports, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || lo < 1024 || hi > 65535 || hi < lo+1 {
		return 0, 0, fmt.Errorf("calls.media.ports: %q is not a range like 20000-20999 above port 1023", c.Media.Ports)
	}
	return lo, hi, nil
}

// ports makes the media port range of the section.
func (c *CallsConfig) ports() (*media.Ports, error) {
	lo, hi, err := c.portRange()
	if err != nil {
		return nil, err
	}
	var opts []media.Option
	if c.Media.PublicAddress != "" {
		opts = append(opts, media.WithPublic(netip.MustParseAddr(c.Media.PublicAddress)))
	}
	return media.NewPorts(netip.MustParseAddr(c.Media.Address), lo, hi, opts...)
}

// webrtc is the configuration of WebRTC legs (Matrix clients). A loopback
// media address offers loopback candidates, which WebRTC stacks otherwise
// leave out (a gateway and clients on one machine).
func (c *CallsConfig) webrtc(ports *media.Ports) media.WebRTCConfig {
	cfg := media.WebRTCConfig{Ports: ports, Loopback: netip.MustParseAddr(c.Media.Address).IsLoopback()}
	if c.Media.PublicAddress != "" {
		cfg.PublicIP = netip.MustParseAddr(c.Media.PublicAddress)
	}
	for _, s := range c.ICEServers {
		cfg.ICEServers = append(cfg.ICEServers, media.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return cfg
}

// defaultCallsPerUser is how many calls one person may be in at once when
// the YAML does not say: enough for a transfer or a second line, not
// enough for one account to take the gateway's ports.
const defaultCallsPerUser = 4

func (c *CallsConfig) router() bridges.CallConfig {
	perUser := c.MaxCallsPerUser
	if perUser == 0 {
		perUser = defaultCallsPerUser
	}
	return bridges.CallConfig{
		RingTimeout: c.RingTimeout, MediaTimeout: c.MediaTimeout,
		MaxCalls: c.MaxCalls, MaxPerUser: perUser,
	}
}

// callMetrics are the measurements of calls, for bridges.CallMetrics.
type callMetrics struct {
	active     prometheus.Gauge
	started    map[event.Network]prometheus.Counter
	setup      prometheus.Observer
	ended      map[event.HangupReason]prometheus.Counter
	packetsIn  map[event.Network]prometheus.Counter
	packetsOut map[event.Network]prometheus.Counter
	bytesIn    map[event.Network]prometheus.Counter
	bytesOut   map[event.Network]prometheus.Counter
	dropped    map[event.Network]prometheus.Counter
	loss       map[event.Network]prometheus.Observer
	jitter     map[event.Network]prometheus.Observer
}

func newCallMetrics(reg *prometheus.Registry) callMetrics {
	byNetwork := func(name, help string) map[event.Network]prometheus.Counter { return counterByNetwork(reg, name, help) }
	m := callMetrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "parley", Name: "calls_active",
			Help: "Calls being set up or in progress."}),
		started:    byNetwork("calls_total", "Calls that arrived from a network and were routed."),
		packetsIn:  byNetwork("media_packets_received_total", "RTP and RTCP packets received from the parties of ended call legs, by the leg's network."),
		packetsOut: byNetwork("media_packets_sent_total", "RTP and RTCP packets sent to the parties of ended call legs."),
		bytesIn:    byNetwork("media_bytes_received_total", "Bytes of media received from the parties of ended call legs."),
		bytesOut:   byNetwork("media_bytes_sent_total", "Bytes of media sent to the parties of ended call legs."),
		dropped:    byNetwork("media_packets_dropped_total", "Media packets dropped: from another source than the latched party, or malformed."),
		ended:      map[event.HangupReason]prometheus.Counter{},
	}
	byNetworkHist := func(name, help string, buckets []float64) map[event.Network]prometheus.Observer {
		vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "parley", Name: name, Help: help, Buckets: buckets}, []string{"network"})
		reg.MustRegister(vec)
		out := map[event.Network]prometheus.Observer{}
		for _, n := range event.Networks {
			out[n] = vec.WithLabelValues(string(n))
		}
		return out
	}
	m.loss = byNetworkHist("media_reported_loss_ratio",
		"The worst fraction of packets lost that a party's RTCP reports gave for the media Parley sent it, per call leg.",
		[]float64{0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5})
	m.jitter = byNetworkHist("media_reported_jitter_seconds",
		"The worst interarrival jitter that a party's RTCP reports gave for the media Parley sent it, per call leg.",
		prometheus.ExponentialBuckets(0.001, 2, 10))
	setup := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "parley", Name: "call_setup_seconds",
		Help: "Time from a call's arrival to its answer.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)})
	m.setup = setup
	ended := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "parley", Name: "calls_ended_total",
		Help: "Calls that ended, by reason."}, []string{"reason"})
	for _, r := range event.HangupReasons {
		m.ended[r] = ended.WithLabelValues(r.String())
	}
	reg.MustRegister(m.active, setup, ended)
	return m
}

func (m *metrics) CallStarted(n event.Network) {
	m.calls.started[n].Inc()
	m.calls.active.Inc()
}

func (m *metrics) CallAnswered(setup time.Duration) { m.calls.setup.Observe(setup.Seconds()) }

func (m *metrics) CallEnded(r event.HangupReason) {
	m.calls.active.Dec()
	if c, ok := m.calls.ended[r]; ok {
		c.Inc()
	}
}

func (m *metrics) LegEnded(n event.Network, s media.Stats) {
	m.calls.packetsIn[n].Add(float64(s.PacketsIn))
	m.calls.packetsOut[n].Add(float64(s.PacketsOut))
	m.calls.bytesIn[n].Add(float64(s.BytesIn))
	m.calls.bytesOut[n].Add(float64(s.BytesOut))
	m.calls.dropped[n].Add(float64(s.Dropped + s.Malformed))
	if s.Reports > 0 {
		m.calls.loss[n].Observe(s.WorstLoss)
		m.calls.jitter[n].Observe(s.WorstJitter.Seconds())
	}
}

var _ bridges.CallMetrics = (*metrics)(nil)
