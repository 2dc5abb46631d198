// Package podlink finds the host-side interface of a pod: the device the
// host's main routing table sends the pod's IP to. This works with any CNI
// that routes pod IPs to per-pod interfaces; the AWS VPC CNI naming (eni +
// hash for pods, vlan for branch ENIs) is only a hint for interfaces that
// appear before the pod's IP is known.
package podlink

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// ErrNotPodLink says the route to an IP does not lead to a pod interface
// (the IP is the host's own, or routed off the node).
var ErrNotPodLink = errors.New("route does not lead to a pod interface")

// IsPodLink tells whether link can be a pod's host-side interface: a veth,
// or an interface named like the VPC CNI names pod interfaces.
func IsPodLink(link netlink.Link) bool {
	if link.Type() == "veth" {
		return true
	}
	return HasVPCCNIName(link.Attrs().Name)
}

// HasVPCCNIName tells whether name follows the VPC CNI naming of pod
// interfaces: "eni" + 11 hex digits, or "vlan" + a number for branch ENIs.
func HasVPCCNIName(name string) bool {
	switch {
	case strings.HasPrefix(name, "eni") && len(name) == 14:
		return isHex(name[3:])
	case strings.HasPrefix(name, "vlan") && len(name) > 4:
		for _, c := range name[4:] {
			if c < '0' || c > '9' {
				return false
			}
		}
		return true
	}
	return false
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// VPCCNIName is the host-side interface name the VPC CNI gives a pod:
// "eni" followed by the first 11 hex digits of SHA-1("namespace.name").
func VPCCNIName(namespace, name string) string {
	sum := sha1.Sum([]byte(namespace + "." + name))
	return "eni" + hex.EncodeToString(sum[:])[:11]
}

// ForIP returns the pod interface the main routing table sends ip to.
func ForIP(ip netip.Addr) (netlink.Link, error) {
	routes, err := netlink.RouteGet(net.IP(ip.Unmap().AsSlice()))
	if err != nil {
		return nil, fmt.Errorf("route to %s: %w", ip, err)
	}
	if len(routes) == 0 || routes[0].LinkIndex == 0 {
		return nil, fmt.Errorf("route to %s: %w", ip, ErrNotPodLink)
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return nil, fmt.Errorf("route to %s: interface %d: %w", ip, routes[0].LinkIndex, err)
	}
	if !IsPodLink(link) {
		return nil, fmt.Errorf("route to %s goes to %s (%s): %w", ip, link.Attrs().Name, link.Type(), ErrNotPodLink)
	}
	return link, nil
}

// ForIPs returns the pod interface of the first of ips that has one (a
// dual-stack pod's addresses lead to the same interface).
func ForIPs(ips []netip.Addr) (netlink.Link, error) {
	if len(ips) == 0 {
		return nil, errors.New("pod has no IP yet")
	}
	var errs []error
	for _, ip := range ips {
		link, err := ForIP(ip)
		if err == nil {
			return link, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}
