// Package probe plans the connections npctl simulates: which pod connects
// to which pod, on which port and protocol, from which address to which.
package probe

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/palisade-net/palisade/npctl/manifest"
)

// Pod names a pod.
type Pod struct{ Namespace, Name string }

func (p Pod) String() string { return p.Namespace + "/" + p.Name }

// ParsePod reads "namespace/name".
func ParsePod(s string) (Pod, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return Pod{}, fmt.Errorf("pod %q: want namespace/name", s)
	}
	return Pod{ns, name}, nil
}

// Port is a destination port and protocol.
type Port struct {
	Protocol corev1.Protocol
	Port     uint16
}

func (p Port) String() string { return fmt.Sprintf("%s/%d", p.Protocol, p.Port) }

// ParsePort reads "80", "80/TCP", "53/udp" (the protocol defaults to TCP).
func ParsePort(s string) (Port, error) {
	num, proto, hasProto := strings.Cut(s, "/")
	p := Port{Protocol: corev1.ProtocolTCP}
	if hasProto {
		var err error
		if p.Protocol, err = ParseProtocol(proto); err != nil {
			return Port{}, fmt.Errorf("port %q: %w", s, err)
		}
	}
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil || n == 0 {
		return Port{}, fmt.Errorf("port %q: want a number 1-65535, optionally followed by /TCP, /UDP or /SCTP", s)
	}
	p.Port = uint16(n)
	return p, nil
}

// ParseProtocol reads TCP, UDP or SCTP in any case.
func ParseProtocol(s string) (corev1.Protocol, error) {
	switch p := corev1.Protocol(strings.ToUpper(s)); p {
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		return p, nil
	}
	return "", fmt.Errorf("protocol %q is not TCP, UDP or SCTP", s)
}

// Probe is one connection attempt.
type Probe struct {
	From, To     Pod
	FromIP, ToIP netip.Addr
	Port
}

func (p Probe) String() string {
	return fmt.Sprintf("%s (%s) -> %s (%s) %s", p.From, p.FromIP, p.To, p.ToIP, p.Port)
}

// Options choose probes. Zero values mean: every pod as source and as
// destination, the destination's declared container ports of every
// protocol, and the first IP family the two pods share.
type Options struct {
	// From and To keep only pods matching one of the patterns:
	// "namespace/name" or "namespace" (every pod of the namespace).
	From, To []string
	// Ports replaces the declared container ports: every pair is probed on each.
	Ports []Port
	// Protocols keeps only ports of these protocols.
	Protocols []corev1.Protocol
	// Family is 4 or 6 to probe over that IP family only; 0 picks the
	// first family both pods have.
	Family int
}

type podInfo struct {
	pod   Pod
	ips   []netip.Addr
	ports []Port
}

// Plan lists the probes of opts over the pods of objs, ordered by source,
// destination, protocol and port. A pod never probes itself (that traffic
// does not leave the pod); host-network pods are neither sources nor
// destinations.
func Plan(objs *manifest.Objects, opts Options) ([]Probe, error) {
	if opts.Family != 0 && opts.Family != 4 && opts.Family != 6 {
		return nil, fmt.Errorf("IP family %d: want 4 or 6", opts.Family)
	}
	var pods []podInfo
	for i := range objs.Pods {
		p := &objs.Pods[i]
		if p.Spec.HostNetwork {
			continue
		}
		ips, err := manifest.PodIPs(p)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		pods = append(pods, podInfo{pod: Pod{p.Namespace, p.Name}, ips: ips, ports: declaredPorts(p)})
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].pod.String() < pods[j].pod.String() })
	sources, err := matching(pods, opts.From, "--from")
	if err != nil {
		return nil, err
	}
	destinations, err := matching(pods, opts.To, "--to")
	if err != nil {
		return nil, err
	}
	var probes []Probe
	for _, src := range sources {
		for _, dst := range destinations {
			if src.pod == dst.pod {
				continue
			}
			fromIP, toIP, ok := sharedFamily(src.ips, dst.ips, opts.Family)
			if !ok {
				continue
			}
			ports := dst.ports
			if len(opts.Ports) > 0 {
				ports = opts.Ports
			}
			for _, port := range ports {
				if len(opts.Protocols) > 0 && !contains(opts.Protocols, port.Protocol) {
					continue
				}
				probes = append(probes, Probe{From: src.pod, To: dst.pod, FromIP: fromIP, ToIP: toIP, Port: port})
			}
		}
	}
	return probes, nil
}

func contains(list []corev1.Protocol, p corev1.Protocol) bool {
	for _, x := range list {
		if x == p {
			return true
		}
	}
	return false
}

// declaredPorts returns a pod's container ports, sorted and without duplicates.
func declaredPorts(p *corev1.Pod) []Port {
	seen := map[Port]bool{}
	var out []Port
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			port := Port{Protocol: cp.Protocol, Port: uint16(cp.ContainerPort)}
			if port.Protocol == "" {
				port.Protocol = corev1.ProtocolTCP
			}
			if !seen[port] {
				seen[port] = true
				out = append(out, port)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return Less(out[i], out[j]) })
	return out
}

// Less orders ports by protocol (TCP, UDP, SCTP) then number.
func Less(a, b Port) bool {
	if a.Protocol != b.Protocol {
		return protocolRank(a.Protocol) < protocolRank(b.Protocol)
	}
	return a.Port < b.Port
}

func protocolRank(p corev1.Protocol) int {
	switch p {
	case corev1.ProtocolTCP:
		return 0
	case corev1.ProtocolUDP:
		return 1
	}
	return 2
}

func matching(pods []podInfo, patterns []string, flag string) ([]podInfo, error) {
	if len(patterns) == 0 {
		return pods, nil
	}
	var out []podInfo
	for _, pattern := range patterns {
		found := false
		for _, p := range pods {
			if pattern == p.pod.Namespace || pattern == p.pod.String() {
				found = true
				if !containsPod(out, p.pod) {
					out = append(out, p)
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("%s %s: no such pod or namespace with pods in the manifests", flag, pattern)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pod.String() < out[j].pod.String() })
	return out, nil
}

func containsPod(list []podInfo, p Pod) bool {
	for _, x := range list {
		if x.pod == p {
			return true
		}
	}
	return false
}

func sharedFamily(from, to []netip.Addr, family int) (netip.Addr, netip.Addr, bool) {
	for _, a := range from {
		if family == 4 && !a.Is4() || family == 6 && !a.Is6() {
			continue
		}
		for _, b := range to {
			if a.Is4() == b.Is4() {
				return a, b, true
			}
		}
	}
	return netip.Addr{}, netip.Addr{}, false
}
