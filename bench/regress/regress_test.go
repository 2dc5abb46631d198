package regress

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/palisade-net/palisade/bench/result"
)

func runWith(t *testing.T, ratios map[string]float64, target func(name string) *result.Limit) *result.Run {
	t.Helper()
	run := &result.Run{}
	for name, ratio := range ratios {
		err := run.Add(result.Measurement{Name: name, Iterations: 1, Metrics: []result.Metric{
			{Value: 10, Unit: "ns/op"},
			{Value: ratio, Unit: result.RatioUnit, Target: target(name), Gate: true},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return run
}

func noTarget(string) *result.Limit { return nil }

func TestRegressionBeyondToleranceOfBaselineFails(t *testing.T) {
	baseline := &Baseline{Tolerance: 0.25, Ratios: map[string]float64{"HotPath/a": 1.2, "HotPath/b": 1.2}}
	run := runWith(t, map[string]float64{"HotPath/a": 1.49, "HotPath/b": 1.51}, noTarget)
	failed := Failures(Check(run, baseline))
	if len(failed) != 1 || failed[0].Name != "HotPath/b" {
		t.Fatalf("want only HotPath/b (1.51 > 1.2*1.25) to fail, got %+v", failed)
	}
	if !strings.Contains(Explain(Check(run, baseline)), "HotPath/b: 1.51 is more than 25% worse than the baseline 1.2") {
		t.Fatalf("explanation: %q", Explain(Check(run, baseline)))
	}
}

func TestHigherIsBetterRatiosFailWhenTheyDrop(t *testing.T) {
	baseline := &Baseline{Tolerance: 0.1, Ratios: map[string]float64{"Traffic/throughput": 0.99}}
	atLeast := func(string) *result.Limit { return result.AtLeast(0.97) }
	if failed := Failures(Check(runWith(t, map[string]float64{"Traffic/throughput": 1.5}, atLeast), baseline)); len(failed) != 0 {
		t.Fatalf("a higher throughput ratio failed: %+v", failed)
	}
	failed := Failures(Check(runWith(t, map[string]float64{"Traffic/throughput": 0.85}, atLeast), baseline))
	if len(failed) != 1 || len(failed[0].Problems) != 1 || !failed[0].Regressed || !failed[0].MissedTarget || failed[0].TargetMiss == "" {
		t.Fatalf("0.85 is >10%% below both 0.99 and 0.97, want a regression and a target miss, got %+v", failed)
	}
}

func TestTargetMissIsReportedNotFailed(t *testing.T) {
	atMost := func(string) *result.Limit { return result.AtMost(1.6) }
	findings := Check(runWith(t, map[string]float64{"HotPath/new": 1.7}, atMost), &Baseline{Tolerance: 0.25})
	if len(Failures(findings)) != 0 || !findings[0].MissedTarget || findings[0].TargetMiss == "" {
		t.Fatalf("1.7 > 1.6 should be reported as a target miss without failing: %+v", findings)
	}
	findings = Check(runWith(t, map[string]float64{"HotPath/new": 1.6}, atMost), nil)
	if findings[0].MissedTarget || len(Failures(findings)) != 0 {
		t.Fatalf("1.6 <= 1.6 reported as a miss: %+v", findings)
	}
}

func TestBaselineRoundTripKeepsRatiosAShortRunLacks(t *testing.T) {
	old := &Baseline{Tolerance: 0.25, Ratios: map[string]float64{"HotPath/full-only": 1.1, "HotPath/a": 9}}
	run := runWith(t, map[string]float64{"HotPath/a": 1.3}, noTarget)
	path := filepath.Join(t.TempDir(), "baseline.json")
	if err := WriteBaseline(path, BaselineOf(run, 0.25, old, false)); err != nil {
		t.Fatal(err)
	}
	back, err := ReadBaseline(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Ratios["HotPath/a"] != 1.3 || back.Ratios["HotPath/full-only"] != 1.1 || back.Tolerance != 0.25 {
		t.Fatalf("baseline: %+v", back)
	}
	if complete := BaselineOf(run, 0.25, old, true); len(complete.Ratios) != 1 {
		t.Fatalf("a complete run kept ratios it did not measure: %+v", complete.Ratios)
	}
}

func TestReadBaselineRejectsNonsense(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baseline.json")
	for _, b := range []*Baseline{
		{Tolerance: 0, Ratios: map[string]float64{"a": 1}},
		{Tolerance: 0.25, Ratios: map[string]float64{"a": -1}},
	} {
		if err := WriteBaseline(path, b); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadBaseline(path); err == nil {
			t.Errorf("accepted %+v", b)
		}
	}
}

func TestPrefixToleranceOverridesTheDefault(t *testing.T) {
	baseline := &Baseline{
		Tolerance:  0.25,
		Tolerances: map[string]float64{"ControlPlane/": 1.0, "ControlPlane/agent/": 0.1},
		Ratios:     map[string]float64{"ControlPlane/change": 1, "ControlPlane/agent/x": 1, "HotPath/a": 1},
	}
	run := runWith(t, map[string]float64{"ControlPlane/change": 1.9, "ControlPlane/agent/x": 1.15, "HotPath/a": 1.3}, noTarget)
	var failed []string
	for _, f := range Failures(Check(run, baseline)) {
		failed = append(failed, f.Name)
	}
	slices.Sort(failed)
	if !slices.Equal(failed, []string{"ControlPlane/agent/x", "HotPath/a"}) {
		t.Fatalf("failed %v: want the agent ratio (10%%, longest prefix) and the hot path one (25%% default), not the change (100%%)", failed)
	}
	path := filepath.Join(t.TempDir(), "baseline.json")
	if err := WriteBaseline(path, BaselineOf(run, 0.25, baseline, false)); err != nil {
		t.Fatal(err)
	}
	back, err := ReadBaseline(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.ToleranceOf("ControlPlane/agent/x") != 0.1 {
		t.Fatalf("tolerances not carried over: %+v", back.Tolerances)
	}
}
