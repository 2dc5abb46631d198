// Package hotpath drives the dataplane's hot-path measurement core
// (dataplane/hotpath: BPF_PROG_TEST_RUN of the TC programs beside an empty
// pass-through program) over the matrix of issue #5, alternating the
// dataplane and the empty program batch by batch, and turns the outcome
// into same-run ratios: established flows, first packets of allowed flows
// and denied packets, IPv4 and IPv6, as rules and endpoints grow.
package hotpath

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	dphotpath "github.com/palisade-net/palisade/dataplane/hotpath"

	"github.com/palisade-net/palisade/bench/result"
)

// Packet is one kind of measured packet with the empty-program case it is
// compared with.
type Packet struct {
	Name      string
	Case      Case
	Reference Case
	// Target is the limit on the ratio; 0 for none.
	Target float64
	// Single: one run per packet (each a new flow), not a repeated batch.
	Single bool
	// NoGrowth: the cost does not depend on the rules; no growth ratio.
	NoGrowth bool
}

// Case re-exports the core's packet cases.
type Case = dphotpath.Case

// Packets in report order.
var Packets = []Packet{
	{Name: "established", Case: dphotpath.Established, Reference: dphotpath.Empty, Target: 1.6},
	{Name: "first-packet", Case: dphotpath.FirstPacket, Reference: dphotpath.EmptySingle, Target: 6, Single: true},
	// A new flow of a peer not seen before: the rules' decision for it is
	// not cached, so the CIDR trie and port sets are looked up.
	{Name: "first-packet-new-peer", Case: dphotpath.FirstPacketNewPeer, Reference: dphotpath.EmptySingle, Single: true},
	{Name: "denied", Case: dphotpath.Denied, Reference: dphotpath.Empty, Target: 2.5},
	// The same packets with the flow cache off: what a flow the cache
	// does not hold (evicted, or judged again each second) costs.
	{Name: "established-full-path", Case: dphotpath.EstablishedFullPath, Reference: dphotpath.Empty},
	{Name: "denied-full-path", Case: dphotpath.DeniedFullPath, Reference: dphotpath.Empty},
	// The kernel's part of a first packet: a program that only inserts the
	// flow into an LRU hash like the conntrack's, measured like first
	// packets. What the 6x first-packet target leaves to everything else.
	{Name: "lru-insert", Case: dphotpath.LRUInsert, Reference: dphotpath.EmptySingle, Single: true, NoGrowth: true},
	// The floor of a first packet of a new peer on these kernel structures:
	// the lookup of the peer in the measured endpoint's CIDR table, then
	// the LRU insert, nothing else (no parsing, endpoint, ports, counters,
	// events).
	{Name: "floor", Case: dphotpath.Floor, Reference: dphotpath.EmptySingle, Single: true},
}

// Size is one point of the matrix: CIDR rules and TCP port ranges of the
// measured endpoint's ingress, and endpoints programmed on the node (each
// with the same policy).
type Size struct {
	CIDRs, PortRanges, Endpoints int
}

func (s Size) String() string {
	return "cidrs=" + strconv.Itoa(s.CIDRs) + "/ports=" + strconv.Itoa(s.PortRanges) + "/endpoints=" + strconv.Itoa(s.Endpoints)
}

// Config sizes a measurement.
type Config struct {
	Sizes    []Size
	Families []int // 4, 6
	// Repeat is the packets of one batch of a repeated case.
	Repeat int
	// Rounds alternate reference and dataplane batches; the fastest batch
	// of each counts, every round is a sample.
	Rounds int
	// Flows is the number of new flows of one first-packet round.
	Flows int
	// Passes over the whole matrix (at least 1), each running Rounds rounds
	// of every size on a fresh setup: other work on the machine comes and
	// goes over seconds, and spreading a size's rounds over the run lets
	// its fastest round come from a quiet moment.
	Passes int
	// PinPath gives the bpffs directory of the i-th setup.
	PinPath func(i int) string
}

// Measure runs cfg and returns one measurement per packet kind, family
// and size, plus how each kind's cost grows from the fewest to the most
// CIDRs.
func Measure(cfg Config) ([]result.Measurement, error) {
	if cfg.Repeat < 1 || cfg.Rounds < 1 || cfg.Flows < 1 || len(cfg.Sizes) == 0 || len(cfg.Families) == 0 || cfg.PinPath == nil {
		return nil, fmt.Errorf("hotpath: config %+v: every count must be positive and PinPath set", cfg)
	}
	for _, family := range cfg.Families {
		if family != 4 && family != 6 {
			return nil, fmt.Errorf("hotpath: family %d: want 4 or 6", family)
		}
	}
	timed := map[string]*rounds{}
	var order []string
	setups := 0
	for range max(cfg.Passes, 1) {
		for _, size := range cfg.Sizes {
			for _, family := range cfg.Families {
				bench, err := dphotpath.Setup(dphotpath.Scenario{
					Endpoints: size.Endpoints, CIDRs: size.CIDRs, PortRanges: size.PortRanges,
					IPv6: family == 6, PinPath: cfg.PinPath(setups),
				})
				setups++
				if err != nil {
					return nil, fmt.Errorf("hotpath: set up IPv%d %v: %w", family, size, err)
				}
				err = measureSetup(bench, cfg, size, family, func(name string, r rounds) {
					if timed[name] == nil {
						timed[name] = &rounds{}
						order = append(order, name)
					}
					timed[name].cost = append(timed[name].cost, r.cost...)
					timed[name].ref = append(timed[name].ref, r.ref...)
				})
				if closeErr := bench.Close(); err == nil && closeErr != nil {
					err = fmt.Errorf("hotpath: close: %w", closeErr)
				}
				if err != nil {
					return nil, fmt.Errorf("hotpath: IPv%d %v: %w", family, size, err)
				}
			}
		}
	}
	var out []result.Measurement
	for _, name := range order {
		p := packetOf(name)
		packets := cfg.Repeat
		if p.Single {
			packets = cfg.Flows
		}
		out = append(out, result.Measurement{
			Name:       name,
			Iterations: len(timed[name].cost) * packets,
			Metrics:    timed[name].metrics(p.Target),
		})
	}
	return append(out, growth(out, cfg)...), nil
}

// packetOf is the packet kind a measurement name starts with.
func packetOf(name string) Packet {
	for _, p := range Packets {
		if strings.HasPrefix(name, "HotPath/"+p.Name+"/") {
			return p
		}
	}
	return Packet{}
}

// measureSetup runs every packet kind on one setup and hands each kind's
// rounds to add under its measurement name.
func measureSetup(bench *dphotpath.Bench, cfg Config, size Size, family int, add func(string, rounds)) error {
	for _, p := range Packets {
		packets := cfg.Repeat
		if p.Single {
			packets = cfg.Flows
		}
		timed, err := alternate(bench, p, packets, cfg.Rounds)
		if err != nil {
			return fmt.Errorf("%s: %w", p.Name, err)
		}
		add("HotPath/"+p.Name+"/ipv"+strconv.Itoa(family)+"/"+size.String(), timed)
	}
	return nil
}

// rounds holds the per-round times of the dataplane program and of the
// reference.
type rounds struct {
	cost, ref []time.Duration
}

// metrics reports the fastest round of each (the least disturbed by other
// work on the machine) and their ratio, with every round as samples.
func (r rounds) metrics(target float64) []result.Metric {
	cost, ref := slices.Min(r.cost), slices.Min(r.ref)
	var limit *result.Limit
	if target > 0 {
		limit = result.AtMost(target)
	}
	var costs, refs, ratios []float64
	for i := range r.cost {
		costs = append(costs, nanoseconds(r.cost[i]))
		refs = append(refs, nanoseconds(r.ref[i]))
		ratios = append(ratios, float64(r.cost[i])/float64(r.ref[i]))
	}
	return []result.Metric{
		{Value: nanoseconds(cost), Unit: "ns/op", Samples: costs},
		{Value: nanoseconds(ref), Unit: "passthrough-ns/op", Samples: refs},
		{Value: float64(cost) / float64(ref), Unit: result.RatioUnit, Target: limit, Gate: true, Samples: ratios},
	}
}

func nanoseconds(d time.Duration) float64 { return float64(d) / float64(time.Nanosecond) }

// alternate runs the reference and the packet kind in turn, roundCount
// times. A repeated kind runs as one batch per round; a single-run kind
// (first packets) runs packet by packet, alternating, and a round's time
// is the trimmed mean of its packets' (see trimmedMean). The
// core checks every verdict: a packet that does not take the expected
// path is an error, not a number.
func alternate(bench *dphotpath.Bench, p Packet, packets, roundCount int) (rounds, error) {
	var out rounds
	for range roundCount {
		var r, c time.Duration
		var err error
		if p.Single {
			r, c, err = trimmedSingles(bench, p, packets)
		} else {
			r, c, err = batch(bench, p, packets)
		}
		if err != nil {
			return out, err
		}
		if r <= 0 || c <= 0 {
			return out, fmt.Errorf("kernel reported %v for the reference and %v for %s", r, c, p.Name)
		}
		out.cost, out.ref = append(out.cost, c), append(out.ref, r)
	}
	return out, nil
}

func batch(bench *dphotpath.Bench, p Packet, packets int) (ref, cost time.Duration, err error) {
	if ref, err = bench.Run(p.Reference, packets); err != nil {
		return 0, 0, err
	}
	cost, err = bench.Run(p.Case, packets)
	return ref, cost, err
}

func trimmedSingles(bench *dphotpath.Bench, p Packet, packets int) (ref, cost time.Duration, err error) {
	refs, costs := make([]time.Duration, 0, packets), make([]time.Duration, 0, packets)
	for range packets {
		r, c, err := batch(bench, p, 1)
		if err != nil {
			return 0, 0, err
		}
		refs, costs = append(refs, r), append(costs, c)
	}
	return trimmedMean(refs), trimmedMean(costs), nil
}

// trimmedMean is the mean of the middle 80% of the samples. The kernel
// times one run with the system clock, whose steps can be coarse (10 ns on
// this project's VM, against about 75 ns for the empty program): the median
// of such samples jumps a whole step, while the mean of many runs, started
// at random points of a step, does not. The trim drops runs that an
// interrupt or a preemption lengthened, and the luckiest ones.
func trimmedMean(samples []time.Duration) time.Duration {
	slices.Sort(samples)
	cut := len(samples) / 10
	kept := samples[cut : len(samples)-cut]
	var sum time.Duration
	for _, s := range kept {
		sum += s
	}
	return sum / time.Duration(len(kept))
}

// growth reports, per packet kind, family and endpoint count, the ratio
// at the most CIDRs over the ratio at the fewest (port ranges 0): 1.0 is
// flat.
func growth(ms []result.Measurement, cfg Config) []result.Measurement {
	var out []result.Measurement
	var endpointCounts []int
	for _, s := range cfg.Sizes {
		if !slices.Contains(endpointCounts, s.Endpoints) {
			endpointCounts = append(endpointCounts, s.Endpoints)
		}
	}
	for _, p := range Packets {
		if p.NoGrowth {
			continue
		}
		for _, family := range cfg.Families {
			for _, endpoints := range endpointCounts {
				var smallest, largest Size
				for _, s := range cfg.Sizes {
					if s.Endpoints != endpoints || s.PortRanges != 0 {
						continue
					}
					if smallest.CIDRs == 0 || s.CIDRs < smallest.CIDRs {
						smallest = s
					}
					if s.CIDRs > largest.CIDRs {
						largest = s
					}
				}
				if smallest.CIDRs == 0 || smallest.CIDRs == largest.CIDRs {
					continue
				}
				prefix := "HotPath/" + p.Name + "/ipv" + strconv.Itoa(family) + "/"
				small, okSmall := find(ms, prefix+smallest.String())
				large, okLarge := find(ms, prefix+largest.String())
				if !okSmall || !okLarge {
					continue
				}
				// Each side is already a ratio to the reference measured beside
				// it, so load that differs between the two setups cancels.
				smallRatio, _ := small.Metric(result.RatioUnit)
				largeRatio, _ := large.Metric(result.RatioUnit)
				out = append(out, result.Measurement{
					Name:       fmt.Sprintf("HotPath/growth/%s/ipv%d/cidrs=%d-to-%d/endpoints=%d", p.Name, family, smallest.CIDRs, largest.CIDRs, endpoints),
					Iterations: large.Iterations,
					Metrics:    []result.Metric{{Value: largeRatio.Value / smallRatio.Value, Unit: result.RatioUnit, Gate: true}},
				})
			}
		}
	}
	return out
}

func find(ms []result.Measurement, name string) (result.Measurement, bool) {
	for _, m := range ms {
		if m.Name == name {
			return m, true
		}
	}
	return result.Measurement{}, false
}
