package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// egressOnlyWeb lets the pod open TCP 80 to peerIP; nothing may come in.
func egressOnlyWeb() *policy.Endpoint {
	return &policy.Endpoint{
		Ingress: policy.Direction{Isolated: true},
		Egress: policy.Direction{Isolated: true, Rules: []policy.Rule{
			{ID: 7, CIDR: netip.PrefixFrom(peerIP, 32), Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80}, {Protocol: policy.UDP, Port: 53}}},
			{ID: 8, CIDR: netip.PrefixFrom(peerIP6, 128), Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80}}},
			{ID: 9, CIDR: netip.PrefixFrom(otherIP, 32), Ports: []policy.PortRange{{Protocol: policy.ICMP}}},
		}},
	}
}

func TestRepliesOfAllowedFlowsPass(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, egressOnlyWeb()); err != nil {
		t.Fatal(err)
	}
	runSteps(t, d, ifindex, "", []verdictStep{
		{"unsolicited SYN-ACK before the flow", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.SYN|packet.ACK), false},
		{"SYN out", policy.Egress, tcp(podIP, peerIP, 33000, 80, packet.SYN), true},
		{"SYN-ACK back", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.SYN|packet.ACK), true},
		{"data back", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.ACK), true},
		{"same peer, other pod port", policy.Ingress, tcp(peerIP, podIP, 80, 33001, packet.ACK), false},
		{"peer opens its own connection", policy.Ingress, tcp(peerIP, podIP, 33000, 80, packet.SYN), false},
		{"IPv6 SYN out", policy.Egress, tcp(podIP6, peerIP6, 33000, 80, packet.SYN), true},
		{"IPv6 reply", policy.Ingress, tcp(peerIP6, podIP6, 80, 33000, packet.SYN|packet.ACK), true},
		{"UDP query", policy.Egress, udp(podIP, peerIP, 5353, 53), true},
		{"UDP answer", policy.Ingress, udp(peerIP, podIP, 53, 5353), true},
		{"UDP from another port", policy.Ingress, udp(peerIP, podIP, 54, 5353), false},
		{"ping out", policy.Egress, packet.Build(packet.Spec{Src: podIP, Dst: otherIP, Protocol: policy.ICMP, ICMP: packet.ICMP{Type: packet.ICMPv4EchoRequest, ID: 77}}), true},
		{"pong back", policy.Ingress, packet.Build(packet.Spec{Src: otherIP, Dst: podIP, Protocol: policy.ICMP, ICMP: packet.ICMP{Type: packet.ICMPv4EchoReply, ID: 77}}), true},
		{"pong of another id", policy.Ingress, packet.Build(packet.Spec{Src: otherIP, Dst: podIP, Protocol: policy.ICMP, ICMP: packet.ICMP{Type: packet.ICMPv4EchoReply, ID: 78}}), false},
		{"fragmentation needed about the flow", policy.Ingress, packet.Build(packet.Spec{Src: netip.MustParseAddr("10.9.9.1"), Dst: podIP, Protocol: policy.ICMP,
			ICMP: packet.ICMP{Type: packet.ICMPv4DestUnreachable, Code: packet.ICMPv4CodeFragNeeded, MTU: 1400,
				Inner: &packet.Spec{Src: podIP, Dst: peerIP, Protocol: policy.TCP, SrcPort: 33000, DstPort: 80}}}), true},
		{"fragmentation needed about another flow", policy.Ingress, packet.Build(packet.Spec{Src: netip.MustParseAddr("10.9.9.1"), Dst: podIP, Protocol: policy.ICMP,
			ICMP: packet.ICMP{Type: packet.ICMPv4DestUnreachable, Code: packet.ICMPv4CodeFragNeeded, MTU: 1400,
				Inner: &packet.Spec{Src: podIP, Dst: peerIP, Protocol: policy.TCP, SrcPort: 33999, DstPort: 80}}}), false},
		{"packet too big about the IPv6 flow", policy.Ingress, packet.Build(packet.Spec{Src: netip.MustParseAddr("fd00:9::1"), Dst: podIP6, Protocol: policy.ICMPv6,
			ICMP: packet.ICMP{Type: packet.ICMPv6PacketTooBig, MTU: 1280,
				Inner: &packet.Spec{Src: podIP6, Dst: peerIP6, Protocol: policy.TCP, SrcPort: 33000, DstPort: 80}}}), true},
		{"RST back", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.RST), true},
	})
}

// TestICMPIsRelatedOnlyToItsOwnFlow: an ICMP error passes as related only
// when it goes to whoever sent the packet it quotes and quotes it whole
// inside its own IP payload; an echo's entry admits the reply to a
// request, not a request the other way; other ICMP messages are judged by
// the rules.
func TestICMPIsRelatedOnlyToItsOwnFlow(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, egressOnlyWeb()); err != nil {
		t.Fatal(err)
	}
	router, stranger, stranger6 := netip.MustParseAddr("10.9.9.1"), netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8::7")
	peersPacket := &packet.Spec{Src: peerIP, Dst: podIP, Protocol: policy.TCP, SrcPort: 80, DstPort: 33000, TCPFlags: packet.ACK, Payload: make([]byte, 1200)}
	peersPacket6 := &packet.Spec{Src: peerIP6, Dst: podIP6, Protocol: policy.TCP, SrcPort: 80, DstPort: 33000, TCPFlags: packet.ACK}
	unreachable := func(src, dst netip.Addr, inner *packet.Spec, malform packet.Malform) []byte {
		proto, typ := policy.ICMP, packet.ICMPv4DestUnreachable
		if src.Is6() {
			proto, typ = policy.ICMPv6, packet.ICMPv6DestUnreachable
		}
		return packet.Build(packet.Spec{Src: src, Dst: dst, Protocol: proto, ICMP: packet.ICMP{Type: typ, Code: 3, Inner: inner}, Malform: malform})
	}
	podsPacket := &packet.Spec{Src: podIP, Dst: peerIP, Protocol: policy.TCP, SrcPort: 33000, DstPort: 80, TCPFlags: packet.ACK}
	echo := func(src, dst netip.Addr, typ uint8, id uint16) []byte {
		return packet.Build(packet.Spec{Src: src, Dst: dst, Protocol: policy.ICMP, ICMP: packet.ICMP{Type: typ, ID: id}})
	}
	runSteps(t, d, ifindex, "", []verdictStep{
		{"SYN out", policy.Egress, tcp(podIP, peerIP, 33000, 80, packet.SYN), true},
		{"IPv6 SYN out", policy.Egress, tcp(podIP6, peerIP6, 33000, 80, packet.SYN), true},
		{"error to the peer about its packet", policy.Egress, unreachable(podIP, peerIP, peersPacket, packet.Malform{}), true},
		{"error to a stranger about the peer's packet", policy.Egress, unreachable(podIP, stranger, peersPacket, packet.Malform{}), false},
		{"IPv6 error to the peer about its packet", policy.Egress, unreachable(podIP6, peerIP6, peersPacket6, packet.Malform{}), true},
		{"IPv6 error to a stranger about the peer's packet", policy.Egress, unreachable(podIP6, stranger6, peersPacket6, packet.Malform{}), false},
		{"error to the pod about its packet", policy.Ingress, unreachable(router, podIP, podsPacket, packet.Malform{}), true},
		{"error to the pod about the peer's packet", policy.Ingress, unreachable(router, podIP, peersPacket, packet.Malform{}), false},
		{"error whose quote lies past its IP packet", policy.Ingress, unreachable(router, podIP, podsPacket, packet.Malform{TotalLength: packet.Int(20 + 8)}), false},
		{"error whose quote stops inside the ports", policy.Ingress, unreachable(router, podIP, podsPacket, packet.Malform{TotalLength: packet.Int(20 + 8 + 20 + 3)}), false},
		{"ping out", policy.Egress, echo(podIP, otherIP, packet.ICMPv4EchoRequest, 77), true},
		{"pong back", policy.Ingress, echo(otherIP, podIP, packet.ICMPv4EchoReply, 77), true},
		{"ping in with the same id", policy.Ingress, echo(otherIP, podIP, packet.ICMPv4EchoRequest, 77), false},
		{"ping out with id 0", policy.Egress, echo(podIP, otherIP, packet.ICMPv4EchoRequest, 0), true},
		{"timestamp request in", policy.Ingress, echo(otherIP, podIP, 13, 0), false},
	})
}

// TestFlowGoesOnAfterAnRST: an RST moves a flow to the short reset
// timeout, but one that goes on afterwards was not reset (an RST out of
// the window, perhaps forged, which the pod's TCP ignores) and keeps its
// timeout.
func TestFlowGoesOnAfterAnRST(t *testing.T) {
	d := newDataplane(t, Config{})
	if err := d.SetFlowCache(false); err != nil {
		t.Fatal(err)
	}
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, egressOnlyWeb()); err != nil {
		t.Fatal(err)
	}
	runSteps(t, d, ifindex, "", []verdictStep{
		{"SYN out", policy.Egress, tcp(podIP, peerIP, 33000, 80, packet.SYN), true},
		{"SYN-ACK", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.SYN|packet.ACK), true},
		{"ACK out", policy.Egress, tcp(podIP, peerIP, 33000, 80, packet.ACK), true},
		{"RST in", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.RST), true},
		{"the connection goes on", policy.Egress, tcp(podIP, peerIP, 33000, 80, packet.ACK|packet.PSH), true},
		{"reply", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.ACK|packet.PSH), true},
	})
	idle := 30 * time.Second // three reset timeouts
	if n, err := d.GarbageCollect(time.Now().Add(idle)); err != nil || n != 0 {
		t.Fatalf("collecting %v ahead removed %d flows (%v), want none", idle, n, err)
	}
	if !runFrame(t, d, policy.Ingress, ifindex, tcp(peerIP, podIP, 80, 33000, packet.ACK)) {
		t.Error("a connection that went on after an RST was cut")
	}
	runSteps(t, d, ifindex, "", []verdictStep{{"RST out", policy.Egress, tcp(podIP, peerIP, 33000, 80, packet.RST), true}})
	if n, err := d.GarbageCollect(time.Now().Add(idle)); err != nil || n != 1 {
		t.Fatalf("collecting %v after a final RST removed %d flows (%v), want 1", idle, n, err)
	}
}

// TestSYNOpensANewConnection: a SYN is judged by the rules of its own
// direction even when a flow of the same addresses and ports is tracked,
// so that a peer cannot reuse the ports of a connection the pod opened to
// open one into the pod; a SYN the rules allow replaces the old flow.
func TestSYNOpensANewConnection(t *testing.T) {
	for _, cache := range []bool{false, true} {
		// One event token: a cached deny is then final, not re-judged
		// by the full path to send its event.
		d := newDataplane(t, Config{EventRate: 1, EventBurst: 1})
		if err := d.SetFlowCache(cache); err != nil {
			t.Fatal(err)
		}
		ifindex := dummyLink(t)
		if _, err := d.SetPolicy(ifindex, egressOnlyWeb()); err != nil {
			t.Fatal(err)
		}
		runSteps(t, d, ifindex, fmt.Sprintf("cache %v: ", cache), []verdictStep{
			{"SYN out", policy.Egress, tcp(podIP, peerIP, 33000, 80, packet.SYN), true},
			{"SYN-ACK back", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.SYN|packet.ACK), true},
			{"FIN out", policy.Egress, tcp(podIP, peerIP, 33000, 80, packet.FIN|packet.ACK), true},
			{"FIN back", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.FIN|packet.ACK), true},
			{"peer SYN on the closed flow's ports", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.SYN), false},
			{"the same SYN again", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.SYN), false},
			{"SYN out again", policy.Egress, tcp(podIP, peerIP, 33000, 80, packet.SYN), true},
			{"SYN-ACK back again", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.SYN|packet.ACK), true},
			{"data back", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.ACK), true},
			{"stray peer SYN inside the connection", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.SYN), false},
			{"data back after it", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.ACK), true},
			{"data back once more", policy.Ingress, tcp(peerIP, podIP, 80, 33000, packet.ACK), true},
		})
	}
}

func TestConntrackIsPerEndpoint(t *testing.T) {
	d := newDataplane(t, Config{})
	a, b := dummyLink(t), dummyLink(t)
	for _, ifindex := range []int{a, b} {
		if _, err := d.SetPolicy(ifindex, egressOnlyWeb()); err != nil {
			t.Fatal(err)
		}
	}
	if !runFrame(t, d, policy.Egress, a, tcp(podIP, peerIP, 33000, 80, packet.SYN)) {
		t.Fatal("SYN out of a dropped")
	}
	// Same addresses and ports, another endpoint: no entry of a applies.
	if runFrame(t, d, policy.Ingress, b, tcp(peerIP, podIP, 80, 33000, packet.SYN|packet.ACK)) {
		t.Fatal("endpoint b accepted a reply to a flow of endpoint a")
	}
}

func TestPolicyChangeCutsOnlyDeniedFlows(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, egressOnlyWeb()); err != nil {
		t.Fatal(err)
	}
	for _, f := range [][]byte{tcp(podIP, peerIP, 33000, 80, packet.SYN), udp(podIP, peerIP, 5353, 53)} {
		if !runFrame(t, d, policy.Egress, ifindex, f) {
			t.Fatal("flow not opened")
		}
	}
	// The new policy keeps DNS and drops TCP 80.
	next := egressOnlyWeb()
	next.Egress.Rules[0].Ports = []policy.PortRange{{Protocol: policy.UDP, Port: 53}}
	rev1, err := d.SetPolicy(ifindex, next)
	if err != nil {
		t.Fatal(err)
	}
	if rev2, err := d.SetPolicy(ifindex, next); err != nil || rev2 != rev1 {
		t.Fatalf("identical policy: revision %d -> %d (%v), want unchanged", rev1, rev2, err)
	}
	if !runFrame(t, d, policy.Ingress, ifindex, udp(peerIP, podIP, 53, 5353)) {
		t.Error("still-allowed DNS flow lost its replies")
	}
	if runFrame(t, d, policy.Ingress, ifindex, tcp(peerIP, podIP, 80, 33000, packet.ACK)) {
		t.Error("revoked TCP flow still receives")
	}
	if runFrame(t, d, policy.Egress, ifindex, tcp(podIP, peerIP, 33000, 80, packet.ACK)) {
		t.Error("revoked TCP flow still sends")
	}
}

func TestLaterFragmentsFollowTheirFirst(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, egressOnlyWeb()); err != nil {
		t.Fatal(err)
	}
	first := packet.Build(packet.Spec{Src: podIP, Dst: peerIP, Protocol: policy.UDP, SrcPort: 5353, DstPort: 53,
		IPv4: packet.IPv4{ID: 4242, MoreFragments: true}, Payload: make([]byte, 64)})
	later := func(id uint16) []byte {
		return packet.Build(packet.Spec{Src: podIP, Dst: peerIP, Protocol: policy.UDP,
			IPv4: packet.IPv4{ID: id, FragmentOffset: 9}, Payload: make([]byte, 64)})
	}
	if runFrame(t, d, policy.Egress, ifindex, later(4242)) {
		t.Fatal("later fragment without its first passed a port rule")
	}
	if !runFrame(t, d, policy.Egress, ifindex, first) {
		t.Fatal("first fragment dropped")
	}
	if !runFrame(t, d, policy.Egress, ifindex, later(4242)) {
		t.Error("later fragment of an allowed first fragment dropped")
	}
	if runFrame(t, d, policy.Egress, ifindex, later(4243)) {
		t.Error("later fragment of another datagram passed")
	}
	// Under a new policy revision, a later fragment is judged port-less again.
	next := egressOnlyWeb()
	next.Egress.Rules[0].ID = 70
	if _, err := d.SetPolicy(ifindex, next); err != nil {
		t.Fatal(err)
	}
	if runFrame(t, d, policy.Egress, ifindex, later(4242)) {
		t.Error("later fragment followed a first fragment of an older policy")
	}
}

func TestGarbageCollectExpiresIdleFlows(t *testing.T) {
	d := newDataplane(t, Config{Timeouts: Timeouts{UDP: time.Minute}})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, egressOnlyWeb()); err != nil {
		t.Fatal(err)
	}
	runFrame(t, d, policy.Egress, ifindex, udp(podIP, peerIP, 5353, 53))
	runFrame(t, d, policy.Egress, ifindex, tcp(podIP, peerIP, 33000, 80, packet.SYN))
	if n, err := d.GarbageCollect(time.Now()); err != nil || n != 0 {
		t.Fatalf("GC now removed %d (%v), want 0", n, err)
	}
	// After 90s the UDP flow (1 min) is idle too long, the SYN (1 min) too.
	if n, err := d.GarbageCollect(time.Now().Add(90 * time.Second)); err != nil || n != 2 {
		t.Fatalf("GC in 90s removed %d (%v), want 2", n, err)
	}
	if runFrame(t, d, policy.Ingress, ifindex, udp(peerIP, podIP, 53, 5353)) {
		t.Error("reply of a collected flow passed")
	}
}

func TestEventsReportNewFlowsAndDenies(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, egressOnlyWeb()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []Event
	done := make(chan error)
	go func() {
		done <- d.ReadEvents(ctx, func(e Event) {
			mu.Lock()
			got = append(got, e)
			mu.Unlock()
		})
	}()
	runFrame(t, d, policy.Egress, ifindex, tcp(podIP, peerIP, 33000, 80, packet.SYN))
	runFrame(t, d, policy.Ingress, ifindex, tcp(peerIP, podIP, 80, 33000, packet.ACK)) // reply: no event
	runFrame(t, d, policy.Ingress, ifindex, tcp(otherIP, podIP, 1234, 22, packet.SYN))
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d events, want 2: %+v", len(got), got)
	}
	newFlow, deny := got[0], got[1]
	if newFlow.Reason != "new-flow" || !newFlow.Allowed || newFlow.RuleID != 7 || newFlow.Direction != policy.Egress ||
		newFlow.Src != podIP || newFlow.Dst != peerIP || newFlow.DstPort != 80 || newFlow.Ifindex != ifindex || newFlow.Protocol != policy.TCP {
		t.Errorf("new flow event %+v", newFlow)
	}
	if deny.Reason != "deny" || deny.Allowed || deny.Direction != policy.Ingress || deny.Src != otherIP || deny.DstPort != 22 {
		t.Errorf("deny event %+v", deny)
	}
	if age := time.Since(newFlow.Time); age < 0 || age > time.Minute {
		t.Errorf("event time %v is %v away from now", newFlow.Time, age)
	}
}

func TestEventFloodIsRateLimited(t *testing.T) {
	d := newDataplane(t, Config{EventRate: 10, EventBurst: 20})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, egressOnlyWeb()); err != nil {
		t.Fatal(err)
	}
	frame := tcp(otherIP, podIP, 1234, 22, packet.SYN)
	for range 500 {
		runFrame(t, d, policy.Ingress, ifindex, frame)
	}
	suppressed, err := d.SuppressedEvents()
	if err != nil {
		t.Fatal(err)
	}
	// 500 denies against a burst of 20 per CPU (2 CPUs at most here, with a
	// few tokens refilled while the loop runs).
	if suppressed < 400 {
		t.Errorf("suppressed %d of 500 events, want at least 400", suppressed)
	}
}

func TestInvalidPolicyFailsClosed(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	bad := webPolicy()
	bad.Ingress.Rules[0].Ports[0].EndPort = 1 // 80-1
	if _, err := d.SetPolicy(ifindex, bad); err == nil {
		t.Fatal("SetPolicy accepted a reversed port range")
	}
	if runFrame(t, d, policy.Ingress, ifindex, tcp(peerIP, podIP, 40000, 80, packet.SYN)) {
		t.Error("endpoint with a rejected first policy is open")
	}
	if _, err := d.SetPolicy(ifindex, webPolicy()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetPolicy(ifindex, bad); err == nil {
		t.Fatal("SetPolicy accepted a reversed port range")
	}
	if !runFrame(t, d, policy.Ingress, ifindex, tcp(peerIP, podIP, 40000, 80, packet.SYN)) {
		t.Error("rejected update did not keep the previous policy")
	}
}

// TestPolicyTooLargeToCompileFailsClosed: rules whose port tables would
// outgrow port_rules are refused while compiling, not after the work.
func TestPolicyTooLargeToCompileFailsClosed(t *testing.T) {
	d := newDataplane(t, Config{PortRuleCapacity: 4096})
	ifindex := dummyLink(t)
	big := &policy.Endpoint{Ingress: policy.Direction{Isolated: true}}
	for i := range 150 {
		rule := policy.Rule{ID: uint32(i + 1), CIDR: netip.MustParsePrefix("10.0.0.0/8"),
			Except: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), 32)}}
		for p := range 64 {
			rule.Ports = append(rule.Ports, policy.PortRange{Protocol: policy.TCP, Port: uint16(1000 + i*64 + p)})
		}
		big.Ingress.Rules = append(big.Ingress.Rules, rule)
	}
	if _, err := d.SetPolicy(ifindex, big); !errors.Is(err, ErrCapacity) {
		t.Fatalf("SetPolicy: %v, want ErrCapacity", err)
	}
	if runFrame(t, d, policy.Ingress, ifindex, tcp(netip.MustParseAddr("10.0.5.9"), podIP, 40000, 1000+5*64, packet.SYN)) {
		t.Error("endpoint open after a policy too large to compile")
	}
}

func TestCapacityExhaustionFailsClosed(t *testing.T) {
	d := newDataplane(t, Config{RuleCapacity: 64})
	ifindex := dummyLink(t)
	big := &policy.Endpoint{Ingress: policy.Direction{Isolated: true}}
	for i := range 100 {
		big.Ingress.Rules = append(big.Ingress.Rules, policy.Rule{ID: uint32(i),
			CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}), 32)})
	}
	_, err := d.SetPolicy(ifindex, big)
	if !errors.Is(err, ErrCapacity) {
		t.Fatalf("SetPolicy of 100 rules into 64: %v, want ErrCapacity", err)
	}
	if runFrame(t, d, policy.Ingress, ifindex, tcp(peerIP, podIP, 40000, 80, packet.SYN)) {
		t.Error("endpoint open after capacity exhaustion")
	}
	if _, err := d.SetPolicy(ifindex, webPolicy()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetPolicy(ifindex, big); !errors.Is(err, ErrCapacity) {
		t.Fatalf("second SetPolicy: %v, want ErrCapacity", err)
	}
	if !runFrame(t, d, policy.Ingress, ifindex, tcp(peerIP, podIP, 40000, 80, packet.SYN)) {
		t.Error("previous policy lost after capacity exhaustion")
	}
	occ, err := d.Occupancy()
	if err != nil {
		t.Fatal(err)
	}
	if u := occ["cidr_rules"]; u.Used != 4 || u.Capacity != 64 { // webPolicy: 2 CIDRs in, a CIDR and its except out
		t.Errorf("cidr_rules occupancy %+v, want 4 of 64", u)
	}
}

// TestRestartForgetsFlowsOfUnfreedSlots: a process killed between
// removing an endpoint and freeing its slot leaves the slot's flows; the
// next one forgets them, so that the slot's next endpoint, which may get
// the same revision, inherits none, while live endpoints keep theirs.
func TestRestartForgetsFlowsOfUnfreedSlots(t *testing.T) {
	d := newDataplane(t, Config{})
	a, b, c := dummyLink(t), dummyLink(t), dummyLink(t)
	open := &policy.Endpoint{}
	closed := &policy.Endpoint{Ingress: policy.Direction{Isolated: true}, Egress: policy.Direction{Isolated: true}}
	for _, ifindex := range []int{a, b} {
		if _, err := d.SetPolicy(ifindex, open); err != nil {
			t.Fatal(err)
		}
		if !runFrame(t, d, policy.Ingress, ifindex, tcp(peerIP, podIP, 40000, 22, packet.SYN)) {
			t.Fatal("open endpoint dropped a SYN")
		}
	}
	removed := d.endpoints[b].value.Id
	d.stopFreeing() // killed: nothing retired gets freed
	if err := d.RemovePolicy(b); err != nil {
		t.Fatal(err)
	}
	if err := d.closeObjects(); err != nil {
		t.Fatal(err)
	}
	d.closed = true
	d, err := Open(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	slots := map[uint32]int{}
	var k palisadeCtKey4
	var v palisadeCtEntry
	for it := d.objs.Conntrack4.Iterate(); it.Next(&k, &v); {
		slots[k.endpoint()]++
	}
	if slots[removed] != 0 || slots[d.endpoints[a].value.Id] != 1 {
		t.Errorf("flows per endpoint slot after the restart %v: want none of removed slot %d, one of live endpoint a", slots, removed)
	}
	if _, err := d.SetPolicy(c, closed); err != nil {
		t.Fatal(err)
	}
	t.Logf("removed endpoint's slot %d; new endpoint's slot %d", removed, d.endpoints[c].value.Id)
	if runFrame(t, d, policy.Ingress, c, tcp(peerIP, podIP, 40000, 22, packet.ACK)) {
		t.Error("a closed endpoint passed a removed endpoint's flow")
	}
	if !runFrame(t, d, policy.Ingress, a, tcp(peerIP, podIP, 40000, 22, packet.ACK)) {
		t.Error("a live endpoint lost its flow in the restart")
	}
}

func TestReopenAdoptsPinnedState(t *testing.T) {
	ensureBPFFS(t)
	cfg := Config{PinPath: bpffs + "/" + randomName("palisade-test-"), ConntrackSize: 4096, RuleCapacity: 4096}
	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			d.Purge()
		}
	})
	ifindex := dummyLink(t)
	if err := d.Attach(ifindex); err != nil {
		t.Fatal(err)
	}
	rev, err := d.SetPolicy(ifindex, webPolicy())
	if err != nil {
		t.Fatal(err)
	}
	runFrame(t, d, policy.Egress, ifindex, udp(podIP, peerIP, 5353, 53))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	// While no process holds the programs, the pinned links keep enforcing.
	d, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	closed = false
	if rev2, err := d.SetPolicy(ifindex, webPolicy()); err != nil || rev2 != rev {
		t.Errorf("same policy after restart: revision %d (%v), want %d kept", rev2, err, rev)
	}
	states, err := d.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 1 || !states[0].Attached || states[0].RuleEntries != 4 {
		t.Errorf("endpoints after restart: %+v", states)
	}
	if !runFrame(t, d, policy.Ingress, ifindex, udp(peerIP, podIP, 53, 5353)) {
		t.Error("flow tracked before the restart lost its reply")
	}
	// The pinned links now run this process's programs.
	for _, h := range hooks {
		l, err := link.LoadPinnedLink(d.linkPin(ifindex, h.name), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		progInfo, err := d.programOf(h).Info()
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := progInfo.ID(); info.Program != id {
			t.Errorf("%s link runs program %d, want the new %d", h.name, info.Program, id)
		}
	}
	if runFrame(t, d, policy.Ingress, ifindex, tcp(otherIP, podIP, 1, 80, packet.SYN)) {
		t.Error("policy not enforced after restart")
	}
}

// TestGarbageCollectKeepsFlowsOfASlotReusedDuringItsWalk: a flow of an
// endpoint gone when the walk began is not deleted once its slot went to an
// endpoint that made the same flow meanwhile (the same pod, added again).
func TestGarbageCollectKeepsFlowsOfASlotReusedDuringItsWalk(t *testing.T) {
	d := newDataplane(t, Config{MaxEndpoints: 1})
	ifindex := dummyLink(t)
	pol := &policy.Endpoint{
		Ingress: policy.Direction{Isolated: true},
		Egress:  policy.Direction{Isolated: true, Rules: []policy.Rule{{ID: 1, CIDR: netip.PrefixFrom(peerIP, 32)}}},
	}
	syn := tcp(podIP, peerIP, 33000, 80, packet.SYN)
	reply := tcp(peerIP, podIP, 80, 33000, packet.SYN|packet.ACK)
	defer func() { testHookAfterGCWalk = nil }()
	for attempt := 0; ; attempt++ {
		if _, err := d.SetPolicy(ifindex, pol); err != nil {
			t.Fatal(err)
		}
		if !runFrame(t, d, policy.Egress, ifindex, syn) {
			t.Fatal("allowed SYN denied")
		}
		// Retired: its flows stay until the slot is freed.
		if err := d.RemovePolicy(ifindex); err != nil {
			t.Fatal(err)
		}
		found := 0
		testHookAfterGCWalk = func(gone int) {
			found = gone
			flushNow(t, d) // the slot is free, its flows forgotten
			if _, err := d.SetPolicy(ifindex, pol); err != nil {
				t.Error(err)
			}
			if !runFrame(t, d, policy.Egress, ifindex, syn) {
				t.Error("allowed SYN denied once the slot came back")
			}
		}
		n, err := d.GarbageCollect(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if found == 0 {
			// The background freeing came first: the walk found nothing.
			if attempt == 20 {
				t.Fatal("the walk never found the flow of the removed endpoint")
			}
			if err := d.RemovePolicy(ifindex); err != nil {
				t.Fatal(err)
			}
			flushNow(t, d)
			continue
		}
		if !runFrame(t, d, policy.Ingress, ifindex, reply) {
			t.Errorf("GC deleted %d entries, among them the flow made after its walk", n)
		}
		return
	}
}
