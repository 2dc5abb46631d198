package agent

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

type metrics struct {
	programming prometheus.Histogram
	enforced    prometheus.Histogram
	podReady    prometheus.Histogram
	sync        prometheus.Histogram
	errors      *prometheus.CounterVec
}

var (
	sharedMetrics     *metrics
	sharedMetricsOnce sync.Once
	sharedMetricsErr  error
)

// newMetrics registers the agent's metrics on controller-runtime's
// registry, served at the manager's metrics address. The histograms are
// process-wide; the collector reading the dataplane is the latest agent's.
func newMetrics(a *Agent) (*metrics, error) {
	sharedMetricsOnce.Do(func() {
		m := &metrics{
			programming: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name:    "palisade_agent_programming_seconds",
				Help:    "Time to program one endpoint's policy into the dataplane.",
				Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
			}),
			enforced: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name:    "palisade_agent_interface_enforced_seconds",
				Help:    "Time from a new pod interface appearing to programs attached and its first policy (isolation or open) in place.",
				Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
			}),
			podReady: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name:    "palisade_agent_pod_ready_seconds",
				Help:    "Time from a pod interface appearing to its complete policy being enforced (allowed traffic flows).",
				Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
			}),
			sync: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name:    "palisade_agent_sync_seconds",
				Help:    "Time of one full pass over the node's pods and policies.",
				Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
			}),
			errors: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "palisade_agent_errors_total",
				Help: "Dataplane operations that failed, by operation.",
			}, []string{"operation"}),
		}
		for _, c := range []prometheus.Collector{m.programming, m.enforced, m.podReady, m.sync, m.errors} {
			if err := ctrlmetrics.Registry.Register(c); err != nil {
				sharedMetricsErr = err
				return
			}
		}
		sharedMetrics = m
	})
	if sharedMetricsErr != nil {
		return nil, sharedMetricsErr
	}
	dc := &dataplaneCollector{a: a}
	if err := ctrlmetrics.Registry.Register(dc); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		ctrlmetrics.Registry.Unregister(are.ExistingCollector)
		if err := ctrlmetrics.Registry.Register(dc); err != nil {
			return nil, err
		}
	}
	return sharedMetrics, nil
}

var (
	podPacketsDesc = prometheus.NewDesc("palisade_pod_packets_total",
		"Packets the dataplane allowed or denied, per pod and direction.",
		[]string{"namespace", "pod", "direction", "verdict"}, nil)
	podBytesDesc = prometheus.NewDesc("palisade_pod_bytes_total",
		"Bytes the dataplane allowed or denied, per pod and direction.",
		[]string{"namespace", "pod", "direction", "verdict"}, nil)
	mapEntriesDesc = prometheus.NewDesc("palisade_map_entries",
		"Entries used in a dataplane map.", []string{"map"}, nil)
	mapCapacityDesc = prometheus.NewDesc("palisade_map_capacity",
		"Capacity of a dataplane map.", []string{"map"}, nil)
	flowLogDesc = prometheus.NewDesc("palisade_flow_log_records_total",
		"Flow log records written, or dropped by the rate limit.", []string{"outcome"}, nil)
	suppressedDesc = prometheus.NewDesc("palisade_dataplane_events_suppressed_total",
		"Verdict events the dataplane's rate limit kept from the flow log.", nil, nil)
	readyDesc = prometheus.NewDesc("palisade_agent_ready",
		"1 once the initial sync is programmed.", nil, nil)
)

// dataplaneCollector reads counters and occupancy from the dataplane at
// scrape time.
type dataplaneCollector struct{ a *Agent }

func (c *dataplaneCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{podPacketsDesc, podBytesDesc, mapEntriesDesc, mapCapacityDesc, flowLogDesc, suppressedDesc, readyDesc} {
		ch <- d
	}
}

func (c *dataplaneCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	ready := 0.0
	if a.ready.Load() {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready)
	for ifindex, pk := range a.view.Load().pods {
		counters, err := a.dp.Counters(ifindex)
		if err != nil {
			continue // not policed: no counters
		}
		for _, d := range []struct {
			name                                             string
			allowPackets, allowBytes, denyPackets, denyBytes uint64
		}{
			{"ingress", counters.Ingress.AllowPackets, counters.Ingress.AllowBytes, counters.Ingress.DenyPackets, counters.Ingress.DenyBytes},
			{"egress", counters.Egress.AllowPackets, counters.Egress.AllowBytes, counters.Egress.DenyPackets, counters.Egress.DenyBytes},
		} {
			ch <- prometheus.MustNewConstMetric(podPacketsDesc, prometheus.CounterValue, float64(d.allowPackets), pk.Namespace, pk.Name, d.name, "allow")
			ch <- prometheus.MustNewConstMetric(podPacketsDesc, prometheus.CounterValue, float64(d.denyPackets), pk.Namespace, pk.Name, d.name, "deny")
			ch <- prometheus.MustNewConstMetric(podBytesDesc, prometheus.CounterValue, float64(d.allowBytes), pk.Namespace, pk.Name, d.name, "allow")
			ch <- prometheus.MustNewConstMetric(podBytesDesc, prometheus.CounterValue, float64(d.denyBytes), pk.Namespace, pk.Name, d.name, "deny")
		}
	}
	if usage, err := a.dp.Occupancy(); err == nil {
		for name, u := range usage {
			ch <- prometheus.MustNewConstMetric(mapEntriesDesc, prometheus.GaugeValue, float64(u.Used), name)
			ch <- prometheus.MustNewConstMetric(mapCapacityDesc, prometheus.GaugeValue, float64(u.Capacity), name)
		}
	}
	if suppressed, err := a.dp.SuppressedEvents(); err == nil {
		ch <- prometheus.MustNewConstMetric(suppressedDesc, prometheus.CounterValue, float64(suppressed))
	}
	if a.cfg.FlowLog != nil {
		written, dropped := a.cfg.FlowLog.Counts()
		ch <- prometheus.MustNewConstMetric(flowLogDesc, prometheus.CounterValue, float64(written), "written")
		ch <- prometheus.MustNewConstMetric(flowLogDesc, prometheus.CounterValue, float64(dropped), "dropped")
	}
}
