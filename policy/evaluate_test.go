package policy_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

func cidr(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func ports(entries ...policy.PortRange) []policy.PortRange { return entries }

func single(proto policy.Protocol, port uint16) policy.PortRange {
	return policy.PortRange{Protocol: proto, Port: port}
}

func span(proto policy.Protocol, from, to uint16) policy.PortRange {
	return policy.PortRange{Protocol: proto, Port: from, EndPort: to}
}

func all(proto policy.Protocol) policy.PortRange { return policy.PortRange{Protocol: proto} }

var allowAny = []policy.Rule{{ID: 1, CIDR: cidr("0.0.0.0/0")}, {ID: 2, CIDR: cidr("::/0")}}

func from(s packet.Spec, peer string) packet.Spec {
	s.Src = netip.MustParseAddr(peer)
	if s.Src.Is4() {
		s.Dst = local4
	} else {
		s.Dst = local6
	}
	return s
}

func TestEvaluate(t *testing.T) {
	const (
		allow = true
		drop  = false
	)
	icmpEcho := with(v4(policy.ICMP, 0), func(s *packet.Spec) { s.ICMP = packet.ICMP{Type: packet.ICMPv4EchoRequest, ID: 1} })
	icmp6Echo := with(v6(policy.ICMPv6, 0), func(s *packet.Spec) { s.ICMP = packet.ICMP{Type: packet.ICMPv6EchoRequest, ID: 1} })
	fragNeeded := with(v4(policy.ICMP, 0), func(s *packet.Spec) {
		inner := packet.Spec{Src: local4, Dst: peer4, Protocol: policy.TCP, SrcPort: 80, DstPort: 80}
		s.ICMP = packet.ICMP{Type: packet.ICMPv4DestUnreachable, Code: packet.ICMPv4CodeFragNeeded, MTU: 1400, Inner: &inner}
	})
	tooBig := with(v6(policy.ICMPv6, 0), func(s *packet.Spec) {
		inner := packet.Spec{Src: local6, Dst: peer6, Protocol: policy.TCP, SrcPort: 80, DstPort: 80}
		s.ICMP = packet.ICMP{Type: packet.ICMPv6PacketTooBig, MTU: 1280, Inner: &inner}
	})
	later4 := with(v4(policy.TCP, 80), func(s *packet.Spec) { s.IPv4.FragmentOffset = 10 })
	later6 := with(v6(policy.TCP, 80), func(s *packet.Spec) { s.IPv6.ExtHeaders = []packet.ExtHeader{laterFragment6(10)} })
	egress := with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Src, s.Dst = local4, peer4 })

	tcp1000to2000 := []policy.Rule{{ID: 5, CIDR: cidr("0.0.0.0/0"), Ports: ports(span(policy.TCP, 1000, 2000))}}
	holes := []policy.Rule{
		{ID: 10, CIDR: cidr("10.0.0.0/8"), Except: []netip.Prefix{cidr("10.1.0.0/16"), cidr("10.3.3.3/32")}},
		{ID: 11, CIDR: cidr("fd00::/16"), Except: []netip.Prefix{cidr("fd00::1:0:0/96")}},
	}
	cases := []struct {
		name   string
		rules  []policy.Rule
		dir    policy.Dir
		spec   packet.Spec
		frame  []byte // used instead of spec when set
		allow  bool
		reason policy.Reason
		rule   uint32
	}{
		{name: "no rules drop", spec: v4(policy.TCP, 80), allow: drop, reason: policy.ReasonNoRule},
		{name: "allow any v4", rules: allowAny, spec: v4(policy.TCP, 80), allow: allow, reason: policy.ReasonRule, rule: 1},
		{name: "allow any v6", rules: allowAny, spec: v6(policy.TCP, 80), allow: allow, reason: policy.ReasonRule, rule: 2},
		{name: "ARP allowed with no rules", frame: packet.ARP(peer4, local4), allow: allow, reason: policy.ReasonARP},
		{name: "bare ARP EtherType allowed", frame: packet.ARP(peer4, local4)[:14], allow: allow, reason: policy.ReasonARP},
		{name: "VLAN dropped even with allow-any", rules: allowAny, spec: with(v4(policy.TCP, 80), func(s *packet.Spec) { s.VLANs = []uint16{7} }), allow: drop, reason: policy.ReasonNotIP},
		{name: "short frame dropped", rules: allowAny, frame: make([]byte, 13), allow: drop, reason: policy.ReasonMalformed},
		{name: "malformed dropped with allow-any", rules: allowAny, spec: with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.IHL = packet.Int(3) }), allow: drop, reason: policy.ReasonMalformed},
		{name: "truncated L4 dropped with allow-any", rules: allowAny, spec: with(v6(policy.UDP, 80), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(4) }), allow: drop, reason: policy.ReasonMalformed},

		{name: "single port hit", rules: []policy.Rule{{ID: 3, CIDR: cidr("10.0.0.0/8"), Ports: ports(single(policy.TCP, 80))}}, spec: v4(policy.TCP, 80), allow: allow, reason: policy.ReasonRule, rule: 3},
		{name: "single port below", rules: []policy.Rule{{ID: 3, CIDR: cidr("10.0.0.0/8"), Ports: ports(single(policy.TCP, 80))}}, spec: v4(policy.TCP, 79), allow: drop, reason: policy.ReasonNoRule},
		{name: "single port above", rules: []policy.Rule{{ID: 3, CIDR: cidr("10.0.0.0/8"), Ports: ports(single(policy.TCP, 80))}}, spec: v4(policy.TCP, 81), allow: drop, reason: policy.ReasonNoRule},
		{name: "single port other protocol", rules: []policy.Rule{{ID: 3, CIDR: cidr("10.0.0.0/8"), Ports: ports(single(policy.TCP, 80))}}, spec: v4(policy.UDP, 80), allow: drop, reason: policy.ReasonNoRule},
		{name: "range below start", rules: tcp1000to2000, spec: v4(policy.TCP, 999), allow: drop, reason: policy.ReasonNoRule},
		{name: "range start", rules: tcp1000to2000, spec: v4(policy.TCP, 1000), allow: allow, reason: policy.ReasonRule, rule: 5},
		{name: "range end", rules: tcp1000to2000, spec: v4(policy.TCP, 2000), allow: allow, reason: policy.ReasonRule, rule: 5},
		{name: "range past end", rules: tcp1000to2000, spec: v4(policy.TCP, 2001), allow: drop, reason: policy.ReasonNoRule},
		{name: "range other protocol", rules: tcp1000to2000, spec: v4(policy.SCTP, 1500), allow: drop, reason: policy.ReasonNoRule},
		{name: "range to 65535", rules: []policy.Rule{{ID: 6, CIDR: cidr("::/0"), Ports: ports(span(policy.UDP, 65535, 65535))}}, spec: v6(policy.UDP, 65535), allow: allow, reason: policy.ReasonRule, rule: 6},
		{name: "range to 65535 miss", rules: []policy.Rule{{ID: 6, CIDR: cidr("::/0"), Ports: ports(span(policy.UDP, 65535, 65535))}}, spec: v6(policy.UDP, 65534), allow: drop, reason: policy.ReasonNoRule},
		{name: "range 1-65535 misses port 0", rules: []policy.Rule{{ID: 6, CIDR: cidr("::/0"), Ports: ports(span(policy.UDP, 1, 65535))}}, spec: v6(policy.UDP, 0), allow: drop, reason: policy.ReasonNoRule},
		{name: "all-ports takes port 0", rules: []policy.Rule{{ID: 6, CIDR: cidr("::/0"), Ports: ports(all(policy.UDP))}}, spec: v6(policy.UDP, 0), allow: allow, reason: policy.ReasonRule, rule: 6},
		{name: "port 0 is all ports whatever EndPort says", rules: []policy.Rule{{ID: 6, CIDR: cidr("0.0.0.0/0"), Ports: ports(span(policy.TCP, 0, 10))}}, spec: v4(policy.TCP, 80), allow: allow, reason: policy.ReasonRule, rule: 6},
		{name: "port 0 with EndPort takes later fragments", rules: []policy.Rule{{ID: 6, CIDR: cidr("0.0.0.0/0"), Ports: ports(span(policy.TCP, 0, 10))}}, spec: later4, allow: allow, reason: policy.ReasonRule, rule: 6},
		{name: "reversed range matches nothing", rules: []policy.Rule{{ID: 6, CIDR: cidr("0.0.0.0/0"), Ports: ports(span(policy.TCP, 2000, 1000))}}, spec: v4(policy.TCP, 1500), allow: drop, reason: policy.ReasonNoRule},
		{name: "second port entry", rules: []policy.Rule{{ID: 7, CIDR: cidr("0.0.0.0/0"), Ports: ports(single(policy.UDP, 53), single(policy.TCP, 53))}}, spec: v4(policy.TCP, 53), allow: allow, reason: policy.ReasonRule, rule: 7},
		{name: "SCTP port", rules: []policy.Rule{{ID: 8, CIDR: cidr("0.0.0.0/0"), Ports: ports(single(policy.SCTP, 3868))}}, spec: v4(policy.SCTP, 3868), allow: allow, reason: policy.ReasonRule, rule: 8},

		{name: "ICMP vs TCP all-ports", rules: []policy.Rule{{ID: 1, CIDR: cidr("0.0.0.0/0"), Ports: ports(all(policy.TCP))}}, spec: icmpEcho, allow: drop, reason: policy.ReasonNoRule},
		{name: "ICMP via no-ports rule", rules: []policy.Rule{{ID: 1, CIDR: cidr("0.0.0.0/0")}}, spec: icmpEcho, allow: allow, reason: policy.ReasonRule, rule: 1},
		{name: "ICMP via ICMP all-ports", rules: []policy.Rule{{ID: 2, CIDR: cidr("0.0.0.0/0"), Ports: ports(single(policy.TCP, 80), all(policy.ICMP))}}, spec: icmpEcho, allow: allow, reason: policy.ReasonRule, rule: 2},
		{name: "ICMP not via ICMP single port", rules: []policy.Rule{{ID: 2, CIDR: cidr("0.0.0.0/0"), Ports: ports(single(policy.ICMP, 8), span(policy.ICMP, 1, 65535))}}, spec: icmpEcho, allow: drop, reason: policy.ReasonNoRule},
		{name: "ICMPv6 via ICMPv6 all-ports", rules: []policy.Rule{{ID: 2, CIDR: cidr("::/0"), Ports: ports(all(policy.ICMPv6))}}, spec: icmp6Echo, allow: allow, reason: policy.ReasonRule, rule: 2},
		{name: "ICMPv6 not via ICMP all-ports", rules: []policy.Rule{{ID: 2, CIDR: cidr("::/0"), Ports: ports(all(policy.ICMP))}}, spec: icmp6Echo, allow: drop, reason: policy.ReasonNoRule},
		{name: "frag-needed quoting TCP 80 is not TCP 80", rules: []policy.Rule{{ID: 2, CIDR: cidr("0.0.0.0/0"), Ports: ports(single(policy.TCP, 80))}}, spec: fragNeeded, allow: drop, reason: policy.ReasonNoRule},
		{name: "packet-too-big quoting TCP 80 is not TCP 80", rules: []policy.Rule{{ID: 2, CIDR: cidr("::/0"), Ports: ports(single(policy.TCP, 80))}}, spec: tooBig, allow: drop, reason: policy.ReasonNoRule},
		{name: "packet-too-big via no-ports rule", rules: allowAny, spec: tooBig, allow: allow, reason: policy.ReasonRule, rule: 2},
		{name: "protocol 0 via its all-ports", rules: []policy.Rule{{ID: 4, CIDR: cidr("0.0.0.0/0"), Ports: ports(all(0))}}, spec: v4(0, 0), allow: allow, reason: policy.ReasonRule, rule: 4},
		{name: "No Next Header via no-ports rule", rules: allowAny, spec: v6(policy.NoNextHeader, 0), allow: allow, reason: policy.ReasonRule, rule: 2},
		{name: "No Next Header not via TCP all-ports", rules: []policy.Rule{{ID: 4, CIDR: cidr("::/0"), Ports: ports(all(policy.TCP))}}, spec: v6(policy.NoNextHeader, 0), allow: drop, reason: policy.ReasonNoRule},
		{name: "GRE via GRE all-ports", rules: []policy.Rule{{ID: 4, CIDR: cidr("0.0.0.0/0"), Ports: ports(all(47))}}, spec: v4(47, 0), allow: allow, reason: policy.ReasonRule, rule: 4},

		{name: "IPv4 later fragment vs its port", rules: []policy.Rule{{ID: 1, CIDR: cidr("0.0.0.0/0"), Ports: ports(single(policy.TCP, 80))}}, spec: later4, allow: drop, reason: policy.ReasonNoRule},
		{name: "IPv4 later fragment via TCP all-ports", rules: []policy.Rule{{ID: 1, CIDR: cidr("0.0.0.0/0"), Ports: ports(all(policy.TCP))}}, spec: later4, allow: allow, reason: policy.ReasonRule, rule: 1},
		{name: "IPv4 later fragment not via UDP all-ports", rules: []policy.Rule{{ID: 1, CIDR: cidr("0.0.0.0/0"), Ports: ports(all(policy.UDP))}}, spec: later4, allow: drop, reason: policy.ReasonNoRule},
		{name: "IPv4 later fragment via no-ports rule", rules: allowAny, spec: later4, allow: allow, reason: policy.ReasonRule, rule: 1},
		{name: "IPv6 later fragment vs its port", rules: []policy.Rule{{ID: 1, CIDR: cidr("::/0"), Ports: ports(single(policy.TCP, 80))}}, spec: later6, allow: drop, reason: policy.ReasonNoRule},
		{name: "IPv6 later fragment via TCP all-ports", rules: []policy.Rule{{ID: 1, CIDR: cidr("::/0"), Ports: ports(all(policy.TCP))}}, spec: later6, allow: allow, reason: policy.ReasonRule, rule: 1},
		{name: "IPv4 first fragment via its port", rules: []policy.Rule{{ID: 1, CIDR: cidr("0.0.0.0/0"), Ports: ports(single(policy.TCP, 80))}}, spec: with(v4(policy.TCP, 80), func(s *packet.Spec) { s.IPv4.MoreFragments = true }), allow: allow, reason: policy.ReasonRule, rule: 1},
		{name: "IPv6 port behind 8 headers", rules: []policy.Rule{{ID: 1, CIDR: cidr("::/0"), Ports: ports(single(policy.UDP, 53))}}, spec: with(v6(policy.UDP, 53), func(s *packet.Spec) { s.IPv6.ExtHeaders = ext(0, 60, 43, 44, 51, 60, 43, 60) }), allow: allow, reason: policy.ReasonRule, rule: 1},

		{name: "except hole", rules: holes, spec: from(v4(policy.TCP, 1), "10.1.2.3"), allow: drop, reason: policy.ReasonNoRule},
		{name: "except first address", rules: holes, spec: from(v4(policy.TCP, 1), "10.1.0.0"), allow: drop, reason: policy.ReasonNoRule},
		{name: "except last address", rules: holes, spec: from(v4(policy.TCP, 1), "10.1.255.255"), allow: drop, reason: policy.ReasonNoRule},
		{name: "before except", rules: holes, spec: from(v4(policy.TCP, 1), "10.0.255.255"), allow: allow, reason: policy.ReasonRule, rule: 10},
		{name: "after except", rules: holes, spec: from(v4(policy.TCP, 1), "10.2.0.0"), allow: allow, reason: policy.ReasonRule, rule: 10},
		{name: "second except /32", rules: holes, spec: from(v4(policy.TCP, 1), "10.3.3.3"), allow: drop, reason: policy.ReasonNoRule},
		{name: "next to /32 except", rules: holes, spec: from(v4(policy.TCP, 1), "10.3.3.4"), allow: allow, reason: policy.ReasonRule, rule: 10},
		{name: "CIDR last address", rules: holes, spec: from(v4(policy.TCP, 1), "10.255.255.255"), allow: allow, reason: policy.ReasonRule, rule: 10},
		{name: "past CIDR", rules: holes, spec: from(v4(policy.TCP, 1), "11.0.0.0"), allow: drop, reason: policy.ReasonNoRule},
		{name: "v6 except hole", rules: holes, spec: from(v6(policy.TCP, 1), "fd00::1:ffff:ffff"), allow: drop, reason: policy.ReasonNoRule},
		{name: "v6 next to except", rules: holes, spec: from(v6(policy.TCP, 1), "fd00::2:0:0"), allow: allow, reason: policy.ReasonRule, rule: 11},
		{name: "except only holes its own rule", rules: append(append([]policy.Rule{}, holes...), policy.Rule{ID: 12, CIDR: cidr("10.1.0.0/16"), Ports: ports(single(policy.TCP, 1))}), spec: from(v4(policy.TCP, 1), "10.1.2.3"), allow: allow, reason: policy.ReasonRule, rule: 12},
		{name: "except of other family ignored", rules: []policy.Rule{{ID: 13, CIDR: cidr("0.0.0.0/0"), Except: []netip.Prefix{cidr("::/0")}}}, spec: v4(policy.TCP, 1), allow: allow, reason: policy.ReasonRule, rule: 13},
		{name: "except equal to CIDR", rules: []policy.Rule{{ID: 13, CIDR: cidr("10.1.2.3/32"), Except: []netip.Prefix{cidr("10.1.2.3/32")}}}, spec: v4(policy.TCP, 1), allow: drop, reason: policy.ReasonNoRule},

		{name: "overlap: first rule by port", rules: []policy.Rule{{ID: 20, CIDR: cidr("10.0.0.0/8"), Ports: ports(single(policy.TCP, 80))}, {ID: 21, CIDR: cidr("10.1.0.0/16"), Ports: ports(single(policy.UDP, 53))}}, spec: v4(policy.TCP, 80), allow: allow, reason: policy.ReasonRule, rule: 20},
		{name: "overlap: second rule by port", rules: []policy.Rule{{ID: 20, CIDR: cidr("10.0.0.0/8"), Ports: ports(single(policy.TCP, 80))}, {ID: 21, CIDR: cidr("10.1.0.0/16"), Ports: ports(single(policy.UDP, 53))}}, spec: v4(policy.UDP, 53), allow: allow, reason: policy.ReasonRule, rule: 21},
		{name: "overlap: neither", rules: []policy.Rule{{ID: 20, CIDR: cidr("10.0.0.0/8"), Ports: ports(single(policy.TCP, 80))}, {ID: 21, CIDR: cidr("10.1.0.0/16"), Ports: ports(single(policy.UDP, 53))}}, spec: v4(policy.UDP, 80), allow: drop, reason: policy.ReasonNoRule},
		{name: "overlap: port of narrow rule outside it", rules: []policy.Rule{{ID: 20, CIDR: cidr("10.0.0.0/8"), Ports: ports(single(policy.TCP, 80))}, {ID: 21, CIDR: cidr("10.1.0.0/16"), Ports: ports(single(policy.UDP, 53))}}, spec: from(v4(policy.UDP, 53), "10.2.0.1"), allow: drop, reason: policy.ReasonNoRule},
		{name: "/32 hit", rules: []policy.Rule{{ID: 22, CIDR: cidr("10.1.2.3/32")}}, spec: v4(policy.TCP, 1), allow: allow, reason: policy.ReasonRule, rule: 22},
		{name: "/32 neighbour", rules: []policy.Rule{{ID: 22, CIDR: cidr("10.1.2.3/32")}}, spec: from(v4(policy.TCP, 1), "10.1.2.4"), allow: drop, reason: policy.ReasonNoRule},
		{name: "/128 hit", rules: []policy.Rule{{ID: 23, CIDR: cidr("fd00::1:2:3/128")}}, spec: v6(policy.TCP, 1), allow: allow, reason: policy.ReasonRule, rule: 23},
		{name: "/128 neighbour", rules: []policy.Rule{{ID: 23, CIDR: cidr("fd00::1:2:3/128")}}, spec: from(v6(policy.TCP, 1), "fd00::1:2:2"), allow: drop, reason: policy.ReasonNoRule},
		{name: "unmasked CIDR is its network", rules: []policy.Rule{{ID: 24, CIDR: netip.PrefixFrom(netip.MustParseAddr("10.1.9.9"), 16)}}, spec: v4(policy.TCP, 1), allow: allow, reason: policy.ReasonRule, rule: 24},
		{name: "invalid CIDR matches nothing", rules: []policy.Rule{{ID: 25}}, spec: v4(policy.TCP, 1), allow: drop, reason: policy.ReasonNoRule},

		{name: "v4 rule vs v6 packet", rules: []policy.Rule{{ID: 30, CIDR: cidr("0.0.0.0/0")}}, spec: v6(policy.TCP, 1), allow: drop, reason: policy.ReasonNoRule},
		{name: "v6 rule vs v4 packet", rules: []policy.Rule{{ID: 30, CIDR: cidr("::/0")}}, spec: v4(policy.TCP, 1), allow: drop, reason: policy.ReasonNoRule},
		{name: "v4 rule vs v4-mapped v6 packet", rules: []policy.Rule{{ID: 30, CIDR: cidr("10.0.0.0/8")}}, spec: from(v6(policy.TCP, 1), "::ffff:10.1.2.3"), allow: drop, reason: policy.ReasonNoRule},
		{name: "mapped v6 rule vs v4 packet", rules: []policy.Rule{{ID: 30, CIDR: cidr("::ffff:10.0.0.0/104")}}, spec: v4(policy.TCP, 1), allow: drop, reason: policy.ReasonNoRule},
		{name: "mapped v6 rule vs mapped v6 packet", rules: []policy.Rule{{ID: 30, CIDR: cidr("::ffff:10.0.0.0/104")}}, spec: from(v6(policy.TCP, 1), "::ffff:10.1.2.3"), allow: allow, reason: policy.ReasonRule, rule: 30},

		{name: "egress peer is destination", dir: policy.Egress, rules: []policy.Rule{{ID: 40, CIDR: cidr("10.1.2.3/32")}}, spec: egress, allow: allow, reason: policy.ReasonRule, rule: 40},
		{name: "egress ignores source", dir: policy.Egress, rules: []policy.Rule{{ID: 40, CIDR: cidr("10.9.9.9/32")}}, spec: egress, allow: drop, reason: policy.ReasonNoRule},
		{name: "ingress ignores destination", rules: []policy.Rule{{ID: 40, CIDR: cidr("10.9.9.9/32")}}, spec: v4(policy.TCP, 80), allow: drop, reason: policy.ReasonNoRule},
		{name: "egress port is destination port", dir: policy.Egress, rules: []policy.Rule{{ID: 41, CIDR: cidr("0.0.0.0/0"), Ports: ports(single(policy.TCP, 40000))}}, spec: egress, allow: drop, reason: policy.ReasonNoRule},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			frame := tc.frame
			if frame == nil {
				frame = packet.Build(tc.spec)
			}
			ep := &policy.Endpoint{}
			d := ep.Of(tc.dir)
			d.Isolated, d.Rules = true, tc.rules
			v := policy.Evaluate(ep, tc.dir, frame)
			if v.Allowed != tc.allow || v.Reason != tc.reason || v.RuleID != tc.rule {
				t.Fatalf("verdict %q (allowed %v, reason %v, rule %d), want allowed %v, reason %v, rule %d; packet %v",
					v, v.Allowed, v.Reason, v.RuleID, tc.allow, tc.reason, tc.rule, v.Packet)
			}
			other := policy.Ingress
			if tc.dir == policy.Ingress {
				other = policy.Egress
			}
			if v := policy.Evaluate(ep, other, frame); !v.Allowed || v.Reason != policy.ReasonNotIsolated {
				t.Fatalf("the other direction is not isolated, got %v", v)
			}
		})
	}
}

func TestEvaluateNotIsolatedAllowsEverything(t *testing.T) {
	frames := [][]byte{
		nil,
		make([]byte, 13),
		packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.IHL = packet.Int(2) })),
		packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.VLANs = []uint16{1} })),
		packet.Build(v6(policy.UDP, 53)),
	}
	ep := &policy.Endpoint{Ingress: policy.Direction{Rules: []policy.Rule{{ID: 1, CIDR: cidr("10.0.0.0/8")}}}}
	for i, frame := range frames {
		for _, dir := range []policy.Dir{policy.Ingress, policy.Egress} {
			v := policy.Evaluate(ep, dir, frame)
			if !v.Allowed || v.Reason != policy.ReasonNotIsolated {
				t.Errorf("frame %d %v: %v, want allow: not isolated", i, dir, v)
			}
		}
	}
}

func TestVerdictString(t *testing.T) {
	ep := &policy.Endpoint{Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{{ID: 7, CIDR: cidr("10.0.0.0/8"), Ports: ports(single(policy.TCP, 80))}}}}
	cases := []struct {
		frame []byte
		want  string
	}{
		{packet.Build(v4(policy.TCP, 80)), "allow: rule 7"},
		{packet.Build(v4(policy.TCP, 81)), "drop: no rule matches"},
		{packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.IHL = packet.Int(3) })), "drop: malformed: IPv4 IHL 3 < 5"},
		{packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.VLANs = []uint16{1} })), "drop: not IP: EtherType 0x8100 (VLAN tag)"},
		{packet.ARP(peer4, local4), "allow: ARP"},
	}
	for _, tc := range cases {
		if got := policy.Evaluate(ep, policy.Ingress, tc.frame).String(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
	if got := policy.Evaluate(ep, policy.Egress, nil).String(); got != "allow: not isolated" {
		t.Errorf("got %q", got)
	}
	p, _ := policy.ParseFrame(packet.Build(with(v4(policy.UDP, 53), func(s *packet.Spec) { s.IPv4.FragmentOffset = 3 })), policy.Ingress)
	if got := p.String(); !strings.Contains(got, "later fragment") || !strings.HasPrefix(got, "IPv4 UDP 10.1.2.3 -> 10.9.9.9") {
		t.Errorf("packet string %q", got)
	}
}
