package traffic

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/palisade-net/palisade/bench/result"
	"github.com/palisade-net/palisade/dataplane"
	"github.com/palisade-net/palisade/policy"
)

func TestPercentileNearestRank(t *testing.T) {
	var samples []time.Duration
	for i := 100; i >= 1; i-- {
		samples = append(samples, time.Duration(i))
	}
	if p50, p99, p100 := Percentile(samples, 0.5), Percentile(samples, 0.99), Percentile(samples, 1); p50 != 50 || p99 != 99 || p100 != 100 {
		t.Fatalf("p50 %v p99 %v p100 %v, want 50 99 100", p50, p99, p100)
	}
	if Percentile(nil, 0.5) != 0 {
		t.Fatal("empty samples")
	}
}

func TestOutcomePairsRounds(t *testing.T) {
	// Load halves the throughput of round 2 in both conditions: paired
	// ratios are all 0.9, whatever the medians of each condition.
	without := []Condition{{BitsPerSecond: 10, P50: 20}, {BitsPerSecond: 5, P50: 40}, {BitsPerSecond: 10, P50: 20}}
	with := []Condition{{BitsPerSecond: 9, P50: 21}, {BitsPerSecond: 4.5, P50: 42}, {BitsPerSecond: 9, P50: 21}}
	o := outcomeOf(without, with)
	if o.ThroughputRatio != 0.9 || o.P50Ratio != 1.05 || o.AddedP50 != 1 || o.Without.BitsPerSecond != 10 || o.With.P50 != 21 {
		t.Fatalf("outcome %+v", o)
	}
}

func TestMeasurementsRatios(t *testing.T) {
	o := outcomeOf(
		[]Condition{{BitsPerSecond: 10e9, P50: 20 * time.Microsecond, P99: 40 * time.Microsecond}},
		[]Condition{{BitsPerSecond: 9.5e9, P50: 25 * time.Microsecond, P99: 50 * time.Microsecond}},
	)
	ms := Measurements(o, Config{Rounds: 3, Exchanges: 1000, MessageBytes: 64}, 100)
	run := &result.Run{}
	for _, m := range ms {
		if err := run.Add(m); err != nil {
			t.Fatal(err)
		}
	}
	tput, _ := ms[0].Metric(result.RatioUnit)
	if tput.Value != 0.95 || !tput.Gate || tput.Target.Met(tput.Value, 0) {
		t.Fatalf("throughput ratio %+v: want 0.95, gating, missing 0.97", tput)
	}
	added, _ := ms[1].Metric("added-p50-ns")
	if added.Value != 5000 || added.Gate || added.Target.Met(added.Value, 0) {
		t.Fatalf("added p50 %+v: want 5000 ns, not gating, missing 2 us", added)
	}
	latency, _ := ms[1].Metric(result.RatioUnit)
	if latency.Value != 1.25 {
		t.Fatalf("latency ratio %v, want 1.25", latency.Value)
	}
}

func needRootAndIperf(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and BPF")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not installed")
	}
}

func newPods(t *testing.T, prefix string) *Pods {
	t.Helper()
	pods, err := NewPods(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pods.Close(); err != nil {
			t.Error(err)
		}
	})
	return pods
}

var shortConfig = Config{Rounds: 1, ThroughputTime: time.Second, Exchanges: 500, MessageBytes: 64}

func checkPlausible(t *testing.T, o Outcome) {
	t.Helper()
	for name, c := range map[string]Condition{"without": o.Without, "with": o.With} {
		if c.BitsPerSecond < 1e6 || c.P50 <= 0 || c.P99 < c.P50 {
			t.Fatalf("%s programs: implausible %+v", name, c)
		}
	}
	t.Logf("without %+v, with %+v", o.Without, o.With)
}

// TestMeasureWithPassThrough runs the real measurement, briefly, with the
// empty program attached: both conditions must carry traffic.
func TestMeasureWithPassThrough(t *testing.T) {
	needRootAndIperf(t)
	pods := newPods(t, "pbtt")
	attach, release, err := PassThroughAttach()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { release() })
	o, err := Measure(pods, shortConfig, attach)
	if err != nil {
		t.Fatal(err)
	}
	checkPlausible(t, o)
}

// TestPalisadeEnforcesWhileMeasured checks the "with programs" condition
// is real enforcement: the measured traffic passes, a connection the
// policy does not allow (server to client) fails while attached and works
// again after detaching.
func TestPalisadeEnforcesWhileMeasured(t *testing.T) {
	needRootAndIperf(t)
	pods := newPods(t, "pbtp")
	d := openDataplane(t)
	attach := PalisadeAttach(d, 100)
	if err := pods.Client.Serve([]uint16{7000}, []policy.Protocol{policy.TCP}); err != nil {
		t.Fatal(err)
	}
	reverse := netip.AddrPortFrom(pods.Client.IPv4, 7000)
	if _, err := pods.Server.Probe(policy.TCP, reverse, time.Second); err != nil {
		t.Fatalf("server to client before attaching: %v", err)
	}
	detach, err := attach(pods.Client, pods.Server)
	if err != nil {
		t.Fatal(err)
	}
	if answer, err := pods.Server.Probe(policy.TCP, reverse, 500*time.Millisecond); err == nil {
		t.Errorf("server reached the client through the policy, answer %q", answer)
	}
	if err := detach(); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Server.Probe(policy.TCP, reverse, time.Second); err != nil {
		t.Fatalf("server to client after detaching: %v", err)
	}
	o, err := Measure(pods, shortConfig, attach)
	if err != nil {
		t.Fatal(err)
	}
	checkPlausible(t, o)
}

func openDataplane(t *testing.T) *dataplane.Dataplane {
	t.Helper()
	if err := os.MkdirAll("/sys/fs/bpf", 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := dataplane.Open(dataplane.Config{PinPath: filepath.Join("/sys/fs/bpf", fmt.Sprintf("palisade-bench-test-%d", os.Getpid())), ConntrackSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Purge(); err != nil {
			t.Errorf("purge: %v", err)
		}
	})
	return d
}
