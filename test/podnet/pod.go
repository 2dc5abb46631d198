package podnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Pod is one network namespace wired to the host like a pod.
type Pod struct {
	Name string
	// IPv4 is always valid; IPv6 only when the network has an IPv6 range.
	IPv4, IPv6 netip.Addr
	// HostVeth is the host-side interface name, where a node agent attaches.
	HostVeth string
	// NetNSName names the namespace under /var/run/netns.
	NetNSName string

	ns     netns.NsHandle
	host   *netlink.Handle
	hostNS netns.NsHandle

	mu      sync.Mutex
	closers []io.Closer
}

// AddPod creates a pod named name (e.g. "x/a") with the given addresses.
// ipv6 must be the zero Addr unless the network has an IPv6 range.
func (n *Network) AddPod(name string, ipv4, ipv6 netip.Addr) (*Pod, error) {
	if !ipv4.Is4() || !n.config.IPv4Range.Contains(ipv4) {
		return nil, fmt.Errorf("podnet: pod %s: IPv4 %v is not inside %v", name, ipv4, n.config.IPv4Range)
	}
	if ipv6.IsValid() && (!n.config.IPv6Range.IsValid() || !n.config.IPv6Range.Contains(ipv6)) {
		return nil, fmt.Errorf("podnet: pod %s: IPv6 %v is not inside the IPv6 range %v", name, ipv6, n.config.IPv6Range)
	}
	n.mu.Lock()
	for _, other := range n.pods {
		if other.Name == name || other.IPv4 == ipv4 || (ipv6.IsValid() && other.IPv6 == ipv6) {
			n.mu.Unlock()
			return nil, fmt.Errorf("podnet: pod %s (%v %v) clashes with pod %s", name, ipv4, ipv6, other.Name)
		}
	}
	index := len(n.pods)
	pod := &Pod{
		Name:      name,
		IPv4:      ipv4,
		IPv6:      ipv6,
		HostVeth:  n.config.Prefix + strconv.Itoa(index),
		NetNSName: n.config.Prefix + "-" + strings.ReplaceAll(name, "/", "-"),
		ns:        netns.None(),
		host:      n.host,
		hostNS:    n.hostNS,
	}
	n.pods = append(n.pods, pod)
	n.mu.Unlock()

	if err := pod.wire(); err != nil {
		return nil, fmt.Errorf("podnet: pod %s: %w", name, err)
	}
	return pod, nil
}

// podMAC derives a locally administered MAC from the pod's IPv4 address.
func podMAC(ipv4 netip.Addr) net.HardwareAddr {
	b := ipv4.As4()
	return net.HardwareAddr{0x02, 0x50, b[0], b[1], b[2], b[3]}
}

func (p *Pod) wire() error {
	ns, err := newNamedNetNS(p.NetNSName)
	if err != nil {
		return err
	}
	p.ns = ns
	// No duplicate address detection on the pod's interfaces: until it
	// ends, their IPv6 link-local addresses are tentative and the first
	// packets of a new pod may be lost.
	if p.IPv6.IsValid() {
		if err := inNetNS(ns, func() error { return writeSysctl("/proc/sys/net/ipv6/conf/default/accept_dad", "0") }); err != nil {
			return err
		}
	}
	mac := podMAC(p.IPv4)
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: p.HostVeth, HardwareAddr: hostVethMAC},
		PeerName:         "eth0",
		PeerHardwareAddr: mac,
		PeerNamespace:    netlink.NsFd(int(ns)),
	}
	if err := p.host.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", p.HostVeth, err)
	}
	host, err := p.host.LinkByName(p.HostVeth)
	if err != nil {
		return fmt.Errorf("find %s: %w", p.HostVeth, err)
	}
	if p.IPv6.IsValid() {
		if err := inNetNS(p.hostNS, func() error {
			return writeSysctl("/proc/sys/net/ipv6/conf/"+p.HostVeth+"/accept_dad", "0")
		}); err != nil {
			return err
		}
	}
	if err := p.host.LinkSetUp(host); err != nil {
		return fmt.Errorf("set %s up: %w", p.HostVeth, err)
	}
	for _, addr := range p.addrs() {
		route := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: addrToIPNet(addr), Scope: netlink.SCOPE_LINK}
		if err := p.host.RouteReplace(route); err != nil {
			return fmt.Errorf("host route %v dev %s: %w", addr, p.HostVeth, err)
		}
		neigh := &netlink.Neigh{LinkIndex: host.Attrs().Index, IP: addr.AsSlice(), HardwareAddr: mac, State: netlink.NUD_PERMANENT, Family: family(addr)}
		if err := p.host.NeighSet(neigh); err != nil {
			return fmt.Errorf("host neighbour %v dev %s: %w", addr, p.HostVeth, err)
		}
	}
	if err := p.wireInside(); err != nil {
		return err
	}
	return p.waitOperational()
}

// waitOperational waits until the kernel has activated both ends of the
// veth (link watch runs up to a second after "up"); before that the links
// drop every packet.
func (p *Pod) waitOperational() error {
	handle, err := netlink.NewHandleAt(p.ns)
	if err != nil {
		return fmt.Errorf("netlink handle in netns: %w", err)
	}
	defer handle.Close()
	if err := waitOperational(p.host, p.HostVeth, handle, "eth0"); err != nil {
		return err
	}
	if p.IPv6.IsValid() {
		return waitAddressUsable(handle, "eth0", p.IPv6)
	}
	return nil
}

// waitAddressUsable waits until addr on link is no longer tentative: the
// kernel finishes (even skipped) duplicate address detection only once
// the link is operational, and drops packets to a tentative address.
func waitAddressUsable(h *netlink.Handle, link string, addr netip.Addr) error {
	l, err := h.LinkByName(link)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		addrs, err := h.AddrList(l, family(addr))
		if err != nil {
			return err
		}
		usable := false
		for _, a := range addrs {
			usable = usable || a.IP.Equal(addr.AsSlice()) && a.Flags&unix.IFA_F_TENTATIVE == 0
		}
		if usable {
			// The local route, which makes packets to the address
			// delivered, appears after the flag clears.
			filter := &netlink.Route{Table: unix.RT_TABLE_LOCAL, Dst: addrToIPNet(addr)}
			routes, err := h.RouteListFiltered(family(addr), filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
			if err == nil && len(routes) > 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("address %v on %s still tentative after 5s", addr, link)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitOperational(outside *netlink.Handle, outsideName string, inside *netlink.Handle, insideName string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, errA := outside.LinkByName(outsideName)
		b, errB := inside.LinkByName(insideName)
		if errA == nil && errB == nil && a.Attrs().OperState == netlink.OperUp && b.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("veth %s did not become operational within 5s", outsideName)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *Pod) wireInside() error {
	handle, err := netlink.NewHandleAt(p.ns)
	if err != nil {
		return fmt.Errorf("netlink handle in netns: %w", err)
	}
	defer handle.Close()
	lo, err := handle.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := handle.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	eth0, err := handle.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0: %w", err)
	}
	if err := handle.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("set eth0 up: %w", err)
	}
	index := eth0.Attrs().Index
	for _, addr := range p.addrs() {
		a := &netlink.Addr{IPNet: addrToIPNet(addr)}
		if addr.Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := handle.AddrAdd(eth0, a); err != nil {
			return fmt.Errorf("add %v to eth0: %w", addr, err)
		}
		gateway := gatewayIPv4
		if addr.Is6() {
			gateway = gatewayIPv6
		}
		neigh := &netlink.Neigh{LinkIndex: index, IP: gateway, HardwareAddr: hostVethMAC, State: netlink.NUD_PERMANENT, Family: family(addr)}
		if err := handle.NeighSet(neigh); err != nil {
			return fmt.Errorf("gateway neighbour %v: %w", gateway, err)
		}
		if addr.Is4() {
			link := &netlink.Route{LinkIndex: index, Dst: &net.IPNet{IP: gateway, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}
			if err := handle.RouteReplace(link); err != nil {
				return fmt.Errorf("route to gateway %v: %w", gateway, err)
			}
		}
		defaultRoute := &netlink.Route{LinkIndex: index, Gw: gateway}
		if err := handle.RouteReplace(defaultRoute); err != nil {
			return fmt.Errorf("default route via %v: %w", gateway, err)
		}
	}
	return nil
}

func writeSysctl(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func (p *Pod) addrs() []netip.Addr {
	if p.IPv6.IsValid() {
		return []netip.Addr{p.IPv4, p.IPv6}
	}
	return []netip.Addr{p.IPv4}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// InNetNS runs fn on a thread inside the pod's network namespace.
func (p *Pod) InNetNS(fn func() error) error {
	return inNetNS(p.ns, fn)
}

func (p *Pod) delete() error {
	var errs []error
	p.mu.Lock()
	closers := p.closers
	p.closers = nil
	p.mu.Unlock()
	for _, c := range closers {
		c.Close()
	}
	if link, err := p.host.LinkByName(p.HostVeth); err == nil {
		if err := p.host.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", p.HostVeth, err))
		}
	}
	if p.ns.IsOpen() {
		p.ns.Close()
	}
	if err := deleteNamedNetNS(p.NetNSName); err != nil {
		errs = append(errs, fmt.Errorf("delete netns %s: %w", p.NetNSName, err))
	}
	return errors.Join(errs...)
}
