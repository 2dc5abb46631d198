package controlplane

import (
	"time"

	"github.com/palisade-net/palisade/bench/result"
	"testing"

	"github.com/palisade-net/palisade/controller/compile"
)

func TestClusterPoliciesSelectPodsAndCompileCleanly(t *testing.T) {
	out, err := MeasureCompile(Size{Pods: 1000, Policies: 100}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if out.Problems != 0 {
		t.Fatalf("%d compilation problems in the synthetic cluster", out.Problems)
	}
	if out.Objects < 100 || out.Bytes < out.Objects*200 {
		t.Fatalf("100 policies over 1000 pods gave %d objects, %d bytes", out.Objects, out.Bytes)
	}
	if out.ChangedObjects == 0 || out.ChangedBytes == 0 {
		t.Fatalf("relabelling a pod changed nothing: %+v", out)
	}
	if out.Full <= 0 || out.Change <= 0 || out.Change > out.Full {
		t.Fatalf("times: full %v, change %v", out.Full, out.Change)
	}
	t.Logf("%+v", out)
}

func TestRelabelledPodLeavesItsPolicyAndJoinsAnother(t *testing.T) {
	objs := Cluster(1000, 100)
	namespaces := len(objs.Namespaces)
	index := compile.NewIndexOf(objs)
	changed := Relabelled(500, namespaces)
	affected := index.UpsertPod(&changed)
	if len(affected) < 2 {
		t.Fatalf("moving a pod between apps affected %d policies, want its old and its new one", len(affected))
	}
}

func TestCompileMeasurementsScalingRatio(t *testing.T) {
	outcomes := []CompileOutcome{
		{Size: Size{Pods: 1000, Policies: 100}, Full: 100 * time.Millisecond, Change: time.Millisecond},
		{Size: Size{Pods: 10000, Policies: 100}, Full: 2 * time.Second, Change: 4 * time.Millisecond},
	}
	ms := CompileMeasurements(outcomes, 1)
	if len(ms) != 4 {
		t.Fatalf("%d measurements, want full and change for both sizes", len(ms))
	}
	if _, ok := ms[0].Metric(result.RatioUnit); ok {
		t.Fatal("the smallest size has a scaling ratio to itself")
	}
	scaling, _ := ms[2].Metric(result.RatioUnit)
	if scaling.Value != 2 || !scaling.Gate {
		t.Fatalf("10x pods in 20x time: scaling ratio %+v, want 2", scaling)
	}
	change, _ := ms[3].Metric(result.RatioUnit)
	if change.Value != 0.002 {
		t.Fatalf("change ratio %v, want 4ms/2s", change.Value)
	}
}
