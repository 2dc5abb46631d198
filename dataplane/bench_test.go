package dataplane_test

import (
	"fmt"
	"testing"

	"github.com/palisade-net/palisade/dataplane/hotpath"
)

// BenchmarkHotPath reports ns per packet of each case and its ratio to the
// empty TC program measured in the same run (targets: established <= 1.6,
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
			ns := map[hotpath.Case]float64{}
			for _, c := range []hotpath.Case{hotpath.Empty, hotpath.Established, hotpath.Denied, hotpath.EmptySingle, hotpath.FirstPacket} {
				packets := b.N
				if c == hotpath.EmptySingle || c == hotpath.FirstPacket {
					packets = min(b.N, 20000) // one syscall per packet
				}
				d, err := bench.Run(c, packets)
				if err != nil {
					b.Fatalf("%v: %v", c, err)
				}
				ns[c] = float64(d.Nanoseconds())
				b.ReportMetric(ns[c], fmt.Sprintf("%v-ns/pkt", c))
			}
			b.ReportMetric(ns[hotpath.Established]/ns[hotpath.Empty], "established/empty")
			b.ReportMetric(ns[hotpath.Denied]/ns[hotpath.Empty], "denied/empty")
			b.ReportMetric(ns[hotpath.FirstPacket]/ns[hotpath.EmptySingle], "first/empty")
		})
	}
}
