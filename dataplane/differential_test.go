package dataplane

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
	"github.com/palisade-net/palisade/policy/policygen"
)

// frameGen makes random and adversarial frames aimed at one direction of
// one endpoint: peers on and around its rule boundaries, ports on range
// edges, every protocol, IPv4 options and fragments, IPv6 extension
// chains, ICMP errors, and broken lengths and headers.
type frameGen struct {
	r        *rand.Rand
	prefixes []netip.Prefix
	ports    []uint16
}

func newFrameGen(r *rand.Rand, d *policy.Direction) *frameGen {
	g := &frameGen{r: r}
	for _, rule := range d.Rules {
		g.prefixes = append(g.prefixes, rule.CIDR)
		g.prefixes = append(g.prefixes, rule.Except...)
		for _, p := range rule.Ports {
			g.ports = append(g.ports, p.Port, p.Port-1, p.Port+1, p.EndPort, p.EndPort+1)
		}
	}
	g.ports = append(g.ports, 0, 1, 53, 80, 443, 65535)
	return g
}

func (g *frameGen) peer() netip.Addr {
	r := g.r
	if len(g.prefixes) == 0 || r.IntN(5) == 0 {
		a := policygen.RandomAddr(r, r.IntN(2) == 0)
		if a.Is6() && r.IntN(8) == 0 {
			a = netip.AddrFrom16(policygen.RandomAddr(r, false).As16())
		}
		return a
	}
	p := g.prefixes[r.IntN(len(g.prefixes))]
	var a netip.Addr
	switch r.IntN(3) {
	case 0:
		a = policygen.First(p)
	case 1:
		a = policygen.Last(p)
	default:
		a = policygen.RandomIn(r, p)
	}
	switch r.IntN(10) {
	case 0:
		if b := a.Prev(); b.IsValid() {
			a = b
		}
	case 1:
		if b := a.Next(); b.IsValid() {
			a = b
		}
	case 2:
		if a.Is4() {
			a = netip.AddrFrom16(a.As16()) // the same bits as IPv4-mapped IPv6
		}
	}
	return a
}

func (g *frameGen) port() uint16 {
	if g.r.IntN(4) == 0 {
		return uint16(g.r.Uint32())
	}
	return g.ports[g.r.IntN(len(g.ports))]
}

var genProtocols = []policy.Protocol{policy.TCP, policy.TCP, policy.UDP, policy.UDP, policy.SCTP, policy.ICMP, policy.ICMPv6, 0, 47, 50, 59, 255}

func (g *frameGen) spec(dir policy.Dir) packet.Spec {
	r := g.r
	peer := g.peer()
	local := policygen.RandomAddr(r, peer.Is6())
	s := packet.Spec{Src: peer, Dst: local, Protocol: genProtocols[r.IntN(len(genProtocols))],
		SrcPort: g.port(), DstPort: g.port(), TCPFlags: uint8(r.Uint32())}
	if dir == policy.Egress {
		s.Src, s.Dst = local, peer
	}
	if r.IntN(3) == 0 {
		s.Payload = make([]byte, r.IntN(64))
	}
	if s.Protocol == policy.ICMP || s.Protocol == policy.ICMPv6 {
		s.ICMP.Type = []uint8{0, 3, 8, 11, 1, 2, 128, 129, 132, 133, 134, 135, 136, 137}[r.IntN(14)]
		if r.IntN(2) == 0 {
			s.HopLimit = []uint8{255, 255, 254}[r.IntN(3)] // neighbour discovery and near misses
		}
		s.ICMP.ID = uint16(r.Uint32())
		if r.IntN(3) == 0 {
			inner := packet.Spec{Src: s.Dst, Dst: s.Src, Protocol: genProtocols[r.IntN(4)], SrcPort: g.port(), DstPort: g.port()}
			s.ICMP.Inner = &inner
			if r.IntN(4) == 0 {
				s.ICMP.InnerBytes = r.IntN(48)
			}
		}
	}
	if peer.Is4() {
		g.ipv4Variations(&s)
	} else {
		g.ipv6Variations(&s)
	}
	g.malform(&s)
	return s
}

func (g *frameGen) ipv4Variations(s *packet.Spec) {
	r := g.r
	if r.IntN(6) == 0 {
		s.IPv4.Options = make([]byte, 1+r.IntN(40))
		s.IPv4.Options[0] = 1 // NOP
	}
	if r.IntN(6) == 0 {
		s.IPv4.ID = uint16(r.IntN(4))
		s.IPv4.MoreFragments = r.IntN(2) == 0
		if r.IntN(2) == 0 {
			s.IPv4.FragmentOffset = uint16(1 + r.IntN(8191))
		}
	}
}

var extTypes = []policy.Protocol{policy.HopByHop, policy.Routing, policy.DestOptions, policy.AH, policy.Fragment}

func (g *frameGen) ipv6Variations(s *packet.Spec) {
	r := g.r
	if r.IntN(3) != 0 {
		return
	}
	n := 1 + r.IntN(3)
	if r.IntN(8) == 0 {
		n = 7 + r.IntN(3) // around the limit of 8
	}
	for i := range n {
		e := packet.ExtHeader{Type: extTypes[r.IntN(len(extTypes))], Body: make([]byte, r.IntN(20))}
		if i == 0 && r.IntN(2) == 0 {
			e.Type = policy.HopByHop
		}
		if e.Type == policy.Fragment {
			e.ID = uint32(r.IntN(4))
			e.MoreFragments = r.IntN(2) == 0
			if r.IntN(2) == 0 {
				e.FragmentOffset = uint16(1 + r.IntN(8191))
			}
		}
		if r.IntN(16) == 0 {
			e.Len = packet.Int(r.IntN(256))
		}
		s.IPv6.ExtHeaders = append(s.IPv6.ExtHeaders, e)
	}
}

func (g *frameGen) malform(s *packet.Spec) {
	r := g.r
	if r.IntN(5) != 0 {
		return
	}
	m := &s.Malform
	switch r.IntN(9) {
	case 0:
		m.Version = packet.Int(r.IntN(16))
	case 1:
		m.IHL = packet.Int(r.IntN(16))
	case 2:
		m.TotalLength = packet.Int(r.IntN(200))
	case 3:
		m.PayloadLength = packet.Int(r.IntN(200))
	case 4:
		m.L4Bytes = packet.Int(r.IntN(24))
	case 5:
		m.Trailer = make([]byte, 1+r.IntN(30))
	case 6:
		m.FrameBytes = packet.Int(14 + r.IntN(80))
	case 7:
		s.EtherType = []uint16{0x8100, 0x0806, 0x88cc, 0x0800, 0x86dd}[r.IntN(5)]
	case 8:
		s.VLANs = []uint16{uint16(r.IntN(4096))}
	}
}

// flushState forgets every tracked flow and fragment.
func flushState(t testing.TB, d *Dataplane) {
	t.Helper()
	if _, err := d.forgetEndpointState(func(uint32) bool { return true }); err != nil {
		t.Fatal(err)
	}
}

// TestDifferentialAgainstEvaluate sends over a million random and
// adversarial frames (frameGen's and policygen's) through the loaded programs and compares every
// verdict with policy.Evaluate. Connection state may only add "allow":
// when the program allows what the reference drops, the frame is sent
// again with the state flushed and must then be dropped.
func TestDifferentialAgainstEvaluate(t *testing.T) {
	policies, perPolicy := 250, 4200
	if testing.Short() {
		policies, perPolicy = 25, 2000
	}
	// Events are not rate-limited here: each verdict's event is checked.
	// Port sets of 3 entries or more get a dense copy while 4 slots last,
	// the others are looked up in the trie: both lookups are compared.
	d := newDataplane(t, Config{EventRate: 1 << 30, EventBurst: 1 << 30, DensePortsets: 4, DensePortEntries: 3})
	events, err := ringbuf.NewReader(d.objs.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	var rec ringbuf.Record
	// nextEvent returns the event of the frame just run, if it made one.
	nextEvent := func() (Event, bool) {
		events.SetDeadline(time.Now())
		if err := events.ReadInto(&rec); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			return Event{}, false
		}
		e, err := decodeEvent(rec.RawSample, 0)
		if err != nil {
			t.Fatal(err)
		}
		return e, true
	}
	// Ingress frames go through one veth, egress frames through another
	// with the same policy, so that one direction's flows are not replies
	// to the other's.
	ifindexes := [2]int{dummyLink(t), dummyLink(t)}
	r := policygen.New(20260523)
	var total, stateful, rules, refused, ruleChecks, denseSets, trieSets int
	reasons := map[policy.Reason]int{}
	start := time.Now()
	for range policies {
		ep := policygen.Endpoint(r)
		for _, ifindex := range ifindexes {
			if _, err := d.SetPolicy(ifindex, ep); err != nil {
				t.Fatalf("SetPolicy: %v", err)
			}
		}
		rules += len(ep.Ingress.Rules) + len(ep.Egress.Rules)
		d.mu.Lock()
		for id := range d.portsetIDs {
			if _, dense := denseSlot(id); dense {
				denseSets++
			} else {
				trieSets++
			}
		}
		d.mu.Unlock()
		gens := [2]*frameGen{newFrameGen(r, &ep.Ingress), newFrameGen(r, &ep.Egress)}
		for range perPolicy {
			dir := policy.Dir(r.IntN(2))
			var spec packet.Spec // zero for frames of policygen.Malformed
			var frame []byte
			switch r.IntN(8) {
			case 0, 1:
				spec = policygen.Packet(r, ep, dir)
				frame = packet.Build(spec)
			case 2:
				frame = policygen.Malformed(r, ep, dir)
			default:
				spec = gens[dir].spec(dir)
				frame = packet.Build(spec)
			}
			want := policy.Evaluate(ep, dir, frame)
			reasons[want.Reason]++
			got, err := runFrameErr(d, dir, ifindexes[dir], frame)
			if err != nil && truncatedIPHeader(frame) {
				// BPF_PROG_TEST_RUN refuses these; the program's header
				// loads fail on them and drop (see TestTruncatedHeadersDrop).
				if want.Allowed && ep.Of(dir).Isolated {
					t.Fatalf("reference allows a truncated IP header: %v", want)
				}
				refused++
				continue
			}
			if err != nil {
				t.Fatalf("run: %v\n%s", err, describe(ep, dir, spec, frame))
			}
			total++
			if e, ok := nextEvent(); ok {
				switch {
				case e.Allowed != got:
					t.Fatalf("event %+v for a frame the program judged allowed=%v\n%s", e, got, describe(ep, dir, spec, frame))
				case e.Reason == "new-flow" && got == want.Allowed:
					wantRule := want.RuleID
					if !ep.Of(dir).Isolated {
						wantRule = 0
					}
					if e.RuleID != wantRule {
						t.Fatalf("new flow allowed by rule %d, reference says %v\n%s", e.RuleID, want, describe(ep, dir, spec, frame))
					}
					ruleChecks++
				}
			}
			if got == want.Allowed {
				continue
			}
			if !got {
				t.Fatalf("program dropped what the reference allows (%v)\n%s", want, describe(ep, dir, spec, frame))
			}
			flushState(t, d)
			again := runFrame(t, d, dir, ifindexes[dir], frame)
			nextEvent()
			if again {
				t.Fatalf("program allowed what the reference drops (%v), without connection state\n%s", want, describe(ep, dir, spec, frame))
			}
			stateful++
		}
		flushState(t, d)
	}
	t.Logf("%d frames compared, %d policies with %d rules, %d allowed only by connection state, %d deciding rule ids checked, %d truncated IP headers the kernel refuses to run, in %v",
		total, policies, rules, stateful, ruleChecks, refused, time.Since(start).Round(time.Millisecond))
	t.Logf("reference verdict reasons: %v", reasons)
	t.Logf("port sets live per policy, summed: %d dense, %d in the trie only", denseSets, trieSets)
	if denseSets < policies || trieSets < policies {
		t.Errorf("%d dense and %d trie-only port sets over %d policies: a lookup is barely compared", denseSets, trieSets, policies)
	}
	if nd := reasons[policy.ReasonNeighborDiscovery]; nd < total/1000 {
		t.Errorf("only %d neighbour discovery frames among %d", nd, total)
	}
	if total < 1_000_000 && !testing.Short() {
		t.Errorf("only %d frames compared, want at least a million", total)
	}
}

// truncatedIPHeader reports an IPv4 or IPv6 EtherType with fewer bytes
// than the fixed IP header.
func truncatedIPHeader(frame []byte) bool {
	if len(frame) < 14 {
		return true
	}
	switch uint16(frame[12])<<8 | uint16(frame[13]) {
	case 0x0800:
		return len(frame) < 14+20
	case 0x86dd:
		return len(frame) < 14+40
	}
	return false
}

func describe(ep *policy.Endpoint, dir policy.Dir, spec packet.Spec, frame []byte) string {
	return fmt.Sprintf("direction %v\nspec %+v\nframe %x\nrules %+v", dir, spec, frame, ep.Of(dir))
}

// FuzzProgram runs fuzzer-made frames through the loaded programs under
// fixed policies and compares each verdict with policy.Evaluate (state
// flushed first, so only the stateless rules decide).
func FuzzProgram(f *testing.F) {
	f.Add(tcp(peerIP, podIP, 40000, 80, packet.SYN), uint8(0))
	f.Add(udp(podIP, peerIP, 5000, 53), uint8(1))
	f.Add(packet.Build(packet.Spec{Src: peerIP6, Dst: podIP6, Protocol: policy.TCP, DstPort: 80,
		IPv6: packet.IPv6{ExtHeaders: []packet.ExtHeader{{Type: policy.HopByHop}, {Type: policy.Fragment, FragmentOffset: 3}}}}), uint8(2))
	d := newDataplane(f, Config{})
	ifindex := dummyLink(f)
	endpoints := []*policy.Endpoint{webPolicy(), egressOnlyWeb(), policygen.Endpoint(policygen.New(7))}
	f.Fuzz(func(t *testing.T, frame []byte, which uint8) {
		if truncatedIPHeader(frame) || len(frame) > 1500 {
			return
		}
		ep := endpoints[int(which/2)%len(endpoints)]
		dir := policy.Dir(which % 2)
		if _, err := d.SetPolicy(ifindex, ep); err != nil {
			t.Fatal(err)
		}
		flushState(t, d)
		want := policy.Evaluate(ep, dir, frame)
		if got := runFrame(t, d, dir, ifindex, frame); got != want.Allowed {
			t.Fatalf("program allowed=%v, reference %v\nframe %x", got, want, frame)
		}
	})
}
