package simulate_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/palisade-net/palisade/npctl/internal/casecluster"
	"github.com/palisade-net/palisade/npctl/manifest"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
	"github.com/palisade-net/palisade/test/netpolcases"
	"github.com/palisade-net/palisade/test/reachability"
)

// Every upstream NetworkPolicy e2e scenario, SCTP included, over IPv4 and
// over IPv6 pod addresses, written out as
// manifests, read back, compiled by the controller's compiler and judged by
// the reference evaluator, gives the matrix upstream expects.
func TestUpstreamScenarios(t *testing.T) {
	for _, family := range []int{4, 6} {
		t.Run(fmt.Sprintf("IPv%d", family), func(t *testing.T) { upstreamScenarios(t, family) })
	}
}

func upstreamScenarios(t *testing.T, family int) {
	checks := 0
	for _, c := range netpolcases.All() {
		t.Run(fmt.Sprintf("%02d-%s", c.Number, c.Context), func(t *testing.T) {
			state := casecluster.NewFamily(family)
			for s, step := range c.Steps(state.IP) {
				for _, a := range step.Actions {
					if err := state.Apply(a); err != nil {
						t.Fatalf("step %d: %v", s+1, err)
					}
				}
				if len(step.Checks) == 0 {
					continue
				}
				manifests, err := state.Manifests()
				if err != nil {
					t.Fatal(err)
				}
				objs, err := manifest.Load("case.yaml", bytes.NewReader(manifests))
				if err != nil {
					t.Fatalf("step %d: %v", s+1, err)
				}
				model, err := simulate.Build(objs)
				if err != nil {
					t.Fatalf("step %d: %v", s+1, err)
				}
				for _, check := range step.Checks {
					observed := observe(t, model, objs, check, simulate.Reference{})
					diffs, err := check.Expected.Differences(observed)
					if err != nil {
						t.Fatal(err)
					}
					if len(diffs) > 0 {
						t.Errorf("step %d, %s/%d:\n%s", s+1, check.Protocol, check.Port, reachability.Compare(c.Name, check.Expected, observed))
					}
					checks++
				}
			}
		})
	}
	if checks < 48 {
		t.Errorf("only %d checks ran", checks)
	}
	t.Logf("%d matrices checked", checks)
}

// observe probes every pair of the check's pods on its port.
func observe(t *testing.T, model *simulate.Model, objs *manifest.Objects, check netpolcases.Check, engine simulate.Engine) *reachability.Matrix {
	t.Helper()
	pods := check.Expected.Pods()
	port := probe.Port{Protocol: check.Protocol, Port: uint16(check.Port)}
	probes, err := probe.Plan(objs, probe.Options{From: pods, To: pods, Ports: []probe.Port{port}})
	if err != nil {
		t.Fatal(err)
	}
	outcomes, err := model.Run(engine, probes)
	if err != nil {
		t.Fatal(err)
	}
	observed := reachability.New(pods, false)
	for _, o := range outcomes {
		observed.Set(o.From.String(), o.To.String(), o.Allowed)
	}
	return observed
}
