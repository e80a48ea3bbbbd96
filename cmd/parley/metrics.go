package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/parleygw/parley/event"
)

// metrics implements bridges.Metrics with Prometheus collectors. The label
// children are resolved once, so the hot path does no lookups or
// allocations.
type metrics struct {
	registry   *prometheus.Registry
	received   map[event.Network]map[event.Kind]prometheus.Counter
	delivered  map[event.Network]map[event.Kind]prometheus.Counter
	failed     map[event.Network]map[event.Kind]prometheus.Counter
	retried    map[event.Network]prometheus.Counter
	duplicates map[event.Network]prometheus.Counter
	queued     prometheus.Gauge
	latency    prometheus.Observer
	calls      callMetrics
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	// The runtime's GC metrics add go_gc_heap_live_bytes, the heap the
	// last collection found live: what sessions, subscriptions and queues
	// really hold, apart from garbage not yet collected.
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsGC)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	byKind := func(name, help string) map[event.Network]map[event.Kind]prometheus.Counter {
		vec := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "parley", Name: name, Help: help}, []string{"network", "kind"})
		reg.MustRegister(vec)
		out := map[event.Network]map[event.Kind]prometheus.Counter{}
		for _, n := range event.Networks {
			out[n] = map[event.Kind]prometheus.Counter{}
			for _, k := range event.Kinds {
				out[n][k] = vec.WithLabelValues(string(n), k.String())
			}
		}
		return out
	}
	byNetwork := func(name, help string) map[event.Network]prometheus.Counter { return counterByNetwork(reg, name, help) }
	m := &metrics{
		registry:   reg,
		received:   byKind("events_received_total", "Events accepted from a network."),
		delivered:  byKind("events_delivered_total", "Events a network took."),
		failed:     byKind("delivery_failures_total", "Events that could not be delivered and were reported to their sender."),
		retried:    byNetwork("delivery_retries_total", "Transient delivery failures that were retried."),
		duplicates: byNetwork("duplicates_total", "Events received again after they were accepted, and not bridged twice."),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "parley", Name: "queue_depth",
			Help: "Events accepted and not yet delivered."}),
	}
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "parley", Name: "delivery_latency_seconds",
		Help:    "Time from accepting an event to its delivery to the destination network.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)})
	m.latency = hist
	reg.MustRegister(m.queued, hist)
	m.calls = newCallMetrics(reg)
	return m
}

func (m *metrics) Received(n event.Network, k event.Kind) { m.received[n][k].Inc() }
func (m *metrics) Delivered(n event.Network, k event.Kind, d time.Duration) {
	m.delivered[n][k].Inc()
	m.latency.Observe(d.Seconds())
}
func (m *metrics) Failed(n event.Network, k event.Kind) { m.failed[n][k].Inc() }
func (m *metrics) Retried(n event.Network)              { m.retried[n].Inc() }
func (m *metrics) Duplicate(n event.Network)            { m.duplicates[n].Inc() }
func (m *metrics) Queued(delta int)                     { m.queued.Add(float64(delta)) }

// counterByNetwork registers a counter with a "network" label and returns
// its child for each network.
func counterByNetwork(reg *prometheus.Registry, name, help string) map[event.Network]prometheus.Counter {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "parley", Name: name, Help: help}, []string{"network"})
	reg.MustRegister(vec)
	out := map[event.Network]prometheus.Counter{}
	for _, n := range event.Networks {
		out[n] = vec.WithLabelValues(string(n))
	}
	return out
}
