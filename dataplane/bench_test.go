package dataplane_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/palisade-net/palisade/dataplane/hotpath"
)

// benchRounds: each case runs this many times, interleaved with the empty
// program's runs, so that drift of a shared machine hits all cases alike;
// the medians over rounds are reported.
const benchRounds = 7

// BenchmarkHotPath reports ns per packet of each case and its ratio to the
// empty TC program measured in the same rounds (targets: established <= 1.6,
// denied <= 2.5, first packet <= 6, flat across rule counts).
func BenchmarkHotPath(b *testing.B) {
	scenarios := []struct {
		name string
		s    hotpath.Scenario
	}{
		{"cidrs=1", hotpath.Scenario{Endpoints: 1, CIDRs: 1}},
		{"cidrs=1000", hotpath.Scenario{Endpoints: 1, CIDRs: 1000}},
		{"cidrs=50000", hotpath.Scenario{Endpoints: 1, CIDRs: 50000}},
		{"portranges=1000", hotpath.Scenario{Endpoints: 1, CIDRs: 1, PortRanges: 1000}},
		{"ipv6/cidrs=1000", hotpath.Scenario{Endpoints: 1, CIDRs: 1000, IPv6: true}},
		{"endpoints=250/cidrs=1000", hotpath.Scenario{Endpoints: 250, CIDRs: 1000}},
	}
	for _, sc := range scenarios {
		var bench *hotpath.Bench // set up once, on the first run of the sub-benchmark
		b.Cleanup(func() {
			if bench != nil {
				bench.Close()
			}
		})
		b.Run(sc.name, func(b *testing.B) {
			if bench == nil {
				var err error
				if bench, err = hotpath.Setup(sc.s); err != nil {
					b.Fatal(err)
				}
			}
			cases := []hotpath.Case{hotpath.Empty, hotpath.Established, hotpath.Denied, hotpath.EmptySingle, hotpath.FirstPacket}
			ns := map[hotpath.Case][]float64{}
			var established, denied, first []float64
			for range benchRounds {
				round := map[hotpath.Case]float64{}
				for _, c := range cases {
					packets := max(b.N/benchRounds, 1)
					if c == hotpath.EmptySingle || c == hotpath.FirstPacket {
						packets = min(packets, 3000) // one syscall per packet
					}
					d, err := bench.Run(c, packets)
					if err != nil {
						b.Fatalf("%v: %v", c, err)
					}
					round[c] = float64(d.Nanoseconds())
					ns[c] = append(ns[c], round[c])
				}
				established = append(established, round[hotpath.Established]/round[hotpath.Empty])
				denied = append(denied, round[hotpath.Denied]/round[hotpath.Empty])
				first = append(first, round[hotpath.FirstPacket]/round[hotpath.EmptySingle])
			}
			for _, c := range cases {
				b.ReportMetric(median(ns[c]), fmt.Sprintf("%v-ns/pkt", c))
			}
			b.ReportMetric(median(established), "established/empty")
			b.ReportMetric(median(denied), "denied/empty")
			b.ReportMetric(median(first), "first/empty")
		})
	}
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}
