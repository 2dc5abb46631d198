package compile

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

func namespace(name string, kv ...string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labelMap(kv...)}}
}

func labelMap(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

type podOpt func(*corev1.Pod)

func withLabels(kv ...string) podOpt { return func(p *corev1.Pod) { p.Labels = labelMap(kv...) } }
func onNode(n string) podOpt         { return func(p *corev1.Pod) { p.Spec.NodeName = n } }
func withIPs(ips ...string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.PodIPs = nil
		p.Status.PodIP = ""
		for _, ip := range ips {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
		}
		if len(ips) > 0 {
			p.Status.PodIP = ips[0]
		}
	}
}
func withPort(name string, proto corev1.Protocol, n int32) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{Name: name, Protocol: proto, ContainerPort: n})
	}
}
func withPhase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }
func hostNetwork() podOpt                 { return func(p *corev1.Pod) { p.Spec.HostNetwork = true } }

func pod(ns, name, ip string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"pod": name}},
		Spec:       corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{{Name: "c"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, HostIP: "192.168.0.1"},
	}
	withIPs(ip)(p)
	for _, o := range opts {
		o(p)
	}
	return p
}

func sel(kv ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: labelMap(kv...)}
}

func expr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func netpol(ns, name string, podSelector *metav1.LabelSelector, mutate ...func(*networkingv1.NetworkPolicySpec)) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)}}
	if podSelector != nil {
		np.Spec.PodSelector = *podSelector
	}
	for _, m := range mutate {
		m(&np.Spec)
	}
	return np
}

func ingressRule(ports []networkingv1.NetworkPolicyPort, peers ...networkingv1.NetworkPolicyPeer) func(*networkingv1.NetworkPolicySpec) {
	return func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = append(s.Ingress, networkingv1.NetworkPolicyIngressRule{Ports: ports, From: peers})
	}
}

func egressRule(ports []networkingv1.NetworkPolicyPort, peers ...networkingv1.NetworkPolicyPeer) func(*networkingv1.NetworkPolicySpec) {
	return func(s *networkingv1.NetworkPolicySpec) {
		s.Egress = append(s.Egress, networkingv1.NetworkPolicyEgressRule{Ports: ports, To: peers})
	}
}

func policyTypes(t ...networkingv1.PolicyType) func(*networkingv1.NetworkPolicySpec) {
	return func(s *networkingv1.NetworkPolicySpec) { s.PolicyTypes = t }
}

func podPeer(podSel, nsSel *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: podSel, NamespaceSelector: nsSel}
}

func ipPeer(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func port(proto corev1.Protocol, p any) networkingv1.NetworkPolicyPort {
	np := networkingv1.NetworkPolicyPort{Protocol: &proto}
	switch v := p.(type) {
	case int:
		x := intstr.FromInt32(int32(v))
		np.Port = &x
	case string:
		x := intstr.FromString(v)
		np.Port = &x
	case nil:
	}
	return np
}

func portRange(proto corev1.Protocol, from, to int32) networkingv1.NetworkPolicyPort {
	np := port(proto, int(from))
	np.EndPort = &to
	return np
}

func ports(p ...networkingv1.NetworkPolicyPort) []networkingv1.NetworkPolicyPort { return p }

func service(ns, name string, clusterIPs []string, sp ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{ClusterIP: clusterIPs[0], ClusterIPs: clusterIPs, Ports: sp},
	}
}

func svcPort(name string, p int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: corev1.ProtocolTCP, Port: p, TargetPort: target}
}

// endpointSlice lists pods (as ns/name=ip) behind service port name -> number.
func endpointSlice(ns, name, svc string, family discoveryv1.AddressType, portName string, number int32, pods ...string) *discoveryv1.EndpointSlice {
	tcp := corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: family,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Protocol: &tcp, Port: &number}},
	}
	for _, p := range pods {
		ref, ip, _ := strings.Cut(p, "=")
		ep := discoveryv1.Endpoint{Addresses: []string{ip}}
		if podNS, podName, ok := strings.Cut(ref, "/"); ok {
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: podNS, Name: podName}
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
	return es
}

// render prints objects' content compactly and completely (metadata aside).
func render(objects []v1alpha1.PolicyEndpoint) []string {
	var out []string
	for _, o := range objects {
		var b strings.Builder
		fmt.Fprintf(&b, "node=%s iso=%v pods=[", o.Spec.NodeName, o.Spec.PodIsolation)
		var pods []string
		for _, p := range o.Spec.PodSelectorEndpoints {
			pods = append(pods, p.Namespace+"/"+p.Name+"@"+string(p.PodIP))
		}
		b.WriteString(strings.Join(pods, " ") + "]")
		b.WriteString(" in=" + renderEntries(o.Spec.Ingress))
		b.WriteString(" eg=" + renderEntries(o.Spec.Egress))
		if o.Spec.Chunk != nil && o.Spec.Chunk.Total > 1 {
			fmt.Fprintf(&b, " chunk=%d/%d", o.Spec.Chunk.Index, o.Spec.Chunk.Total)
		}
		out = append(out, b.String())
	}
	sort.Strings(out)
	return out
}

func renderEntries(entries []v1alpha1.EndpointInfo) string {
	var parts []string
	for _, e := range entries {
		s := string(e.CIDR)
		for _, x := range e.Except {
			s += "!" + string(x)
		}
		if e.Ports != nil {
			var ps []string
			for _, p := range e.Ports {
				q := string(*p.Protocol)
				if p.Port != nil {
					q += fmt.Sprintf(":%d", *p.Port)
				}
				if p.EndPort != nil {
					q += fmt.Sprintf("-%d", *p.EndPort)
				}
				ps = append(ps, q)
			}
			s += "(" + strings.Join(ps, ",") + ")"
		}
		parts = append(parts, s)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func assertLines(t *testing.T, got, want []string) {
	t.Helper()
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func problemReasons(ps []Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Reason)
	}
	sort.Strings(out)
	return out
}
