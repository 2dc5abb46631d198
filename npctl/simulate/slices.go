package simulate

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/palisade-net/palisade/npctl/manifest"
)

// EndpointSlices returns the slices of objs plus, for every Service with a
// selector that none of them belongs to, the slices the EndpointSlice
// controller would write: its selected, running pods, grouped by address
// family and by the target ports they resolve.
func EndpointSlices(objs *manifest.Objects) []discoveryv1.EndpointSlice {
	out := append([]discoveryv1.EndpointSlice(nil), objs.EndpointSlices...)
	covered := map[string]bool{}
	for _, s := range objs.EndpointSlices {
		covered[s.Namespace+"/"+s.Labels[discoveryv1.LabelServiceName]] = true
	}
	for i := range objs.Services {
		svc := &objs.Services[i]
		if len(svc.Spec.Selector) == 0 || covered[svc.Namespace+"/"+svc.Name] {
			continue
		}
		out = append(out, slicesOf(svc, objs.Pods)...)
	}
	return out
}

func slicesOf(svc *corev1.Service, pods []corev1.Pod) []discoveryv1.EndpointSlice {
	selector := labels.SelectorFromSet(svc.Spec.Selector)
	type group struct {
		addressType discoveryv1.AddressType
		ports       []discoveryv1.EndpointPort
		endpoints   []discoveryv1.Endpoint
	}
	groups := map[string]*group{}
	var order []string
	for i := range pods {
		pod := &pods[i]
		if pod.Namespace != svc.Namespace || pod.Spec.HostNetwork || !selector.Matches(labels.Set(pod.Labels)) ||
			pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		ports := resolvePorts(svc, pod)
		ips, _ := manifest.PodIPs(pod)
		for _, ip := range ips {
			addressType := discoveryv1.AddressTypeIPv4
			if ip.Is6() {
				addressType = discoveryv1.AddressTypeIPv6
			}
			key := fmt.Sprintf("%s %v", addressType, portsText(ports))
			g := groups[key]
			if g == nil {
				g = &group{addressType: addressType, ports: ports}
				groups[key] = g
				order = append(order, key)
			}
			ready := true
			g.endpoints = append(g.endpoints, discoveryv1.Endpoint{
				Addresses:  []string{ip.String()},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name},
				NodeName:   nodeOf(pod),
			})
		}
	}
	sort.Strings(order)
	var out []discoveryv1.EndpointSlice
	for i, key := range order {
		g := groups[key]
		out = append(out, discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: svc.Namespace,
				Name:      fmt.Sprintf("%s-npctl-%d", svc.Name, i),
				Labels:    map[string]string{discoveryv1.LabelServiceName: svc.Name},
			},
			AddressType: g.addressType,
			Endpoints:   g.endpoints,
			Ports:       g.ports,
		})
	}
	return out
}

func nodeOf(pod *corev1.Pod) *string {
	node := pod.Spec.NodeName
	if node == "" {
		node = DefaultNode
	}
	return &node
}

// resolvePorts maps each service port to the pod's target port; a named
// target port the pod does not declare is left out, as the EndpointSlice
// controller does.
func resolvePorts(svc *corev1.Service, pod *corev1.Pod) []discoveryv1.EndpointPort {
	var out []discoveryv1.EndpointPort
	for _, sp := range svc.Spec.Ports {
		protocol := sp.Protocol
		if protocol == "" {
			protocol = corev1.ProtocolTCP
		}
		var number int32
		switch {
		case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
			number = containerPort(pod, sp.TargetPort.StrVal, protocol)
		case sp.TargetPort.IntVal != 0:
			number = sp.TargetPort.IntVal
		default:
			number = sp.Port
		}
		if number == 0 {
			continue
		}
		name := sp.Name
		out = append(out, discoveryv1.EndpointPort{Name: &name, Protocol: &protocol, Port: &number})
	}
	return out
}

func containerPort(pod *corev1.Pod, name string, protocol corev1.Protocol) int32 {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			pp := p.Protocol
			if pp == "" {
				pp = corev1.ProtocolTCP
			}
			if p.Name == name && pp == protocol {
				return p.ContainerPort
			}
		}
	}
	return 0
}

func portsText(ports []discoveryv1.EndpointPort) string {
	var parts []string
	for _, p := range ports {
		parts = append(parts, fmt.Sprintf("%s/%s/%d", *p.Name, *p.Protocol, *p.Port))
	}
	return strings.Join(parts, ",")
}

// ClusterIPs returns a Service's cluster IPs (none for headless services).
func ClusterIPs(svc *corev1.Service) []netip.Addr {
	raw := svc.Spec.ClusterIPs
	if len(raw) == 0 && svc.Spec.ClusterIP != "" {
		raw = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, s := range raw {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}
