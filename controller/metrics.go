package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the policy controller, served with controller-runtime's own
// (reconcile counts and durations, workqueue) on the metrics endpoint.
var (
	compileSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "palisade_controller_compile_seconds",
		Help:    "Time to compile one NetworkPolicy into PolicyEndpoints.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	})
	changeLatencySeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "palisade_controller_change_latency_seconds",
		Help:    "Time from the first object change that affected a policy to its PolicyEndpoints being written.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	writesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "palisade_controller_policyendpoint_writes_total",
		Help: "PolicyEndpoint writes by operation (create, update, delete).",
	}, []string{"operation"})
	unchangedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "palisade_controller_policyendpoint_unchanged_total",
		Help: "Desired PolicyEndpoints that already matched and were not written.",
	})
	problemsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "palisade_controller_policy_problems_total",
		Help: "Problems found in policies (each also an Event on the NetworkPolicy), by reason.",
	}, []string{"reason"})
	indexObjects = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "palisade_controller_index_objects",
		Help: "Objects held in the controller's index, by kind.",
	}, []string{"kind"})
	policyEndpoints = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "palisade_controller_policyendpoints",
		Help: "PolicyEndpoints the controller last computed as desired, over all policies.",
	})
)

func init() {
	metrics.Registry.MustRegister(compileSeconds, changeLatencySeconds, writesTotal, unchangedTotal, problemsTotal, indexObjects, policyEndpoints)
}
