package main

import (
	"fmt"
	"os"

	"github.com/palisade-net/palisade/bench/controlplane"
	"github.com/palisade-net/palisade/bench/result"
)

func runControlPlane(mode string, r *result.Run) error {
	sizes := []controlplane.Size{{Pods: 1000, Policies: 100}, {Pods: 10000, Policies: 100}}
	// The first repeat warms the heap up; the fastest counts.
	repeats := 3
	if mode == "full" {
		sizes = nil
		for _, pods := range []int{1000, 10000, 50000} {
			for _, policies := range []int{100, 1000} {
				sizes = append(sizes, controlplane.Size{Pods: pods, Policies: policies})
			}
		}
		repeats = 3
	}
	var outcomes []controlplane.CompileOutcome
	for _, size := range sizes {
		fmt.Fprintf(os.Stderr, "   compile %v\n", size)
		o, err := controlplane.MeasureCompile(size, repeats)
		if err != nil {
			return err
		}
		outcomes = append(outcomes, o)
	}
	for _, m := range controlplane.CompileMeasurements(outcomes, repeats) {
		if err := r.Add(m); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "   agent: %d pods, 10,000-rule policy, memory\n", nodePods)
	return runAgent(mode, r)
}
