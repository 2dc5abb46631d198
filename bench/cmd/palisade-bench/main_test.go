package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-net/palisade/bench/regress"
	"github.com/palisade-net/palisade/bench/result"
)

func TestWriteOutputsWritesEveryFile(t *testing.T) {
	r := &result.Run{Mode: "short", Environment: environment()}
	for _, m := range []result.Measurement{
		{Name: "HotPath/denied/ipv4", Iterations: 10, Metrics: []result.Metric{{Value: 50, Unit: "ns/op"}, {Value: 1.4, Unit: result.RatioUnit, Target: result.AtMost(2.5), Gate: true}}},
		{Name: "ControlPlane/compile/pods=1", Iterations: 1, Metrics: []result.Metric{{Value: 1e6, Unit: "ns/op"}}},
	} {
		if err := r.Add(m); err != nil {
			t.Fatal(err)
		}
	}
	out := t.TempDir()
	if err := writeOutputs(r, regress.Check(r, nil), regress.DefaultTolerance, out); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"run.json":         `"name": "HotPath/denied/ipv4"`,
		"hotpath.txt":      "BenchmarkHotPath/denied/ipv4\t10\t50 ns/op\t1.4 ratio\n",
		"controlplane.txt": "BenchmarkControlPlane/compile/pods=1\t1\t1e+06 ns/op\n",
		"summary.md":       "**PASS**",
		"chart.png":        "\x89PNG",
	} {
		data, err := os.ReadFile(filepath.Join(out, file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), want) {
			t.Errorf("%s lacks %q", file, want)
		}
	}
}

func TestShortModeFitsTheCIBudget(t *testing.T) {
	short, full := hotPathConfig("short"), hotPathConfig("full")
	if len(short.Sizes) >= len(full.Sizes) || short.Repeat >= full.Repeat {
		t.Fatalf("short hot path %+v is not smaller than full %+v", short, full)
	}
	if len(full.Sizes) != 7 || len(full.Families) != 2 {
		t.Fatalf("full hot path: %d sizes x %d families, want 7 x IPv4, IPv6", len(full.Sizes), len(full.Families))
	}
	if full.PinPath(3) == full.PinPath(4) || !stalePin.MatchString(filepath.Base(full.PinPath(3))) {
		t.Fatalf("pin paths %s, %s: not distinct, or not what the stale sweep recognises", full.PinPath(3), full.PinPath(4))
	}
}

func TestRunningSomePartsKeepsTheOthers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.json")
	previous := &result.Run{}
	for _, name := range []string{"HotPath/a", "Traffic/b", "NodeAgent/c"} {
		if err := previous.Add(result.Measurement{Name: name, Iterations: 1, Metrics: []result.Metric{{Value: 1, Unit: "x"}}}); err != nil {
			t.Fatal(err)
		}
	}
	previous.Skip("ControlPlane", "failed earlier")
	if err := previous.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	now := &result.Run{}
	if err := now.Add(result.Measurement{Name: "Traffic/new", Iterations: 1, Metrics: []result.Metric{{Value: 2, Unit: "x"}}}); err != nil {
		t.Fatal(err)
	}
	if err := keepOtherParts(now, path, "Traffic,ControlPlane"); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range now.Measurements {
		names = append(names, m.Name)
	}
	if strings.Join(names, " ") != "HotPath/a NodeAgent/c Traffic/new" {
		t.Fatalf("measurements %v", names)
	}
	if len(now.Skipped) != 0 {
		t.Fatalf("the re-run part's old failure was kept: %v", now.Skipped)
	}
}
