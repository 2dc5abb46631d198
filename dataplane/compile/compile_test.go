package compile

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
	"github.com/palisade-net/palisade/policy/policygen"
)

// probe is a packet the compiled tables are asked about.
type probe struct {
	peer    netip.Addr
	proto   policy.Protocol
	port    uint16
	hasPort bool
}

// evaluate is the reference verdict for p arriving on an isolated ingress
// with rules d.
func evaluate(t testing.TB, d *policy.Direction, p probe) policy.Verdict {
	local := netip.MustParseAddr("10.99.0.1")
	if p.peer.Is6() {
		local = netip.MustParseAddr("fd00::1")
	}
	spec := packet.Spec{Src: p.peer, Dst: local, Protocol: p.proto, SrcPort: 40000, DstPort: p.port}
	if !p.hasPort {
		// A later fragment is port-less whatever its protocol.
		if p.peer.Is4() {
			spec.IPv4.FragmentOffset = 8
		} else {
			spec.IPv6.ExtHeaders = []packet.ExtHeader{{Type: policy.Fragment, FragmentOffset: 8}}
		}
		spec.Payload = make([]byte, 8)
	}
	ep := policy.Endpoint{Ingress: *d}
	ep.Ingress.Isolated = true
	v := policy.Evaluate(&ep, policy.Ingress, packet.Build(spec))
	if v.Err != nil {
		t.Fatalf("reference rejected probe %+v: %v", p, v.Err)
	}
	return v
}

func check(t testing.TB, d *policy.Direction, c *Direction, p probe) {
	t.Helper()
	want := evaluate(t, d, p)
	allowed, rule := c.Lookup(p.peer, p.proto, p.hasPort, p.port)
	if allowed != want.Allowed || (allowed && rule != want.RuleID) {
		t.Fatalf("probe %+v: compiled says allowed=%v rule=%d, reference %v\nrules: %+v\ncompiled: %+v", p, allowed, rule, want, d.Rules, c)
	}
}

// probesFor returns peers on and around every rule boundary and random
// ones, with ports on range edges.
func probesFor(r *rand.Rand, d *policy.Direction, n int) []probe {
	var prefixes []netip.Prefix
	var ports []uint16
	for _, rule := range d.Rules {
		prefixes = append(prefixes, rule.CIDR)
		prefixes = append(prefixes, rule.Except...)
		for _, p := range rule.Ports {
			ports = append(ports, p.Port, p.Port-1, p.Port+1, p.EndPort, p.EndPort+1)
		}
	}
	ports = append(ports, 0, 1, 80, 65535)
	protos := []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP, policy.ICMP, policy.ICMPv6, 0, 47, 255}
	out := make([]probe, 0, n)
	for range n {
		var peer netip.Addr
		switch {
		case len(prefixes) > 0 && r.IntN(4) != 0:
			p := prefixes[r.IntN(len(prefixes))]
			switch r.IntN(3) {
			case 0:
				peer = policygen.First(p)
			case 1:
				peer = policygen.Last(p)
			default:
				peer = policygen.RandomIn(r, p)
			}
			if r.IntN(8) == 0 {
				peer = peer.Prev()
			} else if r.IntN(8) == 0 {
				peer = peer.Next()
			}
			if !peer.IsValid() {
				peer = policygen.First(p)
			}
		default:
			peer = policygen.RandomAddr(r, r.IntN(2) == 0)
		}
		if peer.Is4In6() || (peer.Is6() && r.IntN(10) == 0) {
			peer = netip.AddrFrom16(peer.Unmap().As16())
		}
		proto := protos[r.IntN(len(protos))]
		p := probe{peer: peer, proto: proto, port: ports[r.IntN(len(ports))]}
		p.hasPort = (proto == policy.TCP || proto == policy.UDP || proto == policy.SCTP) && r.IntN(8) != 0
		if !p.hasPort {
			p.port = 0
		}
		out = append(out, p)
	}
	return out
}

func TestCompileMatchesEvaluate(t *testing.T) {
	r := policygen.New(1)
	for range 300 {
		ep := policygen.Endpoint(r)
		for _, d := range []*policy.Direction{&ep.Ingress, &ep.Egress} {
			c, err := Compile(d)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			for _, p := range probesFor(r, d, 300) {
				check(t, d, c, p)
			}
		}
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestCompileExamples(t *testing.T) {
	d := &policy.Direction{Isolated: true, Rules: []policy.Rule{
		{ID: 1, CIDR: mustPrefix("10.0.0.0/8"), Except: []netip.Prefix{mustPrefix("10.1.0.0/16")},
			Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80}, {Protocol: policy.UDP, Port: 1000, EndPort: 2000}}},
		{ID: 2, CIDR: mustPrefix("10.1.2.0/24"), Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 0}}},
		{ID: 3, CIDR: mustPrefix("0.0.0.0/0"), Ports: []policy.PortRange{{Protocol: policy.UDP, Port: 1500, EndPort: 3000}}},
		{ID: 4, CIDR: mustPrefix("::/0"), Except: []netip.Prefix{mustPrefix("10.0.0.0/8")}},
		{ID: 5, CIDR: mustPrefix("10.2.0.0/16")},
	}}
	c, err := Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		peer    string
		proto   policy.Protocol
		port    uint16
		hasPort bool
		allowed bool
		rule    uint32
	}{
		{"10.0.0.1", policy.TCP, 80, true, true, 1},
		{"10.0.0.1", policy.TCP, 81, true, false, 0},
		{"10.1.0.1", policy.TCP, 80, true, false, 0},      // except of rule 1
		{"10.1.2.3", policy.TCP, 80, true, true, 2},       // rule 2 inside rule 1's except
		{"10.1.2.3", policy.TCP, 0, false, true, 2},       // all-ports admits port-less TCP
		{"10.0.0.1", policy.TCP, 0, false, false, 0},      // a single port does not
		{"10.0.0.1", policy.UDP, 1600, true, true, 1},     // first rule in order wins
		{"10.0.0.1", policy.UDP, 2500, true, true, 3},     // only rule 3 covers it
		{"10.1.0.1", policy.UDP, 1600, true, true, 3},     // rule 1 excepted, rule 3 remains
		{"10.2.0.1", policy.ICMP, 0, false, true, 5},      // port-less rule allows every protocol
		{"10.2.0.1", policy.TCP, 80, true, true, 1},       // rule 1 is earlier than rule 5
		{"::ffff:10.0.0.1", policy.TCP, 9, true, true, 4}, // v4-mapped is IPv6: not excepted, not rule 1
		{"2001:db8::1", 0, 0, false, true, 4},
		{"192.0.2.1", policy.UDP, 1499, true, false, 0},
	}
	for _, tc := range cases {
		p := probe{peer: netip.MustParseAddr(tc.peer), proto: tc.proto, port: tc.port, hasPort: tc.hasPort}
		allowed, rule := c.Lookup(p.peer, p.proto, p.hasPort, p.port)
		if allowed != tc.allowed || rule != tc.rule {
			t.Errorf("%+v: got allowed=%v rule=%d, want %v %d", tc, allowed, rule, tc.allowed, tc.rule)
		}
		check(t, d, c, p)
	}
}

func TestCompileSharesPortsetsAndFoldsRedundantPrefixes(t *testing.T) {
	ports := []policy.PortRange{{Protocol: policy.TCP, Port: 1000, EndPort: 1999}, {Protocol: policy.UDP, Port: 53}}
	d := &policy.Direction{Isolated: true}
	for i := range 1000 {
		addr := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0})
		d.Rules = append(d.Rules, policy.Rule{ID: 7, CIDR: netip.PrefixFrom(addr, 24), Ports: ports})
	}
	// Inside 10.0.0.0/24 and with the same value as its parent: no entry needed.
	d.Rules = append(d.Rules, policy.Rule{ID: 7, CIDR: mustPrefix("10.0.0.128/25"), Ports: ports})
	c, err := Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Portsets) != 1 {
		t.Errorf("got %d port sets, want 1 shared", len(c.Portsets))
	}
	if len(c.CIDRs) != 1000 {
		t.Errorf("got %d CIDR entries, want 1000", len(c.CIDRs))
	}
}

func TestCompilePortRangesBecomePrefixes(t *testing.T) {
	d := &policy.Direction{Isolated: true, Rules: []policy.Rule{{ID: 1, CIDR: mustPrefix("0.0.0.0/0"),
		Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 1, EndPort: 65535}}}}}
	c, err := Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(c.Portsets[0].Entries); got != 16 {
		t.Errorf("1-65535 compiled to %d prefixes, want 16", got)
	}
}

func TestCompileRejectsInvalidInput(t *testing.T) {
	for name, rule := range map[string]policy.Rule{
		"zero CIDR":       {ID: 1},
		"invalid except":  {ID: 1, CIDR: mustPrefix("10.0.0.0/8"), Except: []netip.Prefix{{}}},
		"reversed ranges": {ID: 1, CIDR: mustPrefix("10.0.0.0/8"), Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 90, EndPort: 80}}},
	} {
		_, err := Compile(&policy.Direction{Isolated: true, Rules: []policy.Rule{rule}})
		if err == nil || !strings.Contains(err.Error(), "rule 1") {
			t.Errorf("%s: got error %v, want one naming rule 1", name, err)
		}
	}
}

// FuzzCompile decodes a direction from the fuzzer's bytes and checks the
// compiled tables against the reference on probes around its rules.
func FuzzCompile(f *testing.F) {
	f.Add([]byte{0, 10, 0, 0, 0, 8, 1, 6, 0, 80, 0, 0}, uint64(1))
	f.Add([]byte{1, 32, 1, 13, 184, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 17, 0, 53, 0, 60}, uint64(2))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		d := decodeDirection(data)
		c, err := Compile(d)
		if err != nil {
			if Validate(d) == nil {
				t.Fatalf("Compile failed on valid input: %v", err)
			}
			return
		}
		r := rand.New(rand.NewPCG(seed, 1))
		for _, p := range probesFor(r, d, 64) {
			check(t, d, c, p)
		}
	})
}

// decodeDirection reads rules as: family byte, address (4 or 16 bytes),
// prefix length, number of excepts (each prefix length + address bits
// taken as offsets inside the CIDR), number of ports, (protocol, port,
// end port) triples.
func decodeDirection(b []byte) *policy.Direction {
	d := &policy.Direction{Isolated: true}
	next := func() byte {
		if len(b) == 0 {
			return 0
		}
		x := b[0]
		b = b[1:]
		return x
	}
	for id := uint32(1); len(b) > 0 && id < 64; id++ {
		v6 := next()&1 == 1
		n := 4
		if v6 {
			n = 16
		}
		raw := make([]byte, n)
		for i := range raw {
			raw[i] = next()
		}
		addr, _ := netip.AddrFromSlice(raw)
		cidr := netip.PrefixFrom(addr, int(next())%(8*n+1))
		rule := policy.Rule{ID: id, CIDR: cidr}
		for range next() % 4 {
			bits := cidr.Bits() + int(next())%(8*n-cidr.Bits()+1)
			inner := addr.AsSlice()
			inner[n-1] ^= next()
			inner[n-2] ^= next()
			a, _ := netip.AddrFromSlice(inner)
			rule.Except = append(rule.Except, netip.PrefixFrom(a, bits))
		}
		for range next() % 5 {
			proto := []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP, policy.ICMP, 0}[next()%5]
			port := uint16(next())<<8 | uint16(next())
			end := uint16(next())<<8 | uint16(next())
			if end != 0 && end < port {
				port, end = end, port
			}
			rule.Ports = append(rule.Ports, policy.PortRange{Protocol: proto, Port: port, EndPort: end})
		}
		d.Rules = append(d.Rules, rule)
	}
	return d
}

// TestFirstRuleSegmentsPaintsEachPortWithItsFirstRule checks the painting
// against a port-by-port one on random overlapping ranges.
func TestFirstRuleSegmentsPaintsEachPortWithItsFirstRule(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 300 {
		var ranges []portRange
		for order := range 1 + r.IntN(12) {
			for range 1 + r.IntN(4) {
				lo := r.IntN(200)
				if r.IntN(20) == 0 {
					lo = 65535 - r.IntN(3)
				}
				hi := min(65535, lo+r.IntN(40))
				ranges = append(ranges, portRange{lo: uint16(lo), hi: uint16(hi), order: order, rule: uint32(100 + order)})
			}
		}
		r.Shuffle(len(ranges), func(i, j int) { ranges[i], ranges[j] = ranges[j], ranges[i] })
		stop := -1
		if r.IntN(3) == 0 {
			stop = r.IntN(12)
		}
		want := make([]uint32, 65536)
		for port := range want {
			best := -1
			for _, pr := range ranges {
				if (stop < 0 || pr.order < stop) && int(pr.lo) <= port && port <= int(pr.hi) && (best < 0 || pr.order < best) {
					best, want[port] = pr.order, pr.rule
				}
			}
		}
		got := make([]uint32, 65536)
		segments := firstRuleSegments(ranges, stop)
		for i, seg := range segments {
			if i > 0 && (seg.lo <= segments[i-1].hi || (seg.rule == segments[i-1].rule && seg.lo == segments[i-1].hi+1)) {
				t.Fatalf("round %d: segments %v and %v overlap or were not merged", round, segments[i-1], seg)
			}
			for port := int(seg.lo); port <= int(seg.hi); port++ {
				got[port] = seg.rule
			}
		}
		for port := range want {
			if got[port] != want[port] {
				t.Fatalf("round %d: port %d painted with rule %d, want %d (ranges %v, stop %d)", round, port, got[port], want[port], ranges, stop)
			}
		}
	}
}

// manyExceptRules is a policy of n rules over the same /8, each with an
// except of its own and 64 ports of its own: every rule has a region of
// its own, so the compiler builds n port tables of about n*64 ranges.
func manyExceptRules(n int) *policy.Direction {
	d := &policy.Direction{Isolated: true}
	for i := range n {
		rule := policy.Rule{ID: uint32(i + 1), CIDR: mustPrefix("10.0.0.0/8"),
			Except: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), 32)}}
		for p := range 64 {
			rule.Ports = append(rule.Ports, policy.PortRange{Protocol: policy.TCP, Port: uint16(1000 + i*64 + p)})
		}
		d.Rules = append(d.Rules, rule)
	}
	return d
}

func TestCompileManyRulesWithExceptsAndPorts(t *testing.T) {
	d := manyExceptRules(150)
	c, err := Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 3000 {
		i := r.IntN(150)
		peer := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(r.IntN(3))})
		check(t, d, c, probe{peer: peer, proto: policy.TCP, port: uint16(1000 + r.IntN(150*64+10)), hasPort: true})
	}
}

// BenchmarkCompileManyRulesWithExceptsAndPorts: 150 rules of 64 ports,
// each with an except of its own (took 34 s before the painting was n log n).
func BenchmarkCompileManyRulesWithExceptsAndPorts(b *testing.B) {
	d := manyExceptRules(150)
	for b.Loop() {
		if _, err := Compile(d); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCompileWithinStopsAtTheLimit(t *testing.T) {
	d := manyExceptRules(150)
	if _, err := CompileWithin(d, 1<<16); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("150 rules of 64 ports each, excepts of their own, within 65,536 port entries: %v, want ErrTooLarge", err)
	}
	c, err := CompileWithin(manyExceptRules(10), 1<<16)
	if err != nil {
		t.Fatalf("10 such rules within 65,536 port entries: %v", err)
	}
	entries := 0
	for _, ps := range c.Portsets {
		entries += len(ps.Entries)
	}
	if entries == 0 || entries > 1<<16 {
		t.Errorf("%d port entries", entries)
	}
}
