// Package policygen generates random endpoints and packets for differential
// tests of policy enforcement against policy.Evaluate. Everything is
// deterministic from the *rand.Rand passed in (see New).
package policygen

import (
	"math/rand/v2"
	"net/netip"

	"github.com/palisade-net/palisade/policy"
)

// New returns a random source deterministic from seed.
func New(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0x9a115ade))
}

// Endpoint returns a random endpoint: each direction isolated or not, with
// zero to hundreds of IPv4 and IPv6 rules of every prefix length, nested
// and overlapping, with excepts inside their CIDR and port entries (single,
// range, all-ports) mostly over TCP, UDP and SCTP. Rule IDs are unique.
// CIDRs and excepts are masked.
func Endpoint(r *rand.Rand) *policy.Endpoint {
	g := ruleGen{r: r, nextID: 1 + r.Uint32N(1000)}
	return &policy.Endpoint{Ingress: g.direction(), Egress: g.direction()}
}

type ruleGen struct {
	r      *rand.Rand
	nextID uint32
	// anchors are prefixes earlier rules used; new rules often nest in or
	// around them so that rules overlap.
	anchors []netip.Prefix
}

func (g *ruleGen) direction() policy.Direction {
	d := policy.Direction{Isolated: g.r.IntN(10) < 8}
	var n int
	switch p := g.r.IntN(20); {
	case p < 2:
		n = 0
	case p < 12:
		n = 1 + g.r.IntN(5)
	case p < 18:
		n = 6 + g.r.IntN(25)
	default:
		n = 100 + g.r.IntN(300)
	}
	g.anchors = g.anchors[:0]
	for range n {
		d.Rules = append(d.Rules, g.rule())
	}
	return d
}

func (g *ruleGen) rule() policy.Rule {
	rule := policy.Rule{ID: g.nextID, CIDR: g.cidr()}
	g.nextID += 1 + g.r.Uint32N(3)
	g.anchors = append(g.anchors, rule.CIDR)
	if g.r.IntN(10) < 3 {
		for range 1 + g.r.IntN(3) {
			rule.Except = append(rule.Except, Inside(g.r, rule.CIDR))
		}
	}
	if g.r.IntN(10) < 6 {
		for range 1 + g.r.IntN(4) {
			rule.Ports = append(rule.Ports, g.portRange())
		}
	}
	return rule
}

func (g *ruleGen) cidr() netip.Prefix {
	if len(g.anchors) > 0 && g.r.IntN(10) < 4 {
		anchor := g.anchors[g.r.IntN(len(g.anchors))]
		if g.r.IntN(2) == 0 {
			return Inside(g.r, anchor)
		}
		bits := g.r.IntN(anchor.Bits() + 1)
		return netip.PrefixFrom(anchor.Addr(), bits).Masked()
	}
	v6 := g.r.IntN(2) == 0
	addr := RandomAddr(g.r, v6)
	if v6 && g.r.IntN(10) == 0 {
		addr = netip.AddrFrom16(RandomAddr(g.r, false).As16()) // v4-mapped
	}
	return netip.PrefixFrom(addr, prefixLength(g.r, addr.BitLen())).Masked()
}

// prefixLength favours the edges: 0, 1, max-1, max and octet boundaries.
func prefixLength(r *rand.Rand, max int) int {
	switch r.IntN(8) {
	case 0:
		return 0
	case 1:
		return max
	case 2:
		return []int{1, max - 1, max / 2, 8, 16, 24}[r.IntN(6)]
	case 3:
		if max == 128 {
			return []int{48, 64, 96, 104, 112, 120}[r.IntN(6)]
		}
	}
	// Long prefixes keep most rules narrow, as in real policies.
	return max/2 + r.IntN(max/2+1)
}

// Inside returns a random masked prefix inside p (p itself included).
func Inside(r *rand.Rand, p netip.Prefix) netip.Prefix {
	bits := p.Bits() + r.IntN(p.Addr().BitLen()-p.Bits()+1)
	if r.IntN(4) == 0 {
		bits = p.Addr().BitLen() // single addresses are common excepts
	}
	return netip.PrefixFrom(RandomIn(r, p), bits).Masked()
}

// RandomAddr returns a uniformly random IPv4 or IPv6 address.
func RandomAddr(r *rand.Rand, v6 bool) netip.Addr {
	if !v6 {
		var b [4]byte
		putRandom(r, b[:])
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	putRandom(r, b[:])
	return netip.AddrFrom16(b)
}

// RandomIn returns a random address inside p.
func RandomIn(r *rand.Rand, p netip.Prefix) netip.Addr {
	random := RandomAddr(r, p.Addr().Is6()).AsSlice()
	return withHostBits(p, func(i int) byte { return random[i] })
}

// First returns the first address of p.
func First(p netip.Prefix) netip.Addr { return p.Masked().Addr() }

// Last returns the last address of p.
func Last(p netip.Prefix) netip.Addr { return withHostBits(p, func(int) byte { return 0xff }) }

// withHostBits returns p's address with its host bits taken from host(i)
// for byte i.
func withHostBits(p netip.Prefix, host func(i int) byte) netip.Addr {
	network := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range network {
		var mask byte
		switch {
		case bits >= 8*(i+1):
			mask = 0xff
		case bits > 8*i:
			mask = ^byte(0xff >> (bits - 8*i))
		}
		network[i] = network[i]&mask | host(i)&^mask
	}
	addr, _ := netip.AddrFromSlice(network)
	return addr
}

func putRandom(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

var otherProtocols = []policy.Protocol{policy.ICMP, policy.ICMPv6, 0, 47, policy.NoNextHeader, 50, 255}

func (g *ruleGen) portRange() policy.PortRange {
	pr := policy.PortRange{Protocol: []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP}[g.r.IntN(3)]}
	if g.r.IntN(10) == 0 {
		pr.Protocol = otherProtocols[g.r.IntN(len(otherProtocols))]
		if g.r.IntN(4) != 0 {
			return pr // all-ports: the only entry that lets port-less packets in
		}
	}
	switch g.r.IntN(4) {
	case 0:
		if g.r.IntN(10) == 0 {
			// Port 0 means all ports whatever EndPort says (see PortRange).
			pr.EndPort = randomPort(g.r)
		}
	case 1, 2:
		pr.Port = randomPort(g.r)
	default:
		pr.Port = randomPort(g.r)
		pr.EndPort = pr.Port + uint16(g.r.IntN(int(65535-pr.Port)+1))
		if g.r.IntN(4) == 0 {
			pr.EndPort = pr.Port + uint16(g.r.IntN(min(64, int(65535-pr.Port)+1)))
		}
	}
	return pr
}

// randomPort returns a non-zero port, often a well-known or edge one.
func randomPort(r *rand.Rand) uint16 {
	switch r.IntN(4) {
	case 0:
		return []uint16{1, 2, 53, 80, 443, 1023, 1024, 8080, 32768, 65534, 65535}[r.IntN(11)]
	case 1:
		return 1 + uint16(r.IntN(1024))
	}
	return 1 + uint16(r.IntN(65535))
}
