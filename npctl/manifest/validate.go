package manifest

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Validate checks what a simulation relies on: pods have valid and distinct
// IPs and valid container ports; policies have valid selectors, CIDRs,
// ports and policy types; services and slices have valid addresses.
func Validate(o *Objects) []error {
	v := validator{objects: o}
	owners := map[netip.Addr]string{}
	for i := range o.Pods {
		pod := &o.Pods[i]
		at := v.at("Pod", pod.Namespace, pod.Name)
		ips, err := PodIPs(pod)
		if err != nil {
			v.fail(at, "%v", err)
		}
		for _, ip := range ips {
			name := qualified(pod.Namespace, pod.Name)
			if other, taken := owners[ip]; taken && !pod.Spec.HostNetwork {
				v.fail(at, "IP %s is also the IP of pod %s", ip, other)
			} else if !pod.Spec.HostNetwork {
				owners[ip] = name
			}
		}
		for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
			for j, p := range c.Ports {
				field := fmt.Sprintf("container %q ports[%d]", c.Name, j)
				if p.ContainerPort < 1 || p.ContainerPort > 65535 {
					v.fail(at, "%s: containerPort %d out of range 1-65535", field, p.ContainerPort)
				}
				v.protocol(at, field, p.Protocol)
			}
		}
	}
	for i := range o.NetworkPolicies {
		v.networkPolicy(&o.NetworkPolicies[i])
	}
	for i := range o.Services {
		svc := &o.Services[i]
		at := v.at("Service", svc.Namespace, svc.Name)
		ips := append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...)
		for _, ip := range ips {
			if ip == "" || ip == corev1.ClusterIPNone {
				continue
			}
			if _, err := netip.ParseAddr(ip); err != nil {
				v.fail(at, "clusterIP %q is not an IP address", ip)
			}
		}
		for j, p := range svc.Spec.Ports {
			v.protocol(at, fmt.Sprintf("ports[%d]", j), p.Protocol)
		}
	}
	for i := range o.EndpointSlices {
		es := &o.EndpointSlices[i]
		at := v.at("EndpointSlice", es.Namespace, es.Name)
		for j, ep := range es.Endpoints {
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				switch {
				case err != nil:
					v.fail(at, "endpoints[%d]: address %q is not an IP address", j, a)
				case es.AddressType == discoveryv1.AddressTypeIPv4 && !ip.Is4(),
					es.AddressType == discoveryv1.AddressTypeIPv6 && !ip.Is6():
					v.fail(at, "endpoints[%d]: address %s is not of addressType %s", j, a, es.AddressType)
				}
			}
		}
	}
	return v.errs
}

// PodIPs returns a pod's addresses from status.podIPs, else status.podIP.
// A pod without any is an error: the simulation cannot place it.
func PodIPs(pod *corev1.Pod) ([]netip.Addr, error) {
	var raw []string
	for _, ip := range pod.Status.PodIPs {
		raw = append(raw, ip.IP)
	}
	if len(raw) == 0 && pod.Status.PodIP != "" {
		raw = []string{pod.Status.PodIP}
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("no IP: set status.podIP (or status.podIPs) to the pod's address")
	}
	var ips []netip.Addr
	for _, s := range raw {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("pod IP %q is not an IP address", s)
		}
		ips = append(ips, ip.Unmap())
	}
	return ips, nil
}

type validator struct {
	objects *Objects
	errs    []error
}

func (v *validator) at(kind, namespace, name string) string {
	return v.objects.SourceOf(kind, namespace, name) + ": " + ObjectName(kind, namespace, name)
}

func (v *validator) fail(at, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", at, fmt.Sprintf(format, args...)))
}

func (v *validator) protocol(at, field string, p corev1.Protocol) {
	switch p {
	case "", corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		v.fail(at, "%s: protocol %q is not TCP, UDP or SCTP", field, p)
	}
}

func (v *validator) selector(at, field string, s *metav1.LabelSelector) {
	if s == nil {
		return
	}
	if _, err := metav1.LabelSelectorAsSelector(s); err != nil {
		v.fail(at, "%s: %v", field, err)
	}
}

func (v *validator) networkPolicy(np *networkingv1.NetworkPolicy) {
	at := v.at("NetworkPolicy", np.Namespace, np.Name)
	v.selector(at, "spec.podSelector", &np.Spec.PodSelector)
	for _, t := range np.Spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			v.fail(at, "spec.policyTypes: %q is not Ingress or Egress", t)
		}
	}
	for i, r := range np.Spec.Ingress {
		for j, peer := range r.From {
			v.peer(at, fmt.Sprintf("spec.ingress[%d].from[%d]", i, j), peer)
		}
		v.ports(at, fmt.Sprintf("spec.ingress[%d].ports", i), r.Ports)
	}
	for i, r := range np.Spec.Egress {
		for j, peer := range r.To {
			v.peer(at, fmt.Sprintf("spec.egress[%d].to[%d]", i, j), peer)
		}
		v.ports(at, fmt.Sprintf("spec.egress[%d].ports", i), r.Ports)
	}
}

func (v *validator) peer(at, field string, peer networkingv1.NetworkPolicyPeer) {
	v.selector(at, field+".podSelector", peer.PodSelector)
	v.selector(at, field+".namespaceSelector", peer.NamespaceSelector)
	b := peer.IPBlock
	if b == nil {
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			v.fail(at, "%s: a peer needs podSelector, namespaceSelector or ipBlock", field)
		}
		return
	}
	if peer.PodSelector != nil || peer.NamespaceSelector != nil {
		v.fail(at, "%s: ipBlock cannot be combined with podSelector or namespaceSelector", field)
	}
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		v.fail(at, "%s.ipBlock.cidr %q is not a valid CIDR", field, b.CIDR)
		return
	}
	for k, e := range b.Except {
		except, err := netip.ParsePrefix(e)
		switch {
		case err != nil:
			v.fail(at, "%s.ipBlock.except[%d] %q is not a valid CIDR", field, k, e)
		case except.Addr().Is4() != cidr.Addr().Is4():
			v.fail(at, "%s.ipBlock.except[%d] %s is not of the address family of cidr %s", field, k, e, b.CIDR)
		case except.Bits() < cidr.Bits() || !cidr.Contains(except.Addr()):
			v.fail(at, "%s.ipBlock.except[%d] %s is not inside cidr %s", field, k, e, b.CIDR)
		}
	}
}

func (v *validator) ports(at, field string, ports []networkingv1.NetworkPolicyPort) {
	for i, p := range ports {
		f := fmt.Sprintf("%s[%d]", field, i)
		if p.Protocol != nil {
			v.protocol(at, f, *p.Protocol)
		}
		if p.Port == nil {
			if p.EndPort != nil {
				v.fail(at, "%s: endPort without port", f)
			}
			continue
		}
		if p.Port.Type == intstr.String {
			if p.Port.StrVal == "" {
				v.fail(at, "%s: empty port name", f)
			}
			if p.EndPort != nil {
				v.fail(at, "%s: endPort needs a numeric port, not %q", f, p.Port.StrVal)
			}
			continue
		}
		if p.Port.IntVal < 1 || p.Port.IntVal > 65535 {
			v.fail(at, "%s: port %d out of range 1-65535", f, p.Port.IntVal)
		}
		if p.EndPort != nil && (*p.EndPort < p.Port.IntVal || *p.EndPort > 65535) {
			v.fail(at, "%s: endPort %d must be between port %d and 65535", f, *p.EndPort, p.Port.IntVal)
		}
	}
}
