package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/palisade-net/palisade/bench/nodeagent"
	"github.com/palisade-net/palisade/bench/result"
)

// runNodeAgent measures the real agent binary on a local cluster (full
// mode only: it builds the binaries and starts a kube-apiserver).
func runNodeAgent(mode string, r *result.Run) error {
	if mode != "full" {
		r.Skip("NodeAgent", "full mode only (builds the binaries, starts a kube-apiserver and 250 pods)")
		return nil
	}
	workDir, err := os.MkdirTemp("", "palisade-bench-nodeagent")
	if err != nil {
		return err
	}
	defer os.RemoveAll(workDir)
	// envtest logs through controller-runtime; this program has nothing to add.
	ctrllog.SetLogger(logr.Discard())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const pods, policies = 250, 25
	out, err := nodeagent.Measure(ctx, workDir, pods, policies)
	if err != nil {
		return err
	}
	return r.Add(result.Measurement{
		Name:       fmt.Sprintf("NodeAgent/memory/pods=%d/policies=%d", pods, policies),
		Iterations: 1,
		Metrics: []result.Metric{
			{Value: float64(out.RSS), Unit: "B-rss"},
			{Value: float64(out.PeakRSS), Unit: "B-peak-rss"},
			{Value: float64(out.Objects), Unit: "policyendpoints"},
			{Value: float64(out.Settle.Nanoseconds()), Unit: "settle-ns"},
		},
	})
}
