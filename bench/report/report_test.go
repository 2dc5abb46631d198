package report

import (
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-net/palisade/bench/regress"
	"github.com/palisade-net/palisade/bench/result"
)

func sampleRun(t *testing.T, establishedRatio float64) *result.Run {
	t.Helper()
	run := &result.Run{Mode: "short", Environment: map[string]string{"kernel": "6.18"}}
	for _, m := range []result.Measurement{
		{Name: "HotPath/established/ipv4/cidrs=1", Iterations: 1000, Metrics: []result.Metric{
			{Value: 40, Unit: "ns/op"}, {Value: establishedRatio, Unit: result.RatioUnit, Target: result.AtMost(1.6), Gate: true},
		}},
		{Name: "Traffic/request-response/tcp-ipv4", Iterations: 1000, Metrics: []result.Metric{
			{Value: 25000, Unit: "p50-ns"},
			{Value: 5000, Unit: "added-p50-ns", Target: result.AtMost(2000)},
		}},
	} {
		if err := run.Add(m); err != nil {
			t.Fatal(err)
		}
	}
	run.Skip("ControlPlane", "not built yet")
	return run
}

func TestSummaryShowsVerdictRowsAndSkippedParts(t *testing.T) {
	baseline := &regress.Baseline{Tolerance: 0.25, Ratios: map[string]float64{"HotPath/established/ipv4/cidrs=1": 1.2}}
	passing := Summary(sampleRun(t, 1.3), regress.Check(sampleRun(t, 1.3), baseline), 0.25)
	for _, want := range []string{
		"**PASS**: 1 gating same-run ratios, 0 more than their tolerance (25% unless the baseline says otherwise)",
		"| `HotPath/established/ipv4/cidrs=1` | 40 ns/op | 1.300 | <= 1.6 | 1.200 | ok |",
		"25.0k p50-ns, 5000 added-p50-ns (misses target <= 2000)",
		"- ControlPlane: not built yet",
		"![gating ratios](chart.png)",
	} {
		if !strings.Contains(passing, want) {
			t.Errorf("summary lacks %q:\n%s", want, passing)
		}
	}
	failing := Summary(sampleRun(t, 2.5), regress.Check(sampleRun(t, 2.5), baseline), 0.25)
	if !strings.Contains(failing, "**FAIL**") || !strings.Contains(failing, "**REGRESSED, MISSES TARGET**") {
		t.Errorf("a 2.5 ratio against baseline 1.2 and target 1.6 does not show as a failure:\n%s", failing)
	}
}

func colorsIn(t *testing.T, path string) map[color.RGBA]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	seen := map[color.RGBA]bool{}
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 2 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 2 {
			r, g, b, a := img.At(x, y).RGBA()
			seen[color.RGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(b >> 8), A: uint8(a >> 8)}] = true
		}
	}
	return seen
}

func TestChartColoursHotPathKindsAndOtherRatiosByTarget(t *testing.T) {
	for _, c := range []struct {
		throughput float64
		wantRed    bool
	}{{0.99, false}, {0.5, true}} {
		run := sampleRun(t, 1.3)
		err := run.Add(result.Measurement{Name: "Traffic/throughput", Iterations: 1, Metrics: []result.Metric{
			{Value: c.throughput, Unit: result.RatioUnit, Target: result.AtLeast(0.97), Gate: true},
		}})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "chart.png")
		if err := Chart(run, path); err != nil {
			t.Fatal(err)
		}
		seen := colorsIn(t, path)
		if !seen[scenarioColors[0]] {
			t.Errorf("throughput %v: no bar in the first packet kind's colour", c.throughput)
		}
		if seen[red] != c.wantRed || seen[green] == c.wantRed {
			t.Errorf("throughput %v: red bar %v, green bar %v; want red %v", c.throughput, seen[red], seen[green], c.wantRed)
		}
	}
}

func TestChartRefusesARunWithoutRatios(t *testing.T) {
	if err := Chart(&result.Run{}, filepath.Join(t.TempDir(), "chart.png")); err == nil {
		t.Fatal("charted nothing")
	}
}
