package podlink

import (
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/palisade-net/palisade/test/podnet"
)

func TestVPCCNINaming(t *testing.T) {
	a, b := VPCCNIName("default", "web-1"), VPCCNIName("default", "web-2")
	if len(a) != 14 || a == b || a != VPCCNIName("default", "web-1") {
		t.Fatalf("names %q %q", a, b)
	}
	for name, want := range map[string]bool{
		a: true, "vlan7": true, "vlan1234": true,
		"eth0": false, "eni": false, "eniXYZ0123456a": false, "vlanx": false, "vlan": false, "lo": false,
	} {
		if got := HasVPCCNIName(name); got != want {
			t.Errorf("HasVPCCNIName(%q) = %v", name, got)
		}
	}
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
}

func TestForIPFindsVethByRoute(t *testing.T) {
	needRoot(t)
	network, err := podnet.New(podnet.Config{Prefix: "plkt", IPv4Range: netip.MustParsePrefix("100.97.4.0/24"), IPv6Range: netip.MustParsePrefix("fd00:97:4::/112")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := network.Close(); err != nil {
			t.Error(err)
		}
	})
	pod, err := network.AddPod("ns/a", netip.MustParseAddr("100.97.4.10"), netip.MustParseAddr("fd00:97:4::10"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []netip.Addr{pod.IPv4, pod.IPv6} {
		link, err := ForIP(ip)
		if err != nil {
			t.Fatalf("ForIP(%s): %v", ip, err)
		}
		if link.Attrs().Name != pod.HostVeth || link.Type() != "veth" {
			t.Fatalf("ForIP(%s) = %s (%s), want veth %s", ip, link.Attrs().Name, link.Type(), pod.HostVeth)
		}
	}
	// An address of the range no pod holds has an unreachable route.
	if _, err := ForIP(netip.MustParseAddr("100.97.4.99")); err == nil {
		t.Fatal("ForIP of an address without a pod succeeded")
	}
	if _, err := ForIP(netip.MustParseAddr("127.0.0.1")); !errors.Is(err, ErrNotPodLink) {
		t.Fatalf("ForIP(127.0.0.1) = %v, want ErrNotPodLink", err)
	}
	link, err := ForIPs([]netip.Addr{netip.MustParseAddr("127.0.0.1"), pod.IPv4})
	if err != nil || link.Attrs().Name != pod.HostVeth {
		t.Fatalf("ForIPs = %v, %v", link, err)
	}
	if _, err := ForIPs(nil); err == nil {
		t.Fatal("ForIPs(nil) succeeded")
	}
}
