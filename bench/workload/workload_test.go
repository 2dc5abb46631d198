package workload

import (
	"net/netip"
	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

func TestOnlyTheAllowedPeerAndPortPass(t *testing.T) {
	for _, c := range []struct{ allow, other string }{
		{"10.1.2.3/32", "10.1.2.4"},
		{"fd00::1:2:3/128", "fd00::1:2:4"},
	} {
		allow := netip.MustParsePrefix(c.allow)
		dir, err := Direction(Spec{CIDRs: 1000, PortRanges: 1000, Allow: allow, AllowPort: 8080, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		ranges := 0
		for _, r := range dir.Rules {
			ranges += len(r.Ports)
		}
		if len(dir.Rules) != 1000 || ranges != 1001 {
			t.Fatalf("%d rules, %d port entries, want 1000 and 1000 ranges + the allowed port", len(dir.Rules), ranges)
		}
		ep := &policy.Endpoint{Ingress: dir}
		frame := func(src string, port uint16) []byte {
			dst := "10.9.9.9"
			if allow.Addr().Is6() {
				dst = "fd00::9"
			}
			return packet.Build(packet.Spec{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: policy.TCP, SrcPort: 40000, DstPort: port, TCPFlags: packet.SYN})
		}
		if v := policy.Evaluate(ep, policy.Ingress, frame(allow.Addr().String(), 8080)); !v.Allowed {
			t.Errorf("%v: allowed peer and port denied: %v", c.allow, v)
		}
		if v := policy.Evaluate(ep, policy.Ingress, frame(allow.Addr().String(), 8081)); v.Allowed {
			t.Errorf("%v: other port allowed: %v", c.allow, v)
		}
		if v := policy.Evaluate(ep, policy.Ingress, frame(c.other, 8080)); v.Allowed {
			t.Errorf("%v: other peer %v allowed: %v", c.allow, c.other, v)
		}
	}
}

func TestSameSeedSameRules(t *testing.T) {
	spec := Spec{CIDRs: 50, Allow: netip.MustParsePrefix("10.0.0.1/32"), Seed: 7}
	a, _ := Direction(spec)
	b, _ := Direction(spec)
	spec.Seed = 8
	c, _ := Direction(spec)
	if a.Rules[10].CIDR != b.Rules[10].CIDR || a.Rules[10].CIDR == c.Rules[10].CIDR {
		t.Fatalf("seeded CIDRs: %v %v %v", a.Rules[10].CIDR, b.Rules[10].CIDR, c.Rules[10].CIDR)
	}
}

func TestBadSpecIsAnError(t *testing.T) {
	for _, s := range []Spec{
		{CIDRs: 0, Allow: netip.MustParsePrefix("10.0.0.1/32")},
		{CIDRs: 1},
		{CIDRs: 1, PortRanges: 5, Allow: netip.MustParsePrefix("10.0.0.1/32")},
		{CIDRs: 1, PortRanges: 3000, AllowPort: 80, Allow: netip.MustParsePrefix("10.0.0.1/32")},
	} {
		if _, err := Direction(s); err == nil {
			t.Errorf("accepted %+v", s)
		}
	}
}
