// Package podnet makes "pods" out of network namespaces on this machine,
// wired the way a routed CNI wires them: a veth pair with eth0 in the pod
// and the other end in the host namespace, the pod address as a /32 (/128)
// on eth0, a default route through the link-local gateway 169.254.1.1
// (fe80::1) with a static neighbour entry for it, and a host route
// podIP/32 dev <host veth> with a static neighbour entry for the pod.
//
// Each pod can serve TCP and UDP on chosen ports, answering with its name,
// and probe any address from inside its namespace.
//
// Safety: the whole pod range gets an "unreachable" route in the host
// namespace, so traffic to an address no pod holds never leaves the
// machine. Every namespace and link carries the configured name prefix;
// New removes leftovers with that prefix, Close removes what it made.
package podnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Config chooses names and addresses of a Network.
type Config struct {
	// Prefix starts the name of every netns and host-side veth, at most 8
	// characters so that "<prefix><index>" fits an interface name.
	Prefix string
	// IPv4Range holds every pod IPv4 address.
	IPv4Range netip.Prefix
	// IPv6Range, when valid, holds every pod IPv6 address.
	IPv6Range netip.Prefix
	// HostNetNSPath, when set, is the network namespace playing the host
	// (a simulated node, e.g. /var/run/netns/<name>); default: the
	// caller's own.
	HostNetNSPath string
}

// Network is the set of pods made on this host, and the host settings
// they need (unreachable routes, IP forwarding).
type Network struct {
	config Config
	hostNS netns.NsHandle
	host   *netlink.Handle

	mu       sync.Mutex
	pods     []*Pod
	routes   []netlink.Route
	restores []sysctlRestore
	// forwardingUser registers this network as needing forwarding in the
	// machine's own namespace (see acquireForwarding).
	forwardingUser string
}

type sysctlRestore struct {
	path, value string
}

var (
	hostVethMAC    = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	gatewayIPv4    = net.IPv4(169, 254, 1, 1)
	gatewayIPv6    = net.ParseIP("fe80::1")
	netnsDirectory = "/var/run/netns"
)

// New sweeps leftovers of an earlier run with the same prefix, installs the
// unreachable routes and enables forwarding. Close undoes it (forwarding in
// the machine's own namespace only once no other Network needs it).
func New(config Config) (*Network, error) {
	if config.Prefix == "" || len(config.Prefix) > 8 {
		return nil, fmt.Errorf("podnet: prefix %q must be 1 to 8 characters", config.Prefix)
	}
	if !config.IPv4Range.IsValid() || !config.IPv4Range.Addr().Is4() {
		return nil, fmt.Errorf("podnet: IPv4 range %v is not an IPv4 prefix", config.IPv4Range)
	}
	if config.IPv6Range.IsValid() && !config.IPv6Range.Addr().Is6() {
		return nil, fmt.Errorf("podnet: IPv6 range %v is not an IPv6 prefix", config.IPv6Range)
	}
	config.IPv4Range = config.IPv4Range.Masked()
	config.IPv6Range = config.IPv6Range.Masked()
	n := &Network{config: config, hostNS: netns.None()}
	var err error
	if config.HostNetNSPath == "" {
		n.hostNS, err = netns.Get()
	} else {
		n.hostNS, err = netns.GetFromPath(config.HostNetNSPath)
	}
	if err != nil {
		return nil, fmt.Errorf("podnet: host netns %q: %w", config.HostNetNSPath, err)
	}
	if n.host, err = netlink.NewHandleAt(n.hostNS); err != nil {
		n.hostNS.Close()
		return nil, fmt.Errorf("podnet: netlink in host netns: %w", err)
	}
	if err := sweep(n.host, config.Prefix); err != nil {
		n.host.Close()
		n.hostNS.Close()
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			n.Close()
		}
	}()
	if err := n.addUnreachableRoute(config.IPv4Range); err != nil {
		return nil, err
	}
	if config.HostNetNSPath == "" {
		n.forwardingUser = fmt.Sprintf("%d-%s", os.Getpid(), config.Prefix)
		if err := acquireForwarding(n.forwardingUser); err != nil {
			n.forwardingUser = ""
			return nil, fmt.Errorf("podnet: enable forwarding: %w", err)
		}
	} else if err := n.setSysctl("/proc/sys/net/ipv4/ip_forward", "1"); err != nil {
		return nil, err
	}
	if config.IPv6Range.IsValid() {
		if err := n.addUnreachableRoute(config.IPv6Range); err != nil {
			return nil, err
		}
		if config.HostNetNSPath != "" {
			if err := n.setSysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1"); err != nil {
				return nil, err
			}
		}
	}
	ok = true
	return n, nil
}

// SweepLeftovers deletes network namespaces and links of the caller's
// namespace whose name starts with prefix.
func SweepLeftovers(prefix string) error {
	host, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("podnet: netlink: %w", err)
	}
	defer host.Close()
	return sweep(host, prefix)
}

func sweep(host *netlink.Handle, prefix string) error {
	var errs []error
	links, err := host.LinkList()
	if err != nil {
		return fmt.Errorf("podnet: list links: %w", err)
	}
	for _, link := range links {
		if strings.HasPrefix(link.Attrs().Name, prefix) {
			if err := host.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete leftover link %s: %w", link.Attrs().Name, err))
			}
		}
	}
	entries, err := os.ReadDir(netnsDirectory)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("list %s: %w", netnsDirectory, err))
	}
	for _, entry := range entries {
		if strings.HasPrefix(entry.Name(), prefix) {
			if err := deleteNamedNetNS(entry.Name()); err != nil {
				errs = append(errs, fmt.Errorf("delete leftover netns %s: %w", entry.Name(), err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("podnet: sweep: %w", errors.Join(errs...))
	}
	return nil
}

// deleteNamedNetNS removes the bind mount and file of a named netns, also
// when an earlier run died between the two.
func deleteNamedNetNS(name string) error {
	path := filepath.Join(netnsDirectory, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (n *Network) addUnreachableRoute(prefix netip.Prefix) error {
	route := netlink.Route{
		Dst:  prefixToIPNet(prefix),
		Type: unix.RTN_UNREACHABLE,
	}
	if err := n.host.RouteReplace(&route); err != nil {
		return fmt.Errorf("podnet: add unreachable route %v: %w", prefix, err)
	}
	n.routes = append(n.routes, route)
	return nil
}

// setSysctl writes a /proc/sys/net file of the host namespace: opened from
// a thread inside it, it belongs to it.
func (n *Network) setSysctl(path, value string) error {
	return inNetNS(n.hostNS, func() error { return n.setSysctlHere(path, value) })
}

func (n *Network) setSysctlHere(path, value string) error {
	previous, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("podnet: read %s: %w", path, err)
	}
	old := strings.TrimSpace(string(previous))
	if old == value {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("podnet: write %s: %w", path, err)
	}
	n.restores = append(n.restores, sysctlRestore{path: path, value: old})
	return nil
}

// Close stops every pod's servers, deletes the pods, the routes, and
// restores the sysctls it changed. It reports every failure but tries all.
func (n *Network) Close() error {
	n.mu.Lock()
	pods := n.pods
	n.pods = nil
	n.mu.Unlock()
	var errs []error
	for _, pod := range pods {
		if err := pod.delete(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, route := range n.routes {
		if err := n.host.RouteDel(&route); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %v: %w", route.Dst, err))
		}
	}
	n.routes = nil
	if n.forwardingUser != "" {
		if err := releaseForwarding(n.forwardingUser); err != nil {
			errs = append(errs, fmt.Errorf("restore forwarding: %w", err))
		}
		n.forwardingUser = ""
	}
	restores := n.restores
	n.restores = nil
	var err error
	if len(restores) > 0 {
		err = inNetNS(n.hostNS, func() error {
			var errs []error
			for i := len(restores) - 1; i >= 0; i-- {
				if err := os.WriteFile(restores[i].path, []byte(restores[i].value), 0o644); err != nil {
					errs = append(errs, fmt.Errorf("restore %s: %w", restores[i].path, err))
				}
			}
			return errors.Join(errs...)
		})
	}
	if err != nil {
		errs = append(errs, err)
	}
	if n.host != nil {
		if err := sweep(n.host, n.config.Prefix); err != nil {
			errs = append(errs, err)
		}
		n.host.Close()
		n.host = nil
	}
	if n.hostNS.IsOpen() {
		n.hostNS.Close()
		n.hostNS = netns.None()
	}
	if len(errs) > 0 {
		return fmt.Errorf("podnet: close: %w", errors.Join(errs...))
	}
	return nil
}

// Pods returns the pods added so far, in order.
func (n *Network) Pods() []*Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Pod(nil), n.pods...)
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func addrToIPNet(a netip.Addr) *net.IPNet {
	return prefixToIPNet(netip.PrefixFrom(a, a.BitLen()))
}
