package podnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Node is a network namespace playing a second machine. A veth pair links
// it to the caller's namespace (the first node); each side routes the
// other's pod range over it, and nothing else, so pod traffic between
// nodes is forwarded like between machines and cannot leave either.
type Node struct {
	Name string
	// NetNSPath is the namespace to give podnet.Config.HostNetNSPath.
	NetNSPath string
	// Link is the name of the link's end in the caller's namespace.
	Link string

	nsName string
	ns     netns.NsHandle
}

var (
	nodeLinkMACHostSide  = net.HardwareAddr{0x02, 0x4e, 0x00, 0x00, 0x00, 0x01}
	nodeLinkMACNodeSide  = net.HardwareAddr{0x02, 0x4e, 0x00, 0x00, 0x00, 0x02}
	nodeLinkHostSideIPv4 = net.IPv4(169, 254, 2, 1)
	nodeLinkNodeSideIPv4 = net.IPv4(169, 254, 2, 2)
	nodeLinkHostSideIPv6 = net.ParseIP("fe80::2:1")
	nodeLinkNodeSideIPv6 = net.ParseIP("fe80::2:2")
)

// NewNode creates node name (its namespace and link are named
// "<prefix>-<name>" and "<prefix>n"), routing nodeRanges to it and
// hostRanges back (IPv4 and IPv6 prefixes). Leftovers of the same names are removed first. Give the
// node a prefix no Network uses: a Network sweeps links by its prefix.
func NewNode(prefix, name string, nodeRanges, hostRanges []netip.Prefix) (*Node, error) {
	if prefix == "" || len(prefix) > 8 {
		return nil, fmt.Errorf("podnet: node prefix %q must be 1 to 8 characters", prefix)
	}
	nsName := prefix + "-" + name
	n := &Node{Name: name, Link: prefix + "n", NetNSPath: netnsDirectory + "/" + nsName, nsName: nsName, ns: netns.None()}
	if err := SweepLeftovers(n.Link); err != nil {
		return nil, err
	}
	if err := deleteNamedNetNS(nsName); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			n.Close()
		}
	}()
	var err error
	if n.ns, err = newNamedNetNS(nsName); err != nil {
		return nil, err
	}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: n.Link, HardwareAddr: nodeLinkMACHostSide},
		PeerName:         "eth0",
		PeerHardwareAddr: nodeLinkMACNodeSide,
		PeerNamespace:    netlink.NsFd(int(n.ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("podnet: node %s: add link %s: %w", name, n.Link, err)
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return nil, err
	}
	defer host.Close()
	inside, err := netlink.NewHandleAt(n.ns)
	if err != nil {
		return nil, err
	}
	defer inside.Close()
	if err := wireNodeSide(host, n.Link, nodeRanges, nodeLinkNodeSideIPv4, nodeLinkNodeSideIPv6, nodeLinkMACNodeSide); err != nil {
		return nil, fmt.Errorf("podnet: node %s, host side: %w", name, err)
	}
	if lo, err := inside.LinkByName("lo"); err != nil || inside.LinkSetUp(lo) != nil {
		return nil, fmt.Errorf("podnet: node %s: set lo up", name)
	}
	if err := wireNodeSide(inside, "eth0", hostRanges, nodeLinkHostSideIPv4, nodeLinkHostSideIPv6, nodeLinkMACHostSide); err != nil {
		return nil, fmt.Errorf("podnet: node %s, node side: %w", name, err)
	}
	if err := waitOperational(host, n.Link, inside, "eth0"); err != nil {
		return nil, fmt.Errorf("podnet: node %s: %w", name, err)
	}
	ok = true
	return n, nil
}

// wireNodeSide routes the remote ranges over link through static next hops.
func wireNodeSide(h *netlink.Handle, link string, remote []netip.Prefix, nextHopIPv4, nextHopIPv6 net.IP, nextHopMAC net.HardwareAddr) error {
	l, err := h.LinkByName(link)
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(l); err != nil {
		return err
	}
	for _, prefix := range remote {
		nextHop, family := nextHopIPv4, netlink.FAMILY_V4
		if prefix.Addr().Is6() {
			nextHop, family = nextHopIPv6, netlink.FAMILY_V6
		}
		neigh := &netlink.Neigh{LinkIndex: l.Attrs().Index, IP: nextHop, HardwareAddr: nextHopMAC, State: netlink.NUD_PERMANENT, Family: family}
		if err := h.NeighSet(neigh); err != nil {
			return fmt.Errorf("neighbour %v: %w", nextHop, err)
		}
		route := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixToIPNet(prefix.Masked()), Gw: nextHop}
		if family == netlink.FAMILY_V4 {
			route.Flags = int(netlink.FLAG_ONLINK)
		}
		if err := h.RouteReplace(route); err != nil {
			return fmt.Errorf("route %v via %v: %w", prefix, nextHop, err)
		}
	}
	return nil
}

// InNetNS runs fn on a thread inside the node's namespace (to start its
// agent there, or open sockets there).
func (n *Node) InNetNS(fn func() error) error {
	return inNetNS(n.ns, fn)
}

// Close deletes the link and the namespace.
func (n *Node) Close() error {
	var errs []error
	if link, err := netlink.LinkByName(n.Link); err == nil {
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", n.Link, err))
		}
	}
	if n.ns.IsOpen() {
		n.ns.Close()
	}
	if err := deleteNamedNetNS(n.nsName); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
