package policygen

import (
	"math/rand/v2"
	"net/netip"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// Packet returns a random well-formed packet for direction dir of ep,
// biased to be interesting against its rules: peers at the first and last
// addresses of CIDRs and excepts and just outside them, v4-mapped peers,
// ports at range boundaries, every protocol, fragments, IPv4 options, IPv6
// extension header chains, padding, IPv6 neighbour discovery messages and
// near misses of them, and now and then ARP or VLAN frames.
func Packet(r *rand.Rand, ep *policy.Endpoint, dir policy.Dir) packet.Spec {
	rules := ep.Of(dir).Rules
	var rule *policy.Rule
	if len(rules) > 0 && r.IntN(8) != 0 {
		rule = &rules[r.IntN(len(rules))]
	}
	peer := peerAddress(r, rule)
	local := RandomAddr(r, peer.Is6())
	s := packet.Spec{Src: peer, Dst: local, SrcPort: randomPort(r)}
	if dir == policy.Egress {
		s.Src, s.Dst = local, peer
	}
	s.Protocol, s.DstPort = protocolAndPort(r, rule, peer.Is6())
	if peer.Is6() && s.Protocol == policy.HopByHop {
		// Next header 0 in IPv6 is a Hop-by-Hop header, not a protocol.
		s.Protocol = policy.NoNextHeader
	}
	switch s.Protocol {
	case policy.TCP:
		s.TCPFlags = []uint8{packet.SYN, packet.SYN | packet.ACK, packet.ACK, packet.FIN | packet.ACK, packet.RST, 0}[r.IntN(6)]
	case policy.ICMP, policy.ICMPv6:
		s.ICMP = icmpMessage(r, s)
	}
	if peer.Is6() && r.IntN(12) == 0 {
		neighborDiscovery(r, &s)
	}
	if r.IntN(10) == 0 {
		s.Payload = randomBytes(r, r.IntN(65))
	}
	if peer.Is6() {
		s.IPv6.ExtHeaders = extHeaderChain(r)
	} else {
		if r.IntN(10) == 0 {
			s.IPv4.Options = randomBytes(r, 1+r.IntN(40))
		}
		s.IPv4.ID = uint16(r.Uint32())
		s.IPv4.DontFragment = r.IntN(2) == 0
		switch r.IntN(20) {
		case 0, 1:
			s.IPv4.FragmentOffset = 1 + uint16(r.IntN(0x1fff))
			s.IPv4.MoreFragments = r.IntN(2) == 0
			s.IPv4.DontFragment = false
		case 2:
			s.IPv4.MoreFragments = true
			s.IPv4.DontFragment = false
		}
	}
	if r.IntN(10) == 0 {
		s.Malform.Trailer = randomBytes(r, 1+r.IntN(30))
	}
	switch r.IntN(50) {
	case 0:
		s.EtherType = policy.EtherTypeARP
	case 1:
		s.VLANs = []uint16{uint16(r.IntN(4096))}
	}
	return s
}

// Frame returns packet.Build(Packet(r, ep, dir)).
func Frame(r *rand.Rand, ep *policy.Endpoint, dir policy.Dir) []byte {
	return packet.Build(Packet(r, ep, dir))
}

// Malformed returns a frame derived from Packet and broken in one to three
// ways: cut short, lying length fields, bad IHL or version, truncated L4
// header, too many or misplaced IPv6 extension headers, lying extension
// header lengths, a foreign EtherType, flipped bytes. Some of these
// corruptions still leave a valid frame; the verdict must be right either way.
func Malformed(r *rand.Rand, ep *policy.Endpoint, dir policy.Dir) []byte {
	s := Packet(r, ep, dir)
	s.EtherType, s.VLANs = 0, nil
	ipLen := len(packet.IP(s))
	flips := 0
	for range 1 + r.IntN(3) {
		switch r.IntN(9) {
		case 0:
			s.Malform.FrameBytes = packet.Int(r.IntN(14 + ipLen))
		case 1:
			length := ipLen + r.IntN(9) - 4
			if r.IntN(4) == 0 {
				length = r.IntN(65536)
			}
			if s.Src.Is6() {
				s.Malform.PayloadLength = packet.Int(length - 40)
			} else {
				s.Malform.TotalLength = packet.Int(length)
			}
		case 2:
			s.Malform.IHL = packet.Int(r.IntN(16))
		case 3:
			s.Malform.Version = packet.Int(r.IntN(16))
		case 4:
			s.Malform.L4Bytes = packet.Int(r.IntN(25))
		case 5:
			s.IPv6.ExtHeaders = badExtHeaderChain(r)
		case 6:
			s.EtherType = []uint16{policy.EtherTypeIPv4, policy.EtherTypeIPv6, 0x8100, uint16(r.Uint32())}[r.IntN(4)]
		case 7:
			s.Protocol = []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP}[r.IntN(3)]
			s.Malform.L4Bytes = packet.Int(r.IntN(20))
		default:
			flips++
		}
	}
	frame := packet.Build(s)
	for range flips {
		if len(frame) > 0 {
			frame[r.IntN(min(len(frame), 120))] ^= byte(1 + r.IntN(255))
		}
	}
	return frame
}

func peerAddress(r *rand.Rand, rule *policy.Rule) netip.Addr {
	if rule == nil || !rule.CIDR.IsValid() {
		return RandomAddr(r, r.IntN(2) == 0)
	}
	p := rule.CIDR
	if len(rule.Except) > 0 && r.IntN(2) == 0 {
		if except := rule.Except[r.IntN(len(rule.Except))]; except.IsValid() {
			p = except
		}
	}
	var a netip.Addr
	switch r.IntN(6) {
	case 0:
		a = First(p)
	case 1:
		a = Last(p)
	case 2:
		a = First(p).Prev()
	case 3:
		a = Last(p).Next()
	default:
		a = RandomIn(r, p)
	}
	if !a.IsValid() {
		a = RandomIn(r, p)
	}
	if a.Is4() && r.IntN(10) == 0 {
		a = netip.AddrFrom16(a.As16())
	}
	return a
}

func protocolAndPort(r *rand.Rand, rule *policy.Rule, v6 bool) (policy.Protocol, uint16) {
	if rule != nil && len(rule.Ports) > 0 && r.IntN(4) != 0 {
		pr := rule.Ports[r.IntN(len(rule.Ports))]
		end := pr.EndPort
		if end == 0 {
			end = pr.Port
		}
		candidates := []uint16{pr.Port - 1, pr.Port, pr.Port + 1, end - 1, end, end + 1, 0, 65535, uint16(r.Uint32())}
		return pr.Protocol, candidates[r.IntN(len(candidates))]
	}
	icmp := policy.ICMP
	if v6 {
		icmp = policy.ICMPv6
	}
	protocols := []policy.Protocol{policy.TCP, policy.TCP, policy.UDP, policy.UDP, policy.SCTP, icmp, icmp}
	proto := protocols[r.IntN(len(protocols))]
	if r.IntN(10) == 0 {
		proto = otherProtocols[r.IntN(len(otherProtocols))]
	}
	port := randomPort(r)
	if r.IntN(20) == 0 {
		port = 0
	}
	return proto, port
}

func icmpMessage(r *rand.Rand, s packet.Spec) packet.ICMP {
	v6 := s.Protocol == policy.ICMPv6
	if r.IntN(2) == 0 {
		m := packet.ICMP{Type: packet.ICMPv4EchoRequest, ID: uint16(r.Uint32()), Seq: uint16(r.Uint32())}
		if v6 {
			m.Type = packet.ICMPv6EchoRequest
		}
		return m
	}
	// An error about a packet the other way, quoted from its IP header on.
	inner := packet.Spec{Src: s.Dst, Dst: s.Src, Protocol: []policy.Protocol{policy.TCP, policy.UDP}[r.IntN(2)], SrcPort: randomPort(r), DstPort: randomPort(r)}
	m := packet.ICMP{Type: packet.ICMPv4DestUnreachable, Code: packet.ICMPv4CodeFragNeeded, MTU: 1400, Inner: &inner}
	if s.Src.Is6() {
		m = packet.ICMP{Type: packet.ICMPv6PacketTooBig, MTU: 1280, Inner: &inner}
	}
	if r.IntN(3) == 0 {
		m.InnerBytes = 28
	}
	return m
}

// neighborDiscovery turns s into an IPv6 neighbour discovery message (rule
// 6 of the verdict rules) or, half of the time, a near miss of one: hop
// limit 254, a neighbouring ICMPv6 type, or fewer than 4 bytes of ICMPv6.
func neighborDiscovery(r *rand.Rand, s *packet.Spec) {
	s.Protocol = policy.ICMPv6
	s.HopLimit = 255
	s.ICMP = packet.ICMP{Type: uint8(133 + r.IntN(4))}
	s.Payload = randomBytes(r, []int{0, 16, 24}[r.IntN(3)])
	if r.IntN(2) == 0 {
		return
	}
	switch r.IntN(4) {
	case 0:
		s.HopLimit = []uint8{254, 1, 64}[r.IntN(3)]
	case 1:
		s.ICMP.Type = []uint8{132, 137, packet.ICMPv6EchoRequest}[r.IntN(3)]
	case 2:
		s.Malform.L4Bytes = packet.Int(r.IntN(4))
	default:
		s.Malform.L4Bytes = packet.Int(4) // the shortest message rule 6 allows
	}
}

// extHeaderChain returns a valid chain of zero to eight IPv6 extension
// headers, sometimes ending in a fragment header.
func extHeaderChain(r *rand.Rand) []packet.ExtHeader {
	if r.IntN(10) < 7 {
		return nil
	}
	n := 1 + r.IntN(policy.MaxExtensionHeaders)
	chain := make([]packet.ExtHeader, 0, n)
	for i := range n {
		kinds := []policy.Protocol{policy.Routing, policy.DestOptions, policy.AH, policy.Fragment}
		if i == 0 {
			kinds = append(kinds, policy.HopByHop, policy.HopByHop)
		}
		chain = append(chain, extHeader(r, kinds[r.IntN(len(kinds))]))
	}
	if r.IntN(3) == 0 {
		last := &chain[len(chain)-1]
		*last = packet.ExtHeader{Type: policy.Fragment, FragmentOffset: uint16(r.IntN(0x2000)), MoreFragments: r.IntN(2) == 0, ID: r.Uint32()}
	}
	return chain
}

// badExtHeaderChain returns an IPv6 extension header chain the rules drop,
// or, now and then, one at the limit that they accept.
func badExtHeaderChain(r *rand.Rand) []packet.ExtHeader {
	kinds := []policy.Protocol{policy.Routing, policy.DestOptions, policy.AH, policy.Fragment}
	var chain []packet.ExtHeader
	switch r.IntN(3) {
	case 0: // too many (or exactly the limit)
		for range policy.MaxExtensionHeaders + r.IntN(4) {
			chain = append(chain, extHeader(r, kinds[r.IntN(len(kinds))]))
		}
	case 1: // Hop-by-Hop not first
		for range 1 + r.IntN(3) {
			chain = append(chain, extHeader(r, kinds[r.IntN(len(kinds))]))
		}
		chain = append(chain, extHeader(r, policy.HopByHop))
	default: // a length byte that lies
		chain = append(chain, extHeader(r, kinds[r.IntN(3)]))
		chain[0].Len = packet.Int(r.IntN(256))
	}
	return chain
}

func extHeader(r *rand.Rand, kind policy.Protocol) packet.ExtHeader {
	h := packet.ExtHeader{Type: kind}
	switch kind {
	case policy.Fragment:
		h.MoreFragments = true
		h.ID = r.Uint32()
	case policy.AH:
		h.Body = randomBytes(r, 10+4*r.IntN(4))
	default:
		h.Body = randomBytes(r, r.IntN(30))
	}
	return h
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	putRandom(r, b)
	return b
}
