package agent

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"

	"github.com/palisade-net/palisade/agent/policyset"
	"github.com/palisade-net/palisade/dataplane"
	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/test/podnet"
)

// bareAgent is an agent without Kubernetes, to drive apply directly.
func bareAgent(t testing.TB, dp *dataplane.Dataplane, synced bool) *Agent {
	t.Helper()
	a := &Agent{
		cfg: Config{Mode: Standard}, log: logr.Discard(), dp: dp, synced: synced,
		links: map[int]linkInfo{}, programmed: map[int]*policy.Endpoint{}, attached: map[int]bool{},
		pinned: map[int]bool{}, heldAtStart: map[int]bool{}, placed: map[int]bool{}, measured: map[int]bool{},
		enforced: map[int]bool{}, started: time.Now(),
	}
	var err error
	if a.metrics, err = newMetrics(a); err != nil {
		t.Fatal(err)
	}
	eps, err := dp.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range eps {
		a.pinned[e.Ifindex] = true
		a.heldAtStart[e.Ifindex] = true
	}
	return a
}

func revisions(t *testing.T, dp *dataplane.Dataplane) map[int]uint32 {
	t.Helper()
	eps, err := dp.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]uint32{}
	for _, e := range eps {
		out[e.Ifindex] = e.Revision
	}
	return out
}

// TestApplyAdoptsPinnedStateThenRemovesStale: an agent started over pinned
// state changes nothing before its first sync, reprograms identical
// policies as no-ops, and then removes what belongs to a vanished veth.
func TestApplyAdoptsPinnedStateThenRemovesStale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	network, err := podnet.New(podnet.Config{Prefix: fmt.Sprintf("pap%d", os.Getpid()%1000), IPv4Range: netip.MustParsePrefix("100.97.6.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { network.Close() })
	a, err := network.AddPod("ns/a", netip.MustParseAddr("100.97.6.10"), netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := network.AddPod("ns/b", netip.MustParseAddr("100.97.6.11"), netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	linkA, _ := netlink.LinkByName(a.HostVeth)
	linkB, _ := netlink.LinkByName(b.HostVeth)
	ia, ib := linkA.Attrs().Index, linkB.Attrs().Index

	cfg := dataplane.Config{PinPath: filepath.Join("/sys/fs/bpf", fmt.Sprintf("palisade-applytest-%d", os.Getpid())), ConntrackSize: 1024, RuleCapacity: 64, PortRuleCapacity: 64, MaxEndpoints: 16, FragmentSize: 64, EventRingBytes: 1 << 16}
	dp1, err := dataplane.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dp, err := dataplane.Open(cfg)
		if err == nil {
			err = dp.Purge()
			dp.Close()
		}
		if err != nil {
			t.Errorf("purging: %v", err)
		}
	})

	podA, podB := policyset.PodKey{Namespace: "ns", Name: "a"}, policyset.PodKey{Namespace: "ns", Name: "b"}
	epA := &policy.Endpoint{Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{{ID: 7, CIDR: netip.MustParsePrefix("10.0.0.0/8")}}}}
	epB := &policy.Endpoint{Egress: policy.Direction{Isolated: true}}
	links := map[int]linkInfo{ia: {Index: ia, Name: a.HostVeth}, ib: {Index: ib, Name: b.HostVeth}}
	first := bareAgent(t, dp1, true)
	errs := first.apply(planInput{Links: links}, map[int]target{
		ia: {Pod: &podA, Endpoint: epA, Attach: true, Settled: true},
		ib: {Pod: &podB, Endpoint: epB, Attach: true, Settled: true},
	})
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	before := revisions(t, dp1)
	if len(before) != 2 {
		t.Fatalf("programmed %v", before)
	}
	dp1.Close()

	dp2, err := dataplane.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	second := bareAgent(t, dp2, false)
	if !second.pinned[ia] || !second.pinned[ib] {
		t.Fatalf("pinned endpoints not adopted: %v", second.pinned)
	}
	// Before the first sync, even a strict plan denying everything leaves
	// pinned endpoints alone, and nothing is removed.
	second.apply(planInput{Links: links}, map[int]target{ia: {Endpoint: denyAll, Attach: true}})
	if got := revisions(t, dp2); got[ia] != before[ia] || got[ib] != before[ib] {
		t.Fatalf("state changed before the first sync: %v -> %v", before, got)
	}

	// b's veth vanishes; after the sync a keeps its revision (identical
	// content) and b's state is gone.
	if err := netlink.LinkDel(linkB); err != nil {
		t.Fatal(err)
	}
	delete(links, ib)
	second.synced = true
	if errs := second.apply(planInput{Links: links}, map[int]target{ia: {Pod: &podA, Endpoint: epA, Attach: true, Settled: true}}); len(errs) != 0 {
		t.Fatal(errs)
	}
	got := revisions(t, dp2)
	if _, left := got[ib]; left || got[ia] != before[ia] {
		t.Fatalf("after sync: %v (before %v)", got, before)
	}
	eps, _ := dp2.Endpoints()
	if len(eps) != 1 || !eps[0].Attached {
		t.Fatalf("endpoints %+v", eps)
	}
}

// BenchmarkNewInterfaceEnforced measures the agent's work between a new
// veth's link event and its isolation: one apply of an isolating target
// (attach both programs, set a deny-all policy), then releasing it.
func BenchmarkNewInterfaceEnforced(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	name := fmt.Sprintf("pab%d", os.Getpid()%10000)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		b.Fatal(err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		b.Fatal(err)
	}
	defer netlink.LinkDel(link)
	cfg := dataplane.Config{PinPath: filepath.Join("/sys/fs/bpf", fmt.Sprintf("palisade-applybench-%d", os.Getpid())), ConntrackSize: 1024, RuleCapacity: 64, PortRuleCapacity: 64, MaxEndpoints: 16, FragmentSize: 64, EventRingBytes: 1 << 16}
	dp, err := dataplane.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := dp.Purge(); err != nil {
			b.Error(err)
		}
		dp.Close()
	}()
	a := bareAgent(b, dp, true)
	index := link.Attrs().Index
	links := map[int]linkInfo{index: {Index: index, Name: name, FirstSeen: time.Now()}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if errs := a.apply(planInput{Links: links}, map[int]target{index: {Endpoint: denyAll, Attach: true}}); len(errs) != 0 {
			b.Fatal(errs)
		}
		b.StopTimer()
		a.apply(planInput{Links: links}, map[int]target{})
		b.StartTimer()
	}
}
