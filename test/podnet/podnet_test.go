package podnet

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/palisade-net/palisade/policy"
)

const testPrefix = "ppnt"

func newTestNetwork(t *testing.T, withIPv6 bool) *Network {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("podnet creates network namespaces and routes: run as root")
	}
	config := Config{Prefix: testPrefix, IPv4Range: netip.MustParsePrefix("10.244.160.0/24")}
	if withIPv6 {
		config.IPv6Range = netip.MustParsePrefix("fd00:10:244:a0::/64")
	}
	network, err := New(config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := network.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return network
}

func addServingPods(t *testing.T, network *Network, names []string, withIPv6 bool) []*Pod {
	t.Helper()
	var pods []*Pod
	for i, name := range names {
		ipv4 := netip.AddrFrom4([4]byte{10, 244, 160, byte(10 + i)})
		var ipv6 netip.Addr
		if withIPv6 {
			ipv6 = netip.MustParseAddr("fd00:10:244:a0::" + string(rune('a'+i)))
		}
		pod, err := network.AddPod(name, ipv4, ipv6)
		if err != nil {
			t.Fatal(err)
		}
		if err := pod.Serve([]uint16{80, 81}, []policy.Protocol{policy.TCP, policy.UDP}); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, pod)
	}
	return pods
}

func allConnections(pods []*Pod, withIPv6 bool) []Connection {
	var connections []Connection
	for _, from := range pods {
		for _, to := range pods {
			for _, proto := range []policy.Protocol{policy.TCP, policy.UDP} {
				for _, port := range []uint16{80, 81} {
					connections = append(connections, Connection{From: from, To: to, Port: port, Protocol: proto})
					if withIPv6 {
						connections = append(connections, Connection{From: from, To: to, Port: port, Protocol: proto, IPv6: true})
					}
				}
			}
		}
	}
	return connections
}

func TestEveryPodReachesEveryPodOnBothFamilies(t *testing.T) {
	network := newTestNetwork(t, true)
	pods := addServingPods(t, network, []string{"x/a", "x/b", "y/a", "z/c"}, true)
	connections := allConnections(pods, true)

	start := time.Now()
	connected := ProbeAll(context.Background(), connections, time.Second, 16)
	elapsed := time.Since(start)
	for i, ok := range connected {
		if !ok {
			t.Errorf("%s (%v): no answer", connections[i], connections[i].Target())
		}
	}
	t.Logf("%d probes (TCP+UDP, ports 80/81, IPv4+IPv6) in %v", len(connections), elapsed)
}

func TestProbeAnswerNamesTheServer(t *testing.T) {
	network := newTestNetwork(t, false)
	pods := addServingPods(t, network, []string{"x/a", "y/b"}, false)
	for _, proto := range []policy.Protocol{policy.TCP, policy.UDP} {
		answer, err := pods[0].Probe(proto, netip.AddrPortFrom(pods[1].IPv4, 81), time.Second)
		if err != nil {
			t.Fatalf("%s probe: %v", ProtocolName(proto), err)
		}
		if answer != "y/b" {
			t.Errorf("%s probe answered %q, want y/b", ProtocolName(proto), answer)
		}
	}
}

func TestProbesFailWhereNothingAnswers(t *testing.T) {
	network := newTestNetwork(t, false)
	pods := addServingPods(t, network, []string{"x/a", "x/b"}, false)
	unassigned := netip.MustParseAddr("10.244.160.200")
	cases := []struct {
		name  string
		proto policy.Protocol
		to    netip.AddrPort
	}{
		{"unassigned address TCP", policy.TCP, netip.AddrPortFrom(unassigned, 80)},
		{"unassigned address UDP", policy.UDP, netip.AddrPortFrom(unassigned, 80)},
		{"port without server TCP", policy.TCP, netip.AddrPortFrom(pods[1].IPv4, 82)},
		{"port without server UDP", policy.UDP, netip.AddrPortFrom(pods[1].IPv4, 82)},
	}
	for _, c := range cases {
		if answer, err := pods[0].Probe(c.proto, c.to, 300*time.Millisecond); err == nil {
			t.Errorf("%s: answered %q, want failure", c.name, answer)
		}
	}
}

// A pod whose host link is down is unreachable: the probes observe loss of
// connectivity, which the end-to-end tests rely on to see denials.
func TestProbesSeeALinkGoingDown(t *testing.T) {
	network := newTestNetwork(t, false)
	pods := addServingPods(t, network, []string{"x/a", "x/b", "x/c"}, false)
	link, err := netlink.LinkByName(pods[2].HostVeth)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	connections := []Connection{
		{From: pods[0], To: pods[1], Port: 80, Protocol: policy.TCP},
		{From: pods[0], To: pods[2], Port: 80, Protocol: policy.TCP},
		{From: pods[0], To: pods[2], Port: 80, Protocol: policy.UDP},
		{From: pods[2], To: pods[1], Port: 81, Protocol: policy.UDP},
	}
	got := ProbeAll(context.Background(), connections, 300*time.Millisecond, 4)
	want := []bool{true, false, false, false}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s: connected=%v, want %v", connections[i], got[i], want[i])
		}
	}
}

func TestCloseRemovesNamespacesLinksAndRoutes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("run as root")
	}
	network, err := New(Config{Prefix: testPrefix, IPv4Range: netip.MustParsePrefix("10.244.160.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	addServingPods(t, network, []string{"x/a", "x/b"}, false)
	if err := network.Close(); err != nil {
		t.Fatal(err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, link := range links {
		if strings.HasPrefix(link.Attrs().Name, testPrefix) {
			t.Errorf("link %s left behind", link.Attrs().Name)
		}
	}
	entries, _ := os.ReadDir(netnsDirectory)
	for _, entry := range entries {
		if strings.HasPrefix(entry.Name(), testPrefix) {
			t.Errorf("netns %s left behind", entry.Name())
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: prefixToIPNet(netip.MustParsePrefix("10.244.160.0/24"))}, netlink.RT_FILTER_DST)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 0 {
		t.Errorf("routes left behind: %v", routes)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	bad := []Config{
		{Prefix: "", IPv4Range: netip.MustParsePrefix("10.244.160.0/24")},
		{Prefix: "much-too-long", IPv4Range: netip.MustParsePrefix("10.244.160.0/24")},
		{Prefix: "ok", IPv4Range: netip.MustParsePrefix("fd00::/64")},
		{Prefix: "ok"},
		{Prefix: "ok", IPv4Range: netip.MustParsePrefix("10.244.160.0/24"), IPv6Range: netip.MustParsePrefix("10.0.0.0/8")},
	}
	for _, config := range bad {
		if network, err := New(config); err == nil {
			network.Close()
			t.Errorf("New(%+v) succeeded, want an error", config)
		}
	}
}

func TestPodsOnTwoNodesReachEachOther(t *testing.T) {
	first := newTestNetwork(t, true)
	node, err := NewNode("ppnn", "node2",
		[]netip.Prefix{netip.MustParsePrefix("10.244.161.0/24"), netip.MustParsePrefix("fd00:10:244:a1::/64")},
		[]netip.Prefix{netip.MustParsePrefix("10.244.160.0/24"), netip.MustParsePrefix("fd00:10:244:a0::/64")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := node.Close(); err != nil {
			t.Errorf("close node: %v", err)
		}
	})
	second, err := New(Config{Prefix: "ppnu", IPv4Range: netip.MustParsePrefix("10.244.161.0/24"), IPv6Range: netip.MustParsePrefix("fd00:10:244:a1::/64"), HostNetNSPath: node.NetNSPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := second.Close(); err != nil {
			t.Errorf("close second network: %v", err)
		}
	})
	pods := addServingPods(t, first, []string{"x/a", "x/b"}, true)
	for i, name := range []string{"y/a", "y/b"} {
		pod, err := second.AddPod(name, netip.AddrFrom4([4]byte{10, 244, 161, byte(10 + i)}), netip.MustParseAddr("fd00:10:244:a1::"+string(rune('a'+i))))
		if err != nil {
			t.Fatal(err)
		}
		if err := pod.Serve([]uint16{80, 81}, []policy.Protocol{policy.TCP, policy.UDP}); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, pod)
	}
	connections := allConnections(pods, true)
	for i, ok := range ProbeAll(context.Background(), connections, time.Second, 16) {
		if !ok {
			t.Errorf("%s (%v): no answer", connections[i], connections[i].Target())
		}
	}
	// The second node routes only the first node's pod range: anything else
	// is unreachable from its pods.
	if _, err := pods[2].Probe(policy.UDP, netip.MustParseAddrPort("192.0.2.1:80"), 200*time.Millisecond); err == nil {
		t.Error("a pod of the second node reached an address outside the pod ranges")
	}
}

// Forwarding stays on while any network needs it, and the last one to
// close restores what was there before the first.
func TestForwardingIsSharedBetweenNetworks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("run as root")
	}
	read := func() string {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	first, err := New(Config{Prefix: "ppfa", IPv4Range: netip.MustParsePrefix("10.244.162.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	second, err := New(Config{Prefix: "ppfb", IPv4Range: netip.MustParsePrefix("10.244.163.0/24")})
	if err != nil {
		first.Close()
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "1" {
		t.Errorf("forwarding %s after one of two networks closed, want 1", got)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(forwardingState + "/saved-0"); err == nil {
		// Another process still uses forwarding: nothing to restore yet.
		t.Log("forwarding still used by another process; restore not checked")
	}
}
