package node_test

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/palisade-net/palisade/dataplane"
	"github.com/palisade-net/palisade/dataplane/compile"
	"github.com/palisade-net/palisade/npctl/bpfengine"
	"github.com/palisade-net/palisade/npctl/manifest"
	"github.com/palisade-net/palisade/npctl/node"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
	"github.com/palisade-net/palisade/policy"
)

// After a simulation through the eBPF programs, reading the pinned maps
// gives what the dataplane itself reports, and the counters count the
// verdicts the simulation saw.
func TestReadMatchesTheDataplane(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to load eBPF programs")
	}
	f, err := os.Open("../cli/testdata/ingress-from-namespace.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs, err := manifest.Load("ingress.yaml", f)
	if err != nil {
		t.Fatal(err)
	}
	model, err := simulate.Build(objs)
	if err != nil {
		t.Fatal(err)
	}
	engine, err := bpfengine.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := engine.Close(); err != nil {
			t.Error(err)
		}
	})
	probes, err := probe.Plan(objs, probe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	outcomes, err := model.Run(engine, probes)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]*dataplane.Counters{}
	count := func(step simulate.Step) {
		if !step.Policed {
			return
		}
		ifindex, ok := engine.Ifindex(step.Pod)
		if !ok {
			t.Fatalf("pod %s judged but has no ifindex", step.Pod)
		}
		if want[ifindex] == nil {
			want[ifindex] = &dataplane.Counters{}
		}
		c := &want[ifindex].Ingress
		if step.Dir == policy.Egress {
			c = &want[ifindex].Egress
		}
		if step.Verdict.Allowed {
			c.AllowPackets++
		} else {
			c.DenyPackets++
		}
	}
	for _, o := range outcomes {
		count(o.Egress)
		count(o.Ingress)
	}

	got, err := node.Read(engine.PinPath())
	if err != nil {
		t.Fatal(err)
	}
	states, err := engine.Dataplane().Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(states) || len(got) != len(want) || len(got) == 0 {
		t.Fatalf("read %d endpoints, the dataplane has %d, the simulation policed %d", len(got), len(states), len(want))
	}
	denied := uint64(0)
	for i, e := range got {
		s := states[i]
		if e.Ifindex != s.Ifindex || e.EndpointID != s.EndpointID || e.Revision != s.Revision || e.Isolated != s.Isolated {
			t.Errorf("read %+v, the dataplane reports %+v", e, s)
		}
		counters, err := engine.Dataplane().Counters(e.Ifindex)
		if err != nil {
			t.Fatal(err)
		}
		w := *want[e.Ifindex]
		// Bytes are the dataplane's business; packets are the verdicts seen.
		for _, c := range []*dataplane.DirCounters{&counters.Ingress, &counters.Egress} {
			c.AllowBytes, c.DenyBytes = 0, 0
		}
		readPackets := e.Counters
		for _, c := range []*dataplane.DirCounters{&readPackets.Ingress, &readPackets.Egress} {
			c.AllowBytes, c.DenyBytes = 0, 0
		}
		if readPackets != counters || readPackets != w {
			t.Errorf("ifindex %d: read counters %+v, dataplane %+v, simulation verdicts %+v", e.Ifindex, readPackets, counters, w)
		}
		denied += e.Counters.Ingress.DenyPackets
	}
	if denied == 0 {
		t.Error("no denied packet counted: the scenario denies some")
	}
	var b strings.Builder
	if err := node.WriteEndpoints(&b, got, nil); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(b.String(), "\n"); lines != len(got)+1 || !strings.Contains(b.String(), "isolated") {
		t.Errorf("table of %d lines for %d endpoints:\n%s", lines, len(got), b.String())
	}
}

// The tables read back from the pinned maps are the ones dataplane/compile
// makes of each pod's policy.
func TestRulesMatchTheCompiledPolicy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to load eBPF programs")
	}
	for _, file := range []string{"ingress-from-namespace.yaml", "egress-dns-ipblock.yaml", "named-ports.json"} {
		t.Run(file, func(t *testing.T) { rulesMatchTheCompiledPolicy(t, file) })
	}
}

func rulesMatchTheCompiledPolicy(t *testing.T, file string) {
	f, err := os.Open("../cli/testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := manifest.Load(file, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	model, err := simulate.Build(objs)
	if err != nil {
		t.Fatal(err)
	}
	engine, err := bpfengine.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := engine.Close(); err != nil {
			t.Error(err)
		}
	})
	probes, err := probe.Plan(objs, probe.Options{Ports: []probe.Port{{Protocol: "TCP", Port: 80}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := model.Run(engine, probes); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for i := range objs.Pods {
		pod := probe.Pod{Namespace: objs.Pods[i].Namespace, Name: objs.Pods[i].Name}
		ifindex, ok := engine.Ifindex(pod)
		if !ok {
			continue
		}
		got, err := node.Rules(engine.PinPath(), ifindex)
		if err != nil {
			t.Fatal(err)
		}
		ep := model.Endpoint(pod)
		for dir := range 2 {
			d := ep.Of(policy.Dir(dir))
			if !d.Isolated {
				if got[dir] != nil {
					t.Errorf("%s %s: tables read for a direction that is not isolated", pod, policy.Dir(dir))
				}
				continue
			}
			c, err := compile.Compile(d)
			if err != nil {
				t.Fatal(err)
			}
			if want := dataplane.CanonicalTables(c); !reflect.DeepEqual(got[dir], want) {
				t.Errorf("%s %s: read %+v, compiled %+v", pod, policy.Dir(dir), got[dir], want)
			}
			checked++
		}
	}
	if checked == 0 {
		t.Error("no isolated direction checked")
	}
}

func TestReadWithoutStateSaysWhere(t *testing.T) {
	_, err := node.Read(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "no dataplane state at") {
		t.Errorf("error %v, want no dataplane state", err)
	}
}
