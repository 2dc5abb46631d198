package result

import (
	"bytes"
	"math"
	"path/filepath"
	"strings"
	"testing"
)

func sampleRun(t *testing.T) *Run {
	t.Helper()
	run := &Run{Mode: "short", Environment: map[string]string{"goos": "linux", "cpu": "test cpu"}}
	for _, m := range []Measurement{
		{Name: "HotPath/established/ipv4/cidrs=1", Iterations: 100000, Metrics: []Metric{
			{Value: 41.5, Unit: "ns/op"}, {Value: 1.25, Unit: RatioUnit, Target: AtMost(1.6), Gate: true},
		}},
		{Name: "Traffic/throughput/tcp", Iterations: 3, Metrics: []Metric{
			{Value: 9.5e9, Unit: "bits/s"}, {Value: 0.98, Unit: RatioUnit, Target: AtLeast(0.97), Gate: true},
		}},
	} {
		if err := run.Add(m); err != nil {
			t.Fatal(err)
		}
	}
	return run
}

func TestBenchTextIsTheGoBenchmarkFormat(t *testing.T) {
	var out bytes.Buffer
	if err := sampleRun(t).WriteBenchText(&out); err != nil {
		t.Fatal(err)
	}
	want := "cpu: test cpu\ngoos: linux\n" +
		"BenchmarkHotPath/established/ipv4/cidrs=1\t100000\t41.5 ns/op\t1.25 ratio\n" +
		"BenchmarkTraffic/throughput/tcp\t3\t9.5e+09 bits/s\t0.98 ratio\n"
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}

func TestBenchTextRepeatsLinesPerSample(t *testing.T) {
	run := &Run{}
	err := run.Add(Measurement{Name: "HotPath/x", Iterations: 300, Metrics: []Metric{
		{Value: 10, Unit: "ns/op", Samples: []float64{10, 12, 11}},
		{Value: 2, Unit: RatioUnit, Samples: []float64{2, 2.4, 2.2}, Gate: true},
		{Value: 5, Unit: "B"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run.WriteBenchText(&out); err != nil {
		t.Fatal(err)
	}
	want := "BenchmarkHotPath/x\t100\t10 ns/op\t2 ratio\t5 B\n" +
		"BenchmarkHotPath/x\t100\t12 ns/op\t2.4 ratio\t5 B\n" +
		"BenchmarkHotPath/x\t100\t11 ns/op\t2.2 ratio\t5 B\n"
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}

func TestBenchTextFiltersByGroup(t *testing.T) {
	var out bytes.Buffer
	if err := sampleRun(t).WriteBenchText(&out, "Traffic"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "HotPath") || !strings.Contains(out.String(), "BenchmarkTraffic/") {
		t.Fatalf("group filter wrong:\n%s", out.String())
	}
	if err := sampleRun(t).WriteBenchText(&out, "ControlPlane"); err == nil {
		t.Fatal("writing an empty group succeeded")
	}
}

func TestJSONRoundTrip(t *testing.T) {
	run := sampleRun(t)
	run.Skip("controlplane", "controller/compile has no compiler yet")
	path := filepath.Join(t.TempDir(), "run.json")
	if err := run.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := back.Find("Traffic/throughput/tcp")
	if !ok {
		t.Fatal("measurement lost")
	}
	ratio, ok := m.Metric(RatioUnit)
	if !ok || ratio.Value != 0.98 || !ratio.Gate || !ratio.Target.HigherIsBetter() || *ratio.Target.Min != 0.97 {
		t.Fatalf("ratio changed in the round trip: %+v", ratio)
	}
	if back.Skipped["controlplane"] == "" {
		t.Fatal("skipped part lost")
	}
}

func TestAddRejectsWhatCannotBeReadBack(t *testing.T) {
	run := &Run{}
	for name, m := range map[string]Measurement{
		"space in name":     {Name: "Hot Path", Iterations: 1, Metrics: []Metric{{Value: 1, Unit: "ns/op"}}},
		"no iterations":     {Name: "A", Metrics: []Metric{{Value: 1, Unit: "ns/op"}}},
		"no metrics":        {Name: "A", Iterations: 1},
		"space in unit":     {Name: "A", Iterations: 1, Metrics: []Metric{{Value: 1, Unit: "ns op"}}},
		"NaN":               {Name: "A", Iterations: 1, Metrics: []Metric{{Value: math.NaN(), Unit: "ns/op"}}},
		"gate on non-ratio": {Name: "A", Iterations: 1, Metrics: []Metric{{Value: 1, Unit: "ns/op", Gate: true}}},
	} {
		if err := run.Add(m); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ok := Measurement{Name: "A", Iterations: 1, Metrics: []Metric{{Value: 1, Unit: "ns/op"}}}
	if err := run.Add(ok); err != nil {
		t.Fatal(err)
	}
	if err := run.Add(ok); err == nil {
		t.Fatal("duplicate name accepted")
	}
}

func TestLimitTolerance(t *testing.T) {
	for _, c := range []struct {
		limit *Limit
		value float64
		met   bool
	}{
		{AtMost(2), 2.4, true},
		{AtMost(2), 2.6, false},
		{AtLeast(0.97), 0.75, true},
		{AtLeast(0.97), 0.7, false},
		{nil, 1e9, true},
	} {
		if got := c.limit.Met(c.value, 0.25); got != c.met {
			t.Errorf("%s met by %v with 25%%: got %v", c.limit, c.value, got)
		}
	}
}
