package hotpath

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/palisade-net/palisade/bench/result"
)

func TestMeasureSmallMatrix(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: BPF")
	}
	var pins []string
	t.Cleanup(func() {
		for _, p := range pins {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("pin directory %s left behind", p)
				os.RemoveAll(p)
			}
		}
	})
	cfg := Config{
		Sizes:    []Size{{CIDRs: 1, Endpoints: 1}, {CIDRs: 1000, Endpoints: 1}, {CIDRs: 10, PortRanges: 100, Endpoints: 5}},
		Families: []int{4, 6},
		Repeat:   2000, Rounds: 2, Flows: 50, Passes: 2,
		PinPath: func(i int) string {
			p := filepath.Join("/sys/fs/bpf", fmt.Sprintf("palisade-bench-hotpath-test%d-%d", i, os.Getpid()))
			pins = append(pins, p)
			return p
		},
	}
	ms, err := Measure(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// 3 sizes x 2 families x every packet kind, and growth 1 -> 1000 CIDRs
	// for the kinds that grow x 2 families at 1 endpoint.
	growing := 0
	for _, p := range Packets {
		if !p.NoGrowth {
			growing++
		}
	}
	if want := 3*2*len(Packets) + 2*growing; len(ms) != want {
		t.Fatalf("%d measurements, want %d", len(ms), want)
	}
	run := &result.Run{}
	for _, m := range ms {
		if err := run.Add(m); err != nil {
			t.Fatal(err)
		}
		ratio, ok := m.Metric(result.RatioUnit)
		if !ok || ratio.Value <= 0 || !ratio.Gate {
			t.Fatalf("%s: ratio %+v", m.Name, ratio)
		}
		if strings.HasPrefix(m.Name, "HotPath/growth/") {
			continue
		}
		cost, _ := m.Metric("ns/op")
		ref, _ := m.Metric("passthrough-ns/op")
		// two rounds in each of two passes
		if cost.Value <= 0 || ref.Value <= 0 || len(cost.Samples) != 4 || m.Iterations != 4*packetsOf(m.Name, cfg) {
			t.Fatalf("%s: cost %+v, reference %+v", m.Name, cost, ref)
		}
		t.Logf("%s: %.1f ns vs %.1f ns = %.2fx", m.Name, cost.Value, ref.Value, ratio.Value)
	}
	if _, ok := run.Find("HotPath/denied/ipv6/cidrs=10/ports=100/endpoints=5"); !ok {
		t.Fatal("IPv6 denied packet at 5 endpoints missing")
	}
	if _, ok := run.Find("HotPath/growth/first-packet/ipv4/cidrs=1-to-1000/endpoints=1"); !ok {
		t.Fatal("first-packet growth missing")
	}
	full, _ := run.Find("HotPath/established-full-path/ipv4/cidrs=1000/ports=0/endpoints=1")
	cached, _ := run.Find("HotPath/established/ipv4/cidrs=1000/ports=0/endpoints=1")
	fullRatio, _ := full.Metric(result.RatioUnit)
	cachedRatio, _ := cached.Metric(result.RatioUnit)
	if fullRatio.Target != nil || cachedRatio.Target == nil || fullRatio.Value <= cachedRatio.Value {
		t.Fatalf("established with the flow cache off %+v, on %+v: want it slower and without a target", fullRatio, cachedRatio)
	}
}

func TestGrowthIsLargestOverSmallest(t *testing.T) {
	cost := func(name string, ratio float64) result.Measurement {
		return result.Measurement{Name: name, Iterations: 1, Metrics: []result.Metric{{Value: ratio, Unit: result.RatioUnit}}}
	}
	cfg := Config{Sizes: []Size{{CIDRs: 1, Endpoints: 1}, {CIDRs: 50000, Endpoints: 1}, {CIDRs: 1000, PortRanges: 1000, Endpoints: 1}}, Families: []int{4}}
	ms := []result.Measurement{
		cost("HotPath/established/ipv4/cidrs=1/ports=0/endpoints=1", 4),
		cost("HotPath/established/ipv4/cidrs=50000/ports=0/endpoints=1", 5.2),
		cost("HotPath/established/ipv4/cidrs=1000/ports=1000/endpoints=1", 9),
	}
	g := growth(ms, cfg)
	if len(g) != 1 || g[0].Name != "HotPath/growth/established/ipv4/cidrs=1-to-50000/endpoints=1" || g[0].Metrics[0].Value != 1.3 {
		t.Fatalf("growth %+v: want only established 5.2/4, port ranges left out", g)
	}
}

func TestBadConfigIsAnError(t *testing.T) {
	if _, err := Measure(Config{Sizes: []Size{{CIDRs: 1, Endpoints: 1}}, Families: []int{4}, Repeat: 1, Rounds: 1, Flows: 1}); err == nil {
		t.Fatal("no PinPath accepted")
	}
	cfg := Config{Sizes: []Size{{CIDRs: 1, Endpoints: 1}}, Families: []int{5}, Repeat: 1, Rounds: 1, Flows: 1, PinPath: func(int) string { return "/nonexistent" }}
	if _, err := Measure(cfg); err == nil || !strings.Contains(err.Error(), "family 5") {
		t.Fatalf("family 5: %v", err)
	}
}

// TestTrimmedMeanResolvesClockSteps: runs of 74 ns timed by a 10 ns clock
// read 70 or 80; the median is one of the two, the trimmed mean is near 74,
// and a preempted run does not move it.
func TestTrimmedMeanResolvesClockSteps(t *testing.T) {
	var samples []time.Duration
	for i := range 100 {
		if i%10 < 6 {
			samples = append(samples, 70)
		} else {
			samples = append(samples, 80)
		}
	}
	samples[3] = 50_000
	got := trimmedMean(samples)
	if got < 73 || got > 75 {
		t.Fatalf("trimmed mean %v, want 73..75", got)
	}
}

func packetsOf(name string, cfg Config) int {
	if packetOf(name).Single {
		return cfg.Flows
	}
	return cfg.Repeat
}
