package policy_test

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
	"github.com/palisade-net/palisade/policy/policygen"
)

// checkParse asserts invariants every ParseFrame result keeps.
func checkParse(t *testing.T, frame []byte, dir policy.Dir) {
	t.Helper()
	original := append([]byte(nil), frame...)
	p, err := policy.ParseFrame(frame, dir)
	if string(original) != string(frame) {
		t.Fatal("ParseFrame modified the frame")
	}
	if err != nil && !errors.Is(err, policy.ErrMalformed) && !errors.Is(err, policy.ErrNotIP) {
		t.Fatalf("error %v wraps neither ErrMalformed nor ErrNotIP", err)
	}
	if p.LaterFragment && p.HasPort {
		t.Fatalf("later fragment with a port: %v", p)
	}
	if !p.HasPort && p.Port != 0 {
		t.Fatalf("port-less packet with port %d", p.Port)
	}
	if p.HasPort && p.Protocol != policy.TCP && p.Protocol != policy.UDP && p.Protocol != policy.SCTP {
		t.Fatalf("protocol %d with a port", p.Protocol)
	}
	if p.ExtensionHeaders > policy.MaxExtensionHeaders || (p.ExtensionHeaders > 0 && !p.IsIPv6()) {
		t.Fatalf("%d extension headers in %v", p.ExtensionHeaders, p)
	}
	if err != nil {
		return
	}
	isIP := p.IsIPv4() || p.IsIPv6()
	if !isIP {
		if p.EtherType != policy.EtherTypeARP {
			t.Fatalf("EtherType 0x%04x parsed without error", p.EtherType)
		}
		return
	}
	if p.IsIPv4() != p.Peer.Is4() || p.Src.Is4() != p.Dst.Is4() {
		t.Fatalf("address family mismatch in %v", p)
	}
	wantPeer := p.Src
	if dir == policy.Egress {
		wantPeer = p.Dst
	}
	if p.Peer != wantPeer {
		t.Fatalf("peer %v, src %v dst %v, %v", p.Peer, p.Src, p.Dst, dir)
	}
	switch p.Protocol {
	case policy.TCP, policy.UDP, policy.SCTP:
		if !p.LaterFragment && !p.HasPort {
			t.Fatalf("first fragment of %v without a port", p)
		}
	}
	// Bytes after the IP packet are padding: they change nothing.
	padded, err := policy.ParseFrame(append(original, 0xff, 0, 0x45, 0x60, 1, 2, 3), dir)
	if err != nil || padded != p {
		t.Fatalf("padding changed the parse: %v %v, was %v", padded, err, p)
	}
}

// checkEvaluate asserts that Evaluate is the union of its rules: a packet
// is allowed by a direction iff it is ARP, neighbour discovery, or some
// single rule allows it,
// and the reported rule is the first such one.
func checkEvaluate(t *testing.T, ep *policy.Endpoint, dir policy.Dir, frame []byte) policy.Verdict {
	t.Helper()
	direction := ep.Of(dir)
	v := policy.Evaluate(ep, dir, frame)
	if !direction.Isolated {
		if !v.Allowed || v.Reason != policy.ReasonNotIsolated {
			t.Fatalf("not isolated yet %v", v)
		}
		return v
	}
	_, parseErr := policy.ParseFrame(frame, dir)
	if (parseErr != nil) != (v.Err != nil) {
		t.Fatalf("Evaluate error %v, ParseFrame error %v", v.Err, parseErr)
	}
	isARP := parseErr == nil && v.Packet.EtherType == policy.EtherTypeARP
	isNeighborDiscovery := parseErr == nil && v.Packet.NeighborDiscovery
	var first *policy.Rule
	if !isARP && !isNeighborDiscovery {
		for i := range direction.Rules {
			alone := &policy.Endpoint{}
			*alone.Of(dir) = policy.Direction{Isolated: true, Rules: direction.Rules[i : i+1]}
			if policy.Evaluate(alone, dir, frame).Allowed {
				first = &direction.Rules[i]
				break
			}
		}
	}
	switch {
	case isARP:
		if !v.Allowed || v.Reason != policy.ReasonARP {
			t.Fatalf("ARP: %v", v)
		}
	case isNeighborDiscovery:
		if !v.Allowed || v.Reason != policy.ReasonNeighborDiscovery {
			t.Fatalf("neighbour discovery: %v", v)
		}
	case first != nil:
		if !v.Allowed || v.Reason != policy.ReasonRule || v.RuleID != first.ID {
			t.Fatalf("rule %d alone allows %v but the direction says %v", first.ID, v.Packet, v)
		}
		if parseErr != nil {
			t.Fatalf("rule %d allows a frame ParseFrame rejects: %v", first.ID, parseErr)
		}
	default:
		if v.Allowed {
			t.Fatalf("no single rule allows %v but the direction says %v", v.Packet, v)
		}
	}
	// Rules for every address, without ports, allow exactly the parsed frames.
	open := &policy.Endpoint{}
	*open.Of(dir) = policy.Direction{Isolated: true, Rules: append(direction.Rules[:len(direction.Rules):len(direction.Rules)],
		policy.Rule{ID: 1 << 31, CIDR: netip.MustParsePrefix("0.0.0.0/0")}, policy.Rule{ID: 1<<31 + 1, CIDR: netip.MustParsePrefix("::/0")})}
	if allowed := policy.Evaluate(open, dir, frame).Allowed; allowed != (parseErr == nil) {
		t.Fatalf("allow-any rules: allowed %v, parse error %v", allowed, parseErr)
	}
	return v
}

func TestGeneratedPacketProperties(t *testing.T) {
	counts := map[policy.Reason]int{}
	for seed := range uint64(200) {
		r := policygen.New(seed)
		ep := policygen.Endpoint(r)
		for i := range 40 {
			dir := policy.Dir(i % 2)
			frame := policygen.Frame(r, ep, dir)
			if i%4 >= 2 {
				frame = policygen.Malformed(r, ep, dir)
			}
			checkParse(t, frame, dir)
			counts[checkEvaluate(t, ep, dir, frame).Reason]++
		}
	}
	t.Logf("verdict reasons: %v", counts)
}

func seedCorpus() [][]byte {
	frames := [][]byte{nil, make([]byte, 13), packet.ARP(peer4, local4)}
	for _, spec := range []packet.Spec{
		v4(policy.TCP, 80), v6(policy.UDP, 53), v4(policy.SCTP, 1), v4(policy.ICMP, 0), v6(policy.ICMPv6, 0),
		with(v4(policy.TCP, 80), func(s *packet.Spec) { s.IPv4.FragmentOffset = 1 }),
		with(v4(policy.TCP, 80), func(s *packet.Spec) { s.IPv4.Options = []byte{1, 1, 1, 1} }),
		with(v6(policy.TCP, 80), func(s *packet.Spec) { s.IPv6.ExtHeaders = ext(0, 43, 44, 51, 60) }),
		with(v6(policy.TCP, 80), func(s *packet.Spec) { s.IPv6.ExtHeaders = []packet.ExtHeader{laterFragment6(2)} }),
		with(v4(policy.TCP, 80), func(s *packet.Spec) { s.VLANs = []uint16{5} }),
	} {
		frames = append(frames, packet.Build(spec))
	}
	r := policygen.New(99)
	ep := policygen.Endpoint(r)
	for i := range 20 {
		frames = append(frames, policygen.Frame(r, ep, policy.Dir(i%2)), policygen.Malformed(r, ep, policy.Dir(i%2)))
	}
	return frames
}

func FuzzParseFrame(f *testing.F) {
	for _, frame := range seedCorpus() {
		f.Add(frame, false)
	}
	f.Fuzz(func(t *testing.T, frame []byte, egress bool) {
		dir := policy.Ingress
		if egress {
			dir = policy.Egress
		}
		checkParse(t, frame, dir)
	})
}

func FuzzEvaluate(f *testing.F) {
	for i, frame := range seedCorpus() {
		f.Add(uint64(i), frame, i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, seed uint64, frame []byte, egress bool) {
		dir := policy.Ingress
		if egress {
			dir = policy.Egress
		}
		ep := policygen.Endpoint(policygen.New(seed))
		checkEvaluate(t, ep, dir, frame)
		ep.Of(dir).Isolated = !ep.Of(dir).Isolated
		checkEvaluate(t, ep, dir, frame)
	})
}

func BenchmarkEvaluate(b *testing.B) {
	for _, rules := range []int{1, 10, 100, 400} {
		for _, kind := range []string{"wellformed", "malformed"} {
			b.Run(fmt.Sprintf("rules=%d/%s", rules, kind), func(b *testing.B) {
				r := policygen.New(uint64(rules))
				ep := &policy.Endpoint{Ingress: policy.Direction{Isolated: true}}
				for len(ep.Ingress.Rules) < rules {
					more := policygen.Endpoint(r)
					ep.Ingress.Rules = append(ep.Ingress.Rules, more.Ingress.Rules...)
				}
				ep.Ingress.Rules = ep.Ingress.Rules[:rules]
				frames := make([][]byte, 4096)
				for i := range frames {
					if kind == "malformed" {
						frames[i] = policygen.Malformed(r, ep, policy.Ingress)
					} else {
						frames[i] = policygen.Frame(r, ep, policy.Ingress)
					}
				}
				allowed := 0
				for i := 0; b.Loop(); i++ {
					if policy.Evaluate(ep, policy.Ingress, frames[i%len(frames)]).Allowed {
						allowed++
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mpkt/s")
			})
		}
	}
}
