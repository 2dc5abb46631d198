package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/palisade-net/palisade/agent/policyset"
	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/bench/controlplane"
	"github.com/palisade-net/palisade/bench/result"
	"github.com/palisade-net/palisade/dataplane"
)

const nodePods = 250

// runAgent measures the agent's pipeline in this process (programming
// time) and in a child process (resident memory, so that nothing this
// process holds counts).
func runAgent(mode string, r *result.Run) (err error) {
	d, err := dataplane.Open(dataplane.Config{PinPath: pinPath("agent"), ConntrackSize: 4096})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.Purge()) }()

	pes, err := controlplane.NodeObjects(nodePods)
	if err != nil {
		return err
	}
	node, err := controlplane.MeasureAgentNode(d, pes)
	if err != nil {
		return err
	}
	repeats := 3
	if mode == "full" {
		repeats = 5
	}
	// The 100-rule policy takes well under a millisecond: more repeats.
	smallConvert, smallProgram, err := controlplane.MeasureLargePolicy(d, 100, 10*repeats)
	if err != nil {
		return err
	}
	bigConvert, bigProgram, err := controlplane.MeasureLargePolicy(d, 10000, repeats)
	if err != nil {
		return err
	}
	rss, peak, err := agentMemory(pes)
	if err != nil {
		return err
	}
	perRule := func(d time.Duration, rules int) float64 { return d.Seconds() / float64(rules) }
	ms := []result.Measurement{
		{Name: fmt.Sprintf("ControlPlane/agent/program-pod/pods=%d", nodePods), Iterations: node.Pods, Metrics: []result.Metric{
			{Value: float64(node.PerPod.Nanoseconds()), Unit: "ns/op"},
			{Value: float64(node.Rules), Unit: "rules"},
			{Value: float64(node.Convert.Nanoseconds()), Unit: "convert-node-ns"},
		}},
		{Name: "ControlPlane/agent/program-policy/rules=10000", Iterations: repeats, Metrics: []result.Metric{
			{Value: float64(bigProgram.Nanoseconds()), Unit: "ns/op"},
			{Value: float64(bigConvert.Nanoseconds()), Unit: "convert-ns"},
			// Per-rule cost at 10,000 rules over per-rule cost at 100: 1.0 is linear.
			{Value: perRule(bigProgram, 10000) / perRule(smallProgram, 100), Unit: result.RatioUnit, Gate: true},
		}},
		{Name: "ControlPlane/agent/program-policy/rules=100", Iterations: 10 * repeats, Metrics: []result.Metric{
			{Value: float64(smallProgram.Nanoseconds()), Unit: "ns/op"},
			{Value: float64(smallConvert.Nanoseconds()), Unit: "convert-ns"},
		}},
		{Name: fmt.Sprintf("ControlPlane/agent/memory/pods=%d", nodePods), Iterations: 1, Metrics: []result.Metric{
			{Value: float64(rss), Unit: "B-rss"},
			{Value: float64(peak), Unit: "B-peak-rss"},
		}},
	}
	for _, m := range ms {
		if err := r.Add(m); err != nil {
			return err
		}
	}
	return nil
}

// memoryReport is what the child prints.
type memoryReport struct {
	Pods      int   `json:"pods"`
	RSS       int64 `json:"rss"`
	PeakRSS   int64 `json:"peak"`
	Endpoints int   `json:"endpoints"`
}

// agentMemory runs this binary as a child that reads the node's
// PolicyEndpoints, converts and programs them, and reports its resident
// memory.
func agentMemory(pes []v1alpha1.PolicyEndpoint) (rss, peak int64, err error) {
	dir, err := os.MkdirTemp("", "palisade-bench-agent")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	input := filepath.Join(dir, "policyendpoints.json")
	data, err := json.Marshal(pes)
	if err != nil {
		return 0, 0, err
	}
	if err := os.WriteFile(input, data, 0o600); err != nil {
		return 0, 0, err
	}
	self, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	childPins := pinPath("agent-child")
	out, err := exec.Command(self, "-agent-memory-child", input, "-agent-memory-pin", childPins).Output()
	if _, statErr := os.Stat(childPins); statErr == nil {
		// The child died before purging: take its maps down.
		if d, openErr := dataplane.Open(dataplane.Config{PinPath: childPins, ConntrackSize: 4096}); openErr == nil {
			d.Purge()
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("agent memory child: %w", err)
	}
	var report memoryReport
	if err := json.Unmarshal(out, &report); err != nil {
		return 0, 0, fmt.Errorf("agent memory child printed %q: %w", out, err)
	}
	if report.Endpoints < 1 {
		return 0, 0, fmt.Errorf("agent memory child programmed no endpoint")
	}
	return report.RSS, report.PeakRSS, nil
}

// agentMemoryChild is the child's whole work.
func agentMemoryChild(input, pinPath string) (err error) {
	data, err := os.ReadFile(input)
	if err != nil {
		return err
	}
	var pes []v1alpha1.PolicyEndpoint
	if err := json.Unmarshal(data, &pes); err != nil {
		return err
	}
	d, err := dataplane.Open(dataplane.Config{PinPath: pinPath, ConntrackSize: 4096})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.Purge()) }()
	built, _ := policyset.Build(pes, nil, nil)
	i := 0
	for _, ep := range built.Endpoints {
		i++
		if _, err := d.SetPolicy(1<<22+i, ep); err != nil {
			return err
		}
	}
	runtime.GC()
	rss, peak, err := controlplane.ResidentBytes()
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(memoryReport{Pods: len(built.Endpoints), RSS: rss, PeakRSS: peak, Endpoints: i})
}
