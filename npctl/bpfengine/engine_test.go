package bpfengine_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/palisade-net/palisade/npctl/bpfengine"
	"github.com/palisade-net/palisade/npctl/internal/casecluster"
	"github.com/palisade-net/palisade/npctl/manifest"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
	"github.com/palisade-net/palisade/test/netpolcases"
)

func openEngine(t testing.TB) *bpfengine.Engine {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load eBPF programs")
	}
	e, err := bpfengine.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if _, err := os.Stat(e.PinPath()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pinned objects left behind at %s", e.PinPath())
		}
	})
	return e
}

type probeKey struct {
	from, to string
	port     probe.Port
}

// The eBPF programs and the reference evaluator agree on every probe of
// every step of the upstream scenarios (all pods, ports 80 and 81, TCP, UDP
// and SCTP, IPv4 and IPv6 pod addresses), and both give what upstream
// expects.
func TestBPFAgreesWithReferenceOnUpstreamScenarios(t *testing.T) {
	engine := openEngine(t)
	for _, family := range []int{4, 6} {
		t.Run(fmt.Sprintf("IPv%d", family), func(t *testing.T) { compareOnUpstreamScenarios(t, engine, family) })
	}
}

func compareOnUpstreamScenarios(t *testing.T, engine *bpfengine.Engine, family int) {
	probed, denied := 0, 0
	for _, c := range netpolcases.All() {
		state := casecluster.NewFamily(family)
		for s, step := range c.Steps(state.IP) {
			for _, a := range step.Actions {
				if err := state.Apply(a); err != nil {
					t.Fatalf("case %d step %d: %v", c.Number, s+1, err)
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
				t.Fatal(err)
			}
			model, err := simulate.Build(objs)
			if err != nil {
				t.Fatal(err)
			}
			var ports []probe.Port
			for _, port := range netpolcases.Ports {
				for _, proto := range netpolcases.Protocols {
					ports = append(ports, probe.Port{Protocol: proto, Port: uint16(port)})
				}
			}
			probes, err := probe.Plan(objs, probe.Options{Ports: ports})
			if err != nil {
				t.Fatal(err)
			}
			bpf, err := model.Run(engine, probes)
			if err != nil {
				t.Fatalf("case %d step %d: %v", c.Number, s+1, err)
			}
			ref, err := model.Run(simulate.Reference{}, probes)
			if err != nil {
				t.Fatal(err)
			}
			byProbe := map[probeKey]bool{}
			for i := range probes {
				probed++
				if !bpf[i].Allowed {
					denied++
				}
				if bpf[i].Allowed != ref[i].Allowed || bpf[i].Egress.Verdict.Allowed != ref[i].Egress.Verdict.Allowed {
					t.Errorf("case %d step %d: %s: eBPF allowed=%v (egress %v), reference allowed=%v (egress %v)", c.Number, s+1,
						probes[i], bpf[i].Allowed, bpf[i].Egress.Verdict.Allowed, ref[i].Allowed, ref[i].Egress.Verdict.Allowed)
				}
				byProbe[probeKey{probes[i].From.String(), probes[i].To.String(), probes[i].Port}] = bpf[i].Allowed
			}
			for _, check := range step.Checks {
				port := probe.Port{Protocol: check.Protocol, Port: uint16(check.Port)}
				for _, from := range check.Expected.Pods() {
					for _, to := range check.Expected.Pods() {
						if from == to {
							continue
						}
						if got, want := byProbe[probeKey{from, to, port}], check.Expected.Get(from, to); got != want {
							t.Errorf("case %d step %d: %s -> %s %s: eBPF allowed=%v, upstream expects %v", c.Number, s+1, from, to, port, got, want)
						}
					}
				}
			}
		}
	}
	if denied == 0 || denied == probed {
		t.Errorf("%d of %d probes denied: the scenarios should exercise both verdicts", denied, probed)
	}
	t.Logf("%d probes compared, %d denied", probed, denied)
}

// BenchmarkJudge measures one probe (source egress then destination
// ingress) through each engine, on the final state of the sixth upstream
// scenario.
func BenchmarkJudge(b *testing.B) {
	state := casecluster.New()
	c := netpolcases.All()[5]
	for _, step := range c.Steps(state.IP) {
		for _, a := range step.Actions {
			if err := state.Apply(a); err != nil {
				b.Fatal(err)
			}
		}
	}
	manifests, err := state.Manifests()
	if err != nil {
		b.Fatal(err)
	}
	objs, err := manifest.Load("case.yaml", bytes.NewReader(manifests))
	if err != nil {
		b.Fatal(err)
	}
	model, err := simulate.Build(objs)
	if err != nil {
		b.Fatal(err)
	}
	probes, err := probe.Plan(objs, probe.Options{})
	if err != nil || len(probes) == 0 {
		b.Fatalf("%d probes, %v", len(probes), err)
	}
	for _, name := range []string{"reference", "ebpf"} {
		b.Run(name, func(b *testing.B) {
			var engine simulate.Engine = simulate.Reference{}
			if name == "ebpf" {
				engine = openEngine(b)
			}
			if _, err := model.Run(engine, probes); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := model.Judge(engine, probes[i%len(probes)]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(probes)), "probes/matrix")
		})
	}
}
