// Package hotpath measures the per-packet cost of the dataplane programs
// with BPF_PROG_TEST_RUN, beside an empty pass-through TC program measured
// the same way, for benchmarks (dataplane's and the bench/ suite's).
package hotpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/palisade-net/palisade/dataplane"
	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// Scenario is the policy state the measured packets meet.
type Scenario struct {
	// Endpoints programmed on the node, the measured one included (>= 1).
	Endpoints int
	// CIDRs is the number of CIDR rules of the measured endpoint's ingress
	// (>= 1); each rule allows TCP 80.
	CIDRs int
	// PortRanges adds that many TCP port ranges to the rule that allows the
	// measured peer.
	PortRanges int
	IPv6       bool
	// PinPath is the bpffs directory to use; empty: a fresh one under
	// /sys/fs/bpf, removed by Close.
	PinPath string
}

// Case is a kind of packet.
type Case int

const (
	// Empty: the empty pass-through program, repeated packet.
	Empty Case = iota
	// Established: a packet of a tracked flow.
	Established
	// Denied: a packet no rule allows.
	Denied
	// EmptySingle: the empty program, one run per distinct packet.
	EmptySingle
	// FirstPacket: the first packet of an allowed flow (one run per
	// distinct flow, compare with EmptySingle), from a peer whose earlier
	// flows to the same port the rules judged recently (a new source port
	// each time).
	FirstPacket
	// EstablishedFullPath and DeniedFullPath: Established and Denied with
	// the flow cache off, as for flows the cache does not hold.
	EstablishedFullPath
	DeniedFullPath
	// LRUInsert: a program that does nothing but insert the flow into an
	// LRU hash of the conntrack's type, size and entry sizes, one run per
	// distinct flow (compare with EmptySingle): the part of a first packet
	// that is the kernel's map update.
	LRUInsert
	// Floor: LRUInsert after the lookup of a new peer in the measured
	// endpoint's CIDR table: the two kernel map operations no first packet
	// of a new peer can skip, and nothing else.
	Floor
	// FirstPacketNewPeer: FirstPacket from a peer not seen before, whose
	// decision is not cached.
	FirstPacketNewPeer
)

func (c Case) String() string {
	return [...]string{"empty", "established", "denied", "empty-single", "first-packet", "established-full-path",
		"denied-full-path", "lru-insert", "floor", "first-packet-new-peer"}[c]
}

// Bench is a loaded dataplane with a scenario programmed.
type Bench struct {
	dp         *dataplane.Dataplane
	empty      *ebpf.Program
	lruInsert  *dataplane.Floor
	floor      *dataplane.Floor
	ingress    *ebpf.Program
	egress     *ebpf.Program
	peerPrefix netip.Prefix
	pod        netip.Addr
	nextFlow   uint32
	// nextPeerFlow counts newPeerFlow's flows.
	nextPeerFlow uint32
	established  []byte
	denied       []byte
}

// The measured endpoint is the loopback device: BPF_PROG_TEST_RUN without
// a context runs packets as if they went through it.
const loopbackIfindex = 1

// Setup loads the programs into a pin directory of its own and programs s.
func Setup(s Scenario) (*Bench, error) {
	if s.Endpoints < 1 || s.CIDRs < 1 {
		return nil, fmt.Errorf("scenario %+v: need at least one endpoint and one CIDR", s)
	}
	fresh := s.PinPath == ""
	if fresh {
		s.PinPath = filepath.Join("/sys/fs/bpf", fmt.Sprintf("palisade-bench-%d-%d", os.Getpid(), time.Now().UnixNano()))
	}
	dp, err := dataplane.Open(dataplane.Config{PinPath: s.PinPath, RuleCapacity: 2*s.CIDRs*s.Endpoints + 1024,
		MaxEndpoints: s.Endpoints + 16})
	if err != nil {
		if fresh {
			// maps pinned before the programs failed to load
			os.RemoveAll(s.PinPath)
		}
		return nil, err
	}
	b := &Bench{dp: dp}
	b.ingress, b.egress = dp.Programs()
	if err := b.program(s); err != nil {
		b.Close()
		return nil, err
	}
	b.empty, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
		License:      "Dual BSD/GPL",
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("load empty program: %w", err)
	}
	if b.lruInsert, err = dp.NewFloor(loopbackIfindex, s.IPv6, false); err != nil {
		b.Close()
		return nil, err
	}
	if b.floor, err = dp.NewFloor(loopbackIfindex, s.IPv6, true); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *Bench) program(s Scenario) error {
	ep := &policy.Endpoint{Ingress: policy.Direction{Isolated: true}, Egress: policy.Direction{Isolated: true}}
	web := []policy.PortRange{{Protocol: policy.TCP, Port: 80}}
	if s.IPv6 {
		b.peerPrefix = netip.MustParsePrefix("fd00:200::/112")
		b.pod = netip.MustParseAddr("fd00:1::1")
	} else {
		b.peerPrefix = netip.MustParsePrefix("10.200.0.0/16")
		b.pod = netip.MustParseAddr("10.1.0.1")
	}
	measured := policy.Rule{ID: 1, CIDR: b.peerPrefix, Ports: web}
	for i := range s.PortRanges {
		lo := uint16(1000 + 50*i)
		measured.Ports = append(measured.Ports, policy.PortRange{Protocol: policy.TCP, Port: lo, EndPort: lo + 20})
	}
	ep.Ingress.Rules = append(ep.Ingress.Rules, measured)
	for i := 1; i < s.CIDRs; i++ {
		ep.Ingress.Rules = append(ep.Ingress.Rules, policy.Rule{ID: uint32(i + 1), CIDR: otherPrefix(i, s.IPv6, b.peerPrefix), Ports: web})
	}
	if _, err := b.dp.SetPolicy(loopbackIfindex, ep); err != nil {
		return err
	}
	for i := 1; i < s.Endpoints; i++ {
		// Other endpoints: ifindexes that need not exist; only the map
		// lookups matter. One more peer of its own keeps each one's CIDR
		// table apart, as for pods of different workloads (pods with equal
		// rules share one table); the port sets stay shared.
		own := ownPeer(i, s.IPv6)
		other := *ep
		other.Ingress.Rules = append(slices.Clip(ep.Ingress.Rules),
			policy.Rule{ID: uint32(s.CIDRs + 1), CIDR: netip.PrefixFrom(own, own.BitLen()), Ports: web})
		if _, err := b.dp.SetPolicy(1_000_000+i, &other); err != nil {
			return err
		}
	}
	peer := b.peerPrefix.Addr().Next()
	toPod := packet.Spec{Src: peer, Dst: b.pod, Protocol: policy.TCP, SrcPort: 1, DstPort: 80}
	fromPod := packet.Spec{Src: b.pod, Dst: peer, Protocol: policy.TCP, SrcPort: 80, DstPort: 1}
	handshake := []struct {
		prog  *ebpf.Program
		spec  packet.Spec
		flags uint8
	}{{b.ingress, toPod, packet.SYN}, {b.egress, fromPod, packet.SYN | packet.ACK}, {b.ingress, toPod, packet.ACK}}
	for _, step := range handshake {
		step.spec.TCPFlags = step.flags
		if ret, _, err := step.prog.Benchmark(packet.Build(step.spec), 1, nil); err != nil || int32(ret) != -1 {
			return fmt.Errorf("opening the measured flow (flags %#x): verdict %d, %v", step.flags, int32(ret), err)
		}
	}
	toPod.TCPFlags, toPod.Payload = packet.ACK, make([]byte, 64)
	b.established = packet.Build(toPod)
	b.denied = packet.Build(packet.Spec{Src: peer, Dst: b.pod, Protocol: policy.TCP, SrcPort: 1, DstPort: 22, TCPFlags: packet.SYN})
	if ret, _, err := b.ingress.Benchmark(b.denied, 1, nil); err != nil || ret != 2 {
		return fmt.Errorf("denied packet: verdict %d, %v", int32(ret), err)
	}
	return nil
}

// ownPeer is the address only the i-th other endpoint admits, in the
// benchmarking range 198.18.0.0/15 or 2001:2::/48: outside the measured
// prefix.
func ownPeer(i int, v6 bool) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)})
	}
	return netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
}

// otherPrefix is the i-th of many prefixes spread over the whole address
// space outside the measured one, so that the measured peer's lookup goes
// as deep into the trie as a random address would.
func otherPrefix(i int, v6 bool, measured netip.Prefix) netip.Prefix {
	for salt := uint64(0); ; salt++ {
		h := splitmix64(uint64(i)<<8 | salt)
		var p netip.Prefix
		if v6 {
			var a [16]byte
			binary.BigEndian.PutUint64(a[:8], h)
			binary.BigEndian.PutUint64(a[8:], splitmix64(h))
			p = netip.PrefixFrom(netip.AddrFrom16(a), 40+i%88).Masked()
		} else {
			var a [4]byte
			binary.BigEndian.PutUint32(a[:], uint32(h))
			p = netip.PrefixFrom(netip.AddrFrom4(a), 24+i%9).Masked()
		}
		if !p.Overlaps(measured) {
			return p
		}
	}
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// Run sends packets packets of case c and returns the mean time per packet
// measured by the kernel.
func (b *Bench) Run(c Case, packets int) (time.Duration, error) {
	if packets < 1 {
		packets = 1
	}
	switch c {
	case Empty:
		return b.repeat(b.empty, b.established, packets, -1)
	case Established:
		return b.repeat(b.ingress, b.established, packets, -1)
	case Denied:
		return b.repeat(b.ingress, b.denied, packets, 2)
	case EstablishedFullPath, DeniedFullPath:
		if err := b.dp.SetFlowCache(false); err != nil {
			return 0, err
		}
		defer b.dp.SetFlowCache(true)
		if c == EstablishedFullPath {
			return b.repeat(b.ingress, b.established, packets, -1)
		}
		return b.repeat(b.ingress, b.denied, packets, 2)
	case EmptySingle, FirstPacket, LRUInsert, Floor, FirstPacketNewPeer:
		prog := map[Case]*ebpf.Program{EmptySingle: b.empty, FirstPacket: b.ingress, LRUInsert: b.lruInsert.Program,
			Floor: b.floor.Program, FirstPacketNewPeer: b.ingress}[c]
		newFlow := b.newFlow
		if c == Floor || c == FirstPacketNewPeer {
			newFlow = b.newPeerFlow
		}
		var total time.Duration
		for range packets {
			frame, err := newFlow()
			if err != nil {
				return 0, err
			}
			ret, d, err := prog.Benchmark(frame, 1, nil)
			if err != nil {
				return 0, err
			}
			if int32(ret) != -1 {
				return 0, fmt.Errorf("%v: verdict %d, want pass", c, int32(ret))
			}
			total += d
		}
		return total / time.Duration(packets), nil
	}
	return 0, fmt.Errorf("unknown case %d", c)
}

func (b *Bench) repeat(prog *ebpf.Program, frame []byte, packets int, want int32) (time.Duration, error) {
	ret, d, err := prog.Benchmark(frame, packets, nil)
	if err != nil {
		return 0, err
	}
	if int32(ret) != want {
		return 0, fmt.Errorf("verdict %d, want %d", int32(ret), want)
	}
	return d, nil
}

// newFlow returns the SYN of a flow never sent before, from a peer inside
// the measured rule.
func (b *Bench) newFlow() ([]byte, error) {
	b.nextFlow++
	host := b.nextFlow / 60000
	port := uint16(1024 + b.nextFlow%60000)
	peer := b.peerPrefix.Addr()
	for range host + 2 {
		peer = peer.Next()
	}
	if !b.peerPrefix.Contains(peer) {
		return nil, errors.New("measured prefix has no unused flows left")
	}
	return packet.Build(packet.Spec{Src: peer, Dst: b.pod, Protocol: policy.TCP, SrcPort: port, DstPort: 80, TCPFlags: packet.SYN}), nil
}

// newPeerFlow is a flow of the next of 60,000 peers, a source port apart
// from newFlow's.
func (b *Bench) newPeerFlow() ([]byte, error) {
	const peers = 60000
	n := b.nextPeerFlow
	b.nextPeerFlow++
	peer := b.peerPrefix.Addr()
	for range n%peers + 2 {
		peer = peer.Next()
	}
	port := 61024 + n/peers
	if port > 65535 || !b.peerPrefix.Contains(peer) {
		return nil, errors.New("measured prefix has no unused peer flows left")
	}
	return packet.Build(packet.Spec{Src: peer, Dst: b.pod, Protocol: policy.TCP, SrcPort: uint16(port), DstPort: 80, TCPFlags: packet.SYN}), nil
}

// Close unloads everything Setup made.
func (b *Bench) Close() error {
	var errs []error
	for _, f := range []*dataplane.Floor{b.lruInsert, b.floor} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	if b.empty != nil {
		errs = append(errs, b.empty.Close())
	}
	errs = append(errs, b.dp.Purge())
	return errors.Join(errs...)
}
