package simulate

import (
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/palisade-net/palisade/npctl/manifest"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/policy"
)

// ServiceProbe is a connection from a pod to a Service's ClusterIP and
// port, which kube-proxy forwards to one backend's target port. The
// source's egress judges the packet to the ClusterIP (the pod's veth sees
// it before the host translates it), the backend's ingress the translated
// packet.
type ServiceProbe struct {
	From       probe.Pod
	FromIP     netip.Addr
	Service    probe.Pod // namespace/name of the Service
	ClusterIP  netip.Addr
	probe.Port // the service port
	Backend    probe.Pod
	BackendIP  netip.Addr
	TargetPort uint16
}

func (p ServiceProbe) String() string {
	return fmt.Sprintf("%s (%s) -> service %s (%s) %s via %s (%s:%d)", p.From, p.FromIP, p.Service, p.ClusterIP, p.Port, p.Backend, p.BackendIP, p.TargetPort)
}

// ServiceOutcome is the result of a ServiceProbe.
type ServiceOutcome struct {
	ServiceProbe
	Allowed bool
	Egress  Step
	Ingress Step
}

// PlanServices lists a probe from every source pod to every port of every
// Service with a ClusterIP of the source's family, through each ready
// backend. opts.To selects Services ("namespace/name" or "namespace");
// opts.Ports replaces the service ports.
func (m *Model) PlanServices(opts probe.Options) ([]ServiceProbe, error) {
	fromIPs := map[probe.Pod][]netip.Addr{}
	var from []probe.Pod
	for i := range m.Objects.Pods {
		pod := &m.Objects.Pods[i]
		key := probe.Pod{Namespace: pod.Namespace, Name: pod.Name}
		ips, err := manifest.PodIPs(pod)
		if err != nil || pod.Spec.HostNetwork || !matches(opts.From, key) {
			continue
		}
		fromIPs[key] = ips
		from = append(from, key)
	}
	if len(opts.From) > 0 && len(from) == 0 {
		return nil, fmt.Errorf("--from %v: no such pod or namespace with pods in the manifests", opts.From)
	}
	sort.Slice(from, func(i, j int) bool { return from[i].String() < from[j].String() })
	services := append([]corev1.Service(nil), m.Objects.Services...)
	sort.Slice(services, func(i, j int) bool {
		return services[i].Namespace+"/"+services[i].Name < services[j].Namespace+"/"+services[j].Name
	})
	var out []ServiceProbe
	found := false
	for _, src := range from {
		for i := range services {
			svc := &services[i]
			name := probe.Pod{Namespace: svc.Namespace, Name: svc.Name}
			if !matches(opts.To, name) {
				continue
			}
			found = true
			for _, clusterIP := range ClusterIPs(svc) {
				srcIP, ok := sameFamily(fromIPs[src], clusterIP, opts.Family)
				if !ok {
					continue
				}
				for _, sp := range servicePorts(svc, opts) {
					for _, b := range m.backends(svc, sp.name, sp.Protocol, clusterIP.Is6()) {
						if b.pod == src {
							continue
						}
						out = append(out, ServiceProbe{From: src, FromIP: srcIP, Service: name, ClusterIP: clusterIP, Port: sp.Port,
							Backend: b.pod, BackendIP: b.ip, TargetPort: b.port})
					}
				}
			}
		}
	}
	if len(opts.To) > 0 && !found {
		return nil, fmt.Errorf("--to %v: no such Service in the manifests", opts.To)
	}
	return out, nil
}

// matches reports whether p matches one of the patterns ("namespace/name"
// or "namespace"); no pattern matches everything.
func matches(patterns []string, p probe.Pod) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, pattern := range patterns {
		if pattern == p.Namespace || pattern == p.String() {
			return true
		}
	}
	return false
}

func sameFamily(ips []netip.Addr, target netip.Addr, family int) (netip.Addr, bool) {
	if family == 4 && !target.Is4() || family == 6 && !target.Is6() {
		return netip.Addr{}, false
	}
	for _, ip := range ips {
		if ip.Is4() == target.Is4() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

type servicePort struct {
	name string
	probe.Port
}

func servicePorts(svc *corev1.Service, opts probe.Options) []servicePort {
	var out []servicePort
	for _, sp := range svc.Spec.Ports {
		protocol := sp.Protocol
		if protocol == "" {
			protocol = corev1.ProtocolTCP
		}
		p := servicePort{name: sp.Name, Port: probe.Port{Protocol: protocol, Port: uint16(sp.Port)}}
		if len(opts.Ports) > 0 && !containsPort(opts.Ports, p.Port) {
			continue
		}
		if len(opts.Protocols) > 0 && !containsProtocol(opts.Protocols, protocol) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func containsPort(list []probe.Port, p probe.Port) bool {
	for _, x := range list {
		if x == p {
			return true
		}
	}
	return false
}

func containsProtocol(list []corev1.Protocol, p corev1.Protocol) bool {
	for _, x := range list {
		if x == p {
			return true
		}
	}
	return false
}

type backend struct {
	pod  probe.Pod
	ip   netip.Addr
	port uint16
}

// backends lists the ready pod endpoints of a service port in one family,
// with their target port, sorted by pod.
func (m *Model) backends(svc *corev1.Service, portName string, protocol corev1.Protocol, ipv6 bool) []backend {
	var out []backend
	for _, s := range m.EndpointSlices {
		if s.Namespace != svc.Namespace || s.Labels[discoveryv1.LabelServiceName] != svc.Name {
			continue
		}
		if (s.AddressType == discoveryv1.AddressTypeIPv6) != ipv6 {
			continue
		}
		var port uint16
		for _, p := range s.Ports {
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			if name == portName && proto == protocol && p.Port != nil {
				port = uint16(*p.Port)
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				pod, ok := m.PodByIP(ip.Unmap())
				if !ok {
					continue // not a pod of the manifests: nothing to judge its ingress with
				}
				out = append(out, backend{pod: pod, ip: ip.Unmap(), port: port})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pod.String() < out[j].pod.String() })
	return out
}

// JudgeService runs one service probe: the source's egress judges the
// packet to the ClusterIP, the backend's ingress the packet kube-proxy
// forwards to it.
func (m *Model) JudgeService(engine Engine, p ServiceProbe) (ServiceOutcome, error) {
	o := ServiceOutcome{ServiceProbe: p}
	toService := Frame(probe.Probe{From: p.From, To: p.Service, FromIP: p.FromIP, ToIP: p.ClusterIP, Port: p.Port})
	toBackend := Frame(probe.Probe{From: p.From, To: p.Backend, FromIP: p.FromIP, ToIP: p.BackendIP,
		Port: probe.Port{Protocol: p.Protocol, Port: p.TargetPort}})
	var err error
	if o.Egress, err = m.step(engine, p.From, policy.Egress, toService); err != nil {
		return o, fmt.Errorf("%s: egress of %s: %w", p, p.From, err)
	}
	if o.Ingress, err = m.step(engine, p.Backend, policy.Ingress, toBackend); err != nil {
		return o, fmt.Errorf("%s: ingress of %s: %w", p, p.Backend, err)
	}
	o.Allowed = o.Egress.Verdict.Allowed && o.Ingress.Verdict.Allowed
	return o, nil
}
