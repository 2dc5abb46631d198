package dataplane

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
	"github.com/palisade-net/palisade/policy/policygen"
)

// cacheStep is one step of a replayed sequence: a frame through one
// direction, or (with a policy) a policy change.
type cacheStep struct {
	dir    policy.Dir
	frame  []byte
	policy *policy.Endpoint
}

// flowSequence makes frames that come back to a small pool of flows in
// both directions, with every TCP flag combination, variations and broken
// copies of the pool's headers, and policy changes in between: what the
// cache must judge like the full path.
func flowSequence(r *rand.Rand, steps int) []cacheStep {
	ep := policygen.Endpoint(r)
	gens := [2]*frameGen{newFrameGen(r, &ep.Ingress), newFrameGen(r, &ep.Egress)}
	type flow struct {
		pod, peer         netip.Addr
		podPort, peerPort uint16
		proto             policy.Protocol
	}
	// Few addresses, so that flows differ only in the other address or the
	// ports, and so share the first words of a cache key.
	pods := map[bool][]netip.Addr{false: {policygen.RandomAddr(r, false), policygen.RandomAddr(r, false)},
		true: {policygen.RandomAddr(r, true), policygen.RandomAddr(r, true)}}
	var peers [2][]netip.Addr
	for dir := range peers {
		for range 3 {
			peers[dir] = append(peers[dir], gens[dir].peer())
		}
	}
	var flows []flow
	for range 24 {
		dir := policy.Dir(r.IntN(2))
		peer := peers[dir][r.IntN(len(peers[dir]))]
		flows = append(flows, flow{pod: pods[peer.Is6()][r.IntN(2)], peer: peer, podPort: gens[dir].port(),
			peerPort: gens[dir].port(), proto: []policy.Protocol{policy.TCP, policy.TCP, policy.UDP, policy.SCTP}[r.IntN(4)]})
	}
	flags := []uint8{packet.SYN, packet.SYN | packet.ACK, packet.ACK, packet.ACK | 0x08, packet.ACK, packet.FIN | packet.ACK, 0x04, 0x04 | packet.ACK, 0}
	out := []cacheStep{{policy: ep}}
	for range steps {
		if r.IntN(400) == 0 {
			if r.IntN(2) == 0 {
				ep = policygen.Endpoint(r)
				gens = [2]*frameGen{newFrameGen(r, &ep.Ingress), newFrameGen(r, &ep.Egress)}
			}
			out = append(out, cacheStep{policy: ep})
		}
		f := flows[r.IntN(len(flows))]
		dir := policy.Dir(r.IntN(2))
		s := packet.Spec{Src: f.peer, Dst: f.pod, SrcPort: f.peerPort, DstPort: f.podPort, Protocol: f.proto,
			TCPFlags: flags[r.IntN(len(flags))]}
		if dir == policy.Egress {
			s.Src, s.Dst, s.SrcPort, s.DstPort = f.pod, f.peer, f.podPort, f.peerPort
		}
		if r.IntN(3) == 0 {
			s.Payload = make([]byte, r.IntN(100))
		}
		if r.IntN(5) == 0 {
			if f.peer.Is4() {
				gens[dir].ipv4Variations(&s)
			} else {
				gens[dir].ipv6Variations(&s)
			}
		}
		gens[dir].malform(&s)
		out = append(out, cacheStep{dir: dir, frame: packet.Build(s)})
	}
	return out
}

// TestFlowCacheChangesNoVerdict replays sequences of frames that keep
// returning to the same flows, once with the flow and rule caches off and
// once on, from the same empty state, and wants the same verdict for every
// frame. Two slots make every flow and peer evict others and compare keys
// with them.
// The fenced run loads the programs as for arm64 (see loadsReorder).
func TestFlowCacheChangesNoVerdict(t *testing.T) {
	for _, slots := range []int{2, 64} {
		t.Run(fmt.Sprintf("slots=%d", slots), func(t *testing.T) { testFlowCacheChangesNoVerdict(t, slots, false) })
	}
	t.Run("slots=64/fenced", func(t *testing.T) { testFlowCacheChangesNoVerdict(t, 64, true) })
}

func testFlowCacheChangesNoVerdict(t *testing.T, slots int, fenced bool) {
	d := newFencedDataplane(t, Config{FlowCacheSlots: slots}, fenced)
	ifindex := dummyLink(t)
	r := rand.New(rand.NewPCG(20261123, uint64(slots)))
	sequences, steps := 20, 6000
	if testing.Short() {
		sequences = 4
	}
	replay := func(seq []cacheStep, cache bool) []bool {
		if err := d.SetFlowCache(cache); err != nil {
			t.Fatal(err)
		}
		flushState(t, d)
		var verdicts []bool
		for _, step := range seq {
			if step.policy != nil {
				if _, err := d.SetPolicy(ifindex, step.policy); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := runFrameErr(d, step.dir, ifindex, step.frame)
			if err != nil && truncatedIPHeader(step.frame) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			verdicts = append(verdicts, got)
		}
		return verdicts
	}
	var frames, allowSlots, denySlots, decisions int
	for range sequences {
		seq := flowSequence(r, steps)
		full, cached := replay(seq, false), replay(seq, true)
		allow, deny := flowCacheSlots(t, d)
		allowSlots, denySlots = allowSlots+allow, denySlots+deny
		decisions += ruleCacheSlots(t, d)
		frames += len(full)
		if len(full) != len(cached) {
			t.Fatalf("%d verdicts without the cache, %d with it", len(full), len(cached))
		}
		for i := range full {
			if full[i] != cached[i] {
				t.Fatalf("frame %d: allowed=%v by the full path, %v with the cache", i, full[i], cached[i])
			}
		}
	}
	t.Logf("%d frames judged alike with and without the caches; %d allow and %d deny slots filled, %d decisions of the rules",
		frames, allowSlots, denySlots, decisions)
	if allowSlots == 0 || denySlots == 0 || decisions == 0 {
		t.Fatalf("the caches held %d allows, %d denies and %d decisions: the sequences did not exercise them", allowSlots, denySlots, decisions)
	}
}

// ruleCacheSlots counts the filled slots of every CPU's rule cache.
func ruleCacheSlots(t *testing.T, d *Dataplane) int {
	t.Helper()
	var perCPU []palisadeRuleSlot
	n := 0
	for i := range d.objs.RuleCache.MaxEntries() {
		if err := d.objs.RuleCache.Lookup(i, &perCPU); err != nil {
			t.Fatal(err)
		}
		for _, s := range perCPU {
			if s.Filled != 0 {
				n++
			}
		}
	}
	return n
}

// flowCacheSlots counts the filled slots of every CPU's flow cache.
func flowCacheSlots(t *testing.T, d *Dataplane) (allow, deny int) {
	t.Helper()
	var perCPU []palisadeFlowSlot
	for i := range d.objs.FlowCache.MaxEntries() {
		if err := d.objs.FlowCache.Lookup(i, &perCPU); err != nil {
			t.Fatal(err)
		}
		for _, s := range perCPU {
			switch s.Verdict {
			case 1:
				allow++
			case 2:
				deny++
			}
		}
	}
	return allow, deny
}

// TestDeniedFlowPassesOnceThePodOpensIt: a cached deny of a peer's packet
// no longer holds once the pod opens the same flow itself.
func TestDeniedFlowPassesOnceThePodOpensIt(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, egressOnlyWeb()); err != nil {
		t.Fatal(err)
	}
	pod, peer := podIP, peerIP
	reply := tcp(peer, pod, 80, 40000, packet.ACK)
	for range 3 {
		if runFrame(t, d, policy.Ingress, ifindex, reply) {
			t.Fatal("a peer's packet passed before the pod opened the flow")
		}
	}
	if !runFrame(t, d, policy.Egress, ifindex, tcp(pod, peer, 40000, 80, packet.SYN)) {
		t.Fatal("the pod's SYN to port 80 was dropped")
	}
	if !runFrame(t, d, policy.Ingress, ifindex, reply) {
		t.Fatal("the reply stays denied by the cached deny after the pod opened the flow")
	}
	if err := d.RemovePolicy(ifindex); err != nil {
		t.Fatal(err)
	}
}

// TestCachedFlowIsCutByRevocation: a flow the cache allows is cut on its
// next packet when the policy stops allowing it.
func TestCachedFlowIsCutByRevocation(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, webPolicy()); err != nil {
		t.Fatal(err)
	}
	pod, peer := podIP, netip.MustParseAddr("10.0.1.9")
	data := tcp(peer, pod, 40000, 80, packet.ACK)
	if !runFrame(t, d, policy.Ingress, ifindex, tcp(peer, pod, 40000, 80, packet.SYN)) {
		t.Fatal("SYN to port 80 dropped")
	}
	for range 3 {
		if !runFrame(t, d, policy.Ingress, ifindex, data) {
			t.Fatal("data of the open flow dropped")
		}
	}
	if allow, _ := flowCacheSlots(t, d); allow == 0 {
		t.Fatal("the open flow is not in the cache")
	}
	if _, err := d.SetPolicy(ifindex, &policy.Endpoint{Ingress: policy.Direction{Isolated: true}}); err != nil {
		t.Fatal(err)
	}
	if runFrame(t, d, policy.Ingress, ifindex, data) {
		t.Fatal("the cache let a revoked flow through")
	}
}

// TestCachedFlowStillTracksTCPState: packets that end a connection skip
// the cache, so conntrack sees the FIN that shortens the flow's timeout.
func TestCachedFlowStillTracksTCPState(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, webPolicy()); err != nil {
		t.Fatal(err)
	}
	pod, peer := podIP, netip.MustParseAddr("10.0.1.9")
	steps := []struct {
		dir   policy.Dir
		frame []byte
	}{
		{policy.Ingress, tcp(peer, pod, 40000, 80, packet.SYN)},
		{policy.Egress, tcp(pod, peer, 80, 40000, packet.SYN|packet.ACK)},
		{policy.Ingress, tcp(peer, pod, 40000, 80, packet.ACK)},
		{policy.Ingress, tcp(peer, pod, 40000, 80, packet.ACK)},
		{policy.Ingress, tcp(peer, pod, 40000, 80, packet.ACK)},
		{policy.Ingress, tcp(peer, pod, 40000, 80, packet.FIN|packet.ACK)},
	}
	for i, s := range steps {
		if !runFrame(t, d, s.dir, ifindex, s.frame) {
			t.Fatalf("step %d dropped", i)
		}
	}
	key := palisadeCtKey4{EndpointProto: d.endpoints[ifindex].value.Id<<8 | uint32(policy.TCP), Pod: pod.As4(), Peer: peer.As4(),
		PodPort: 80, PeerPort: 40000}
	var entry palisadeCtEntry
	if err := d.objs.Conntrack4.Lookup(&key, &entry); err != nil {
		t.Fatal(err)
	}
	if entry.State != ctTCPClosing {
		t.Fatalf("conntrack state %d after the FIN, want closing (%d)", entry.State, ctTCPClosing)
	}
}

// TestFlowCacheSizeMustBeAPowerOfTwo: an operator's flag value that is
// not a power of two in range is refused before anything is loaded.
func TestFlowCacheSizeMustBeAPowerOfTwo(t *testing.T) {
	ensureBPFFS(t)
	for _, slots := range []int{3, 96, 1 << 21} {
		d, err := Open(Config{PinPath: filepath.Join(bpffs, randomName("palisade-test-")), FlowCacheSlots: slots})
		if err == nil {
			d.Purge()
			t.Errorf("FlowCacheSlots %d accepted", slots)
		}
	}
}

// newFencedDataplane opens a dataplane whose programs fence their loads as
// on CPUs that reorder them (fenced) or as on x86.
func newFencedDataplane(t *testing.T, cfg Config, fenced bool) *Dataplane {
	t.Helper()
	native := loadsReorder
	loadsReorder = fenced
	defer func() { loadsReorder = native }()
	return newDataplane(t, cfg)
}

// TestLoadFenceOnlyWhereLoadsReorder: the fence is one fetching atomic on
// the full path where loads reorder, and the verifier removes it as dead
// code where they do not.
func TestLoadFenceOnlyWhereLoadsReorder(t *testing.T) {
	fences := func(fenced bool) int {
		ingress, _ := newFencedDataplane(t, Config{}, fenced).Programs()
		info, err := ingress.Info()
		if err != nil {
			t.Fatal(err)
		}
		insns, err := info.Instructions()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ins := range insns {
			if ins.OpCode.Class().IsStore() && ins.OpCode.Mode() == asm.AtomicMode && ins.OpCode.AtomicOp() == asm.FetchOr {
				n++
			}
		}
		return n
	}
	if n := fences(false); n != 0 {
		t.Errorf("%d fences in the programs loaded as for x86, want 0", n)
	}
	if n := fences(true); n != 1 {
		t.Errorf("%d fences in the programs loaded as for arm64, want 1", n)
	}
}
