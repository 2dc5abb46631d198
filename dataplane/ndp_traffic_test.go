package dataplane

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/palisade-net/palisade/policy"
)

// TestIsolatedIPv6PodsResolveNeighbours is issue #2 with real traffic: two
// IPv6 pods whose policies allow one TCP port and nothing else find each
// other's link-layer addresses (neighbour discovery, rule 6) and connect.
func TestIsolatedIPv6PodsResolveNeighbours(t *testing.T) {
	d := newDataplane(t, Config{})
	pn := newPodNetwork(t, 2)
	client, server := pn.pods[0], pn.pods[1]
	clientIP, serverIP := netip.MustParseAddr("fd00:213::1"), netip.MustParseAddr("fd00:213::2")
	for _, pod := range []struct {
		p  testPod
		ip netip.Addr
	}{{client, clientIP}, {server, serverIP}} {
		inNetns(t, pod.p.ns, func() {
			eth, err := netlink.LinkByName("eth0")
			must(t, err)
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: pod.ip.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
			must(t, netlink.AddrAdd(eth, addr))
		})
	}
	inNetns(t, pn.host, func() {
		for _, p := range pn.pods {
			must(t, d.Attach(p.hostIfindex))
		}
		_, err := d.SetPolicy(server.hostIfindex, &policy.Endpoint{
			Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{{ID: 1, CIDR: hostPrefix(clientIP),
				Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 8080}}}}},
			Egress: policy.Direction{Isolated: true}, // replies only
		})
		must(t, err)
		_, err = d.SetPolicy(client.hostIfindex, &policy.Endpoint{
			Ingress: policy.Direction{Isolated: true},
			Egress: policy.Direction{Isolated: true, Rules: []policy.Rule{{ID: 2, CIDR: hostPrefix(serverIP),
				Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 8080}, {Protocol: policy.TCP, Port: 8081}}}}},
		})
		must(t, err)
	})
	var listeners []net.Listener
	inNetns(t, server.ns, func() {
		for _, port := range []string{"8080", "8081"} {
			l, err := net.Listen("tcp6", net.JoinHostPort(serverIP.String(), port))
			must(t, err)
			listeners = append(listeners, l)
			go echoTCP(l)
		}
	})
	t.Cleanup(func() {
		for _, l := range listeners {
			l.Close()
		}
	})
	dial := func(port string, timeout time.Duration) error {
		var err error
		inNetns(t, client.ns, func() {
			var c net.Conn
			c, err = net.DialTimeout("tcp6", net.JoinHostPort(serverIP.String(), port), timeout)
			if err == nil {
				err = roundTrip(c, []byte("over IPv6"))
				c.Close()
			}
		})
		return err
	}
	if err := dial("8080", 3*time.Second); err != nil {
		t.Fatalf("allowed port over IPv6: %v", err)
	}
	if dial("8081", time.Second) == nil {
		t.Error("port the server's policy does not allow is reachable")
	}
	inNetns(t, client.ns, func() {
		eth, err := netlink.LinkByName("eth0")
		must(t, err)
		neighbours, err := netlink.NeighList(eth.Attrs().Index, netlink.FAMILY_V6)
		must(t, err)
		for _, n := range neighbours {
			if n.IP.Equal(serverIP.AsSlice()) && len(n.HardwareAddr) == 6 && n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE) != 0 {
				return
			}
		}
		t.Errorf("client has no resolved neighbour entry for %v: %+v", serverIP, neighbours)
	})
}
