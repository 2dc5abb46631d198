// Package netpolcases holds the upstream NetworkPolicy e2e scenarios
// (Kubernetes test/e2e/network/netpol) as data: the cluster (namespaces x,
// y, z with pods a, b, c serving 80 and 81 over TCP, UDP and SCTP), each
// case's policies and its hand-written reachability matrix, and an
// evaluator that reads PolicyEndpoints the way a node agent does. The
// compiler's tests and the controller's apiserver tests share it.
package netpolcases

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

const (
	TCP  = corev1.ProtocolTCP
	UDP  = corev1.ProtocolUDP
	SCTP = corev1.ProtocolSCTP
)

// Pods are the model's pods as namespace/name.
var Pods = []string{"x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"}

// IP is a model pod's address.
func IP(p string) string {
	i := slices.Index(Pods, p)
	return fmt.Sprintf("10.10.%d.%d", i/3, i%3+1)
}

// Namespaces returns x, y, z labelled ns=<name>.
func Namespaces() []corev1.Namespace {
	var out []corev1.Namespace
	for _, ns := range []string{"x", "y", "z"} {
		out = append(out, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"ns": ns}}})
	}
	return out
}

// World returns the model's pods, running with their IPs, spread over
// nodes node0 and node1.
func World() []corev1.Pod {
	var out []corev1.Pod
	for i, p := range Pods {
		ns, name, _ := strings.Cut(p, "/")
		var ports []corev1.ContainerPort
		for _, n := range []int32{80, 81} {
			for _, proto := range []corev1.Protocol{TCP, UDP, SCTP} {
				ports = append(ports, corev1.ContainerPort{Name: fmt.Sprintf("serve-%d-%s", n, strings.ToLower(string(proto))), Protocol: proto, ContainerPort: n})
			}
		}
		out = append(out, corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"pod": name}},
			Spec:       corev1.PodSpec{NodeName: fmt.Sprintf("node%d", i%2), Containers: []corev1.Container{{Name: "c", Image: "example.invalid/agnhost", Ports: ports}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, HostIP: "192.168.0.1", PodIP: IP(p),
				PodIPs: []corev1.PodIP{{IP: IP(p)}}},
		})
	}
	return out
}

// Probe is a destination port and protocol.
type Probe struct {
	Port  int32
	Proto corev1.Protocol
}

// Case is one upstream scenario.
type Case struct {
	ID       int
	Name     string
	Policies []*networkingv1.NetworkPolicy
	Probes   []Probe
	// Expect is the hand-written reachability matrix as a predicate.
	Expect func(from, to string, pr Probe) bool
}

func in(p string, set ...string) bool { return slices.Contains(set, p) }

// NS is a model pod's namespace.
func NS(p string) string { return p[:1] }

func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func sel(kv ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: labels(kv...)}
}

func expr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func netpol(ns, name string, podSelector *metav1.LabelSelector, mutate ...func(*networkingv1.NetworkPolicySpec)) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
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

var (
	ingressOnly = policyTypes(networkingv1.PolicyTypeIngress)
	egressOnly  = policyTypes(networkingv1.PolicyTypeEgress)
)

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
	}
	return np
}

func ports(p ...networkingv1.NetworkPolicyPort) []networkingv1.NetworkPolicyPort { return p }

// Cases returns the scenarios with a fixed cluster and policy set; the
// update scenarios (20, 21, 22, 24, 33) are driven by the tests.
func Cases() []Case {
	tcp80, tcp81 := Probe{80, TCP}, Probe{81, TCP}
	all := &metav1.LabelSelector{}
	deny := func(nsName string) *networkingv1.NetworkPolicy { return netpol(nsName, "deny-ingress", all) }
	return []Case{
		{1, "default-deny-ingress", []*networkingv1.NetworkPolicy{deny("x")}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return NS(to) != "x" }},
		{2, "default-deny-all", []*networkingv1.NetworkPolicy{netpol("x", "deny-all", all, policyTypes(networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return NS(to) != "x" && NS(f) != "x" }},
		{3, "allow from pods in server namespace by podSelector", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(sel("pod", "b"), nil)))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return to != "x/a" || f == "x/b" }},
		{4, "allow ingress for a target (2 policies)", []*networkingv1.NetworkPolicy{deny("x"), netpol("x", "allow-a", sel("pod", "a"), ingressRule(nil))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return NS(to) != "x" || to == "x/a" }},
		{5, "allow from all namespaces", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(nil, all)))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return true }},
		{6, "allow only from a different namespace", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(nil, sel("ns", "y"))))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return to != "x/a" || NS(f) == "y" }},
		{7, "podSelector matchExpressions In", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(expr("pod", metav1.LabelSelectorOpIn, "b"), nil)))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return to != "x/a" || f == "x/b" }},
		{8, "namespaceSelector matchExpressions In", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(nil, expr("ns", metav1.LabelSelectorOpIn, "y"))))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return to != "x/a" || NS(f) == "y" }},
		{9, "podSelector OR namespaceSelector", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(nil, expr("ns", metav1.LabelSelectorOpNotIn, "x")), podPeer(sel("pod", "b"), nil)))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return to != "x/a" || NS(f) != "x" || f == "x/b" }},
		{10, "podSelector AND namespaceSelector", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(sel("pod", "b"), expr("ns", metav1.LabelSelectorOpNotIn, "x"))))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return to != "x/a" || in(f, "y/b", "z/b") }},
		{11, "multiple podSelectors and namespaceSelectors", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(expr("pod", metav1.LabelSelectorOpIn, "b", "c"), expr("ns", metav1.LabelSelectorOpNotIn, "x"))))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return to != "x/a" || in(f, "y/b", "y/c", "z/b", "z/c") }},
		{12, "any podSelector", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(all, nil)))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return to != "x/a" || NS(f) == "x" }},
		{13, "pod in a different namespace by podSelector and namespaceSelector", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(sel("pod", "b"), sel("ns", "y"))))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return to != "x/a" || f == "y/b" }},
		{14, "ports", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(TCP, 81)), podPeer(nil, sel("ns", "y"))))}, []Probe{tcp80, tcp81},
			func(f, to string, pr Probe) bool { return to != "x/a" || (pr.Port == 81 && NS(f) == "y") }},
		{15, "stacked policies with overlapping podSelectors", []*networkingv1.NetworkPolicy{
			netpol("x", "p81", sel("pod", "a"), ingressRule(ports(port(TCP, 81)), podPeer(nil, sel("ns", "y")))),
			netpol("x", "p80", sel("pod", "a"), ingressRule(ports(port(TCP, 80)), podPeer(nil, sel("ns", "y"))))}, []Probe{tcp80, tcp81},
			func(f, to string, _ Probe) bool { return to != "x/a" || NS(f) == "y" }},
		{16, "allow-all", []*networkingv1.NetworkPolicy{netpol("x", "p", all, ingressRule(nil))}, []Probe{tcp80, tcp81},
			func(f, to string, _ Probe) bool { return true }},
		{17, "ingress on one named port", []*networkingv1.NetworkPolicy{netpol("x", "p", all, ingressRule(ports(port(TCP, "serve-81-tcp"))))}, []Probe{tcp80, tcp81},
			func(f, to string, pr Probe) bool { return NS(to) != "x" || pr.Port == 81 }},
		{18, "ingress from namespace on one named port", []*networkingv1.NetworkPolicy{netpol("x", "p", all, ingressRule(ports(port(TCP, "serve-80-tcp")), podPeer(nil, sel("ns", "y"))))}, []Probe{tcp80, tcp81},
			func(f, to string, pr Probe) bool { return NS(to) != "x" || (pr.Port == 80 && NS(f) == "y") }},
		{19, "egress on one named port", []*networkingv1.NetworkPolicy{netpol("x", "p", all, egressOnly, egressRule(ports(port(TCP, "serve-80-tcp"))))}, []Probe{tcp80, tcp81},
			func(f, to string, pr Probe) bool { return NS(f) != "x" || pr.Port == 80 }},
		{23, "deny ingress from other namespaces", []*networkingv1.NetworkPolicy{netpol("x", "p", all, ingressRule(nil, podPeer(all, nil)))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return NS(to) != "x" || NS(f) == "x" }},
		{25, "deny egress by podSelector", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), egressOnly)}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return f != "x/a" }},
		{26, "deny egress from all pods of a namespace", []*networkingv1.NetworkPolicy{netpol("x", "p", all, egressOnly)}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return NS(f) != "x" }},
		{28, "client-side egress deny wins over server allow", []*networkingv1.NetworkPolicy{
			netpol("x", "egress-to-ya", sel("pod", "a"), egressOnly, egressRule(nil, podPeer(sel("pod", "a"), sel("ns", "y")))),
			netpol("y", "allow-all", all, ingressRule(nil))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return f != "x/a" || to == "y/a" }},
		{29, "egress to a pod in another namespace", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), egressOnly, egressRule(nil, podPeer(sel("pod", "b"), sel("ns", "y"))))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return f != "x/a" || to == "y/b" }},
		{30, "any port of one protocol", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(UDP, nil))))}, []Probe{tcp80, {80, UDP}},
			func(f, to string, pr Probe) bool { return to != "x/a" || pr.Proto == UDP }},
		{31, "ingress allow-all takes precedence", []*networkingv1.NetworkPolicy{
			netpol("x", "only-80", sel("pod", "a"), ingressRule(ports(port(TCP, 80)))), netpol("x", "allow-all", all, ingressRule(nil))}, []Probe{tcp81},
			func(f, to string, _ Probe) bool { return true }},
		{32, "egress allow-all takes precedence", []*networkingv1.NetworkPolicy{
			netpol("x", "only-80", sel("pod", "a"), egressOnly, egressRule(ports(port(TCP, 80)))), netpol("x", "allow-all", all, egressOnly, egressRule(nil))}, []Probe{tcp81},
			func(f, to string, _ Probe) bool { return true }},
		{34, "egress to a CIDR", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), egressOnly, egressRule(nil, ipPeer(IP("y/b")+"/32")))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return f != "x/a" || to == "y/b" }},
		{35, "egress CIDR with except", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), egressOnly, egressRule(nil, ipPeer("10.10.0.0/24", IP("x/b")+"/32")))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return f != "x/a" || to == "x/c" }},
		{36, "an IP in both a CIDR's except and another policy's CIDR is allowed", []*networkingv1.NetworkPolicy{
			netpol("x", "except", sel("pod", "a"), egressOnly, egressRule(nil, ipPeer("10.10.0.0/24", IP("x/b")+"/32"))),
			netpol("x", "exact", sel("pod", "a"), egressOnly, egressRule(nil, ipPeer(IP("x/b")+"/32")))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return f != "x/a" || NS(to) == "x" }},
		{37, "ingress and egress controlled independently", []*networkingv1.NetworkPolicy{
			netpol("x", "deny-egress-a", sel("pod", "a"), egressOnly), netpol("x", "deny-ingress-b", sel("pod", "b"), ingressOnly)}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return f != "x/a" && to != "x/b" }},
		{38, "SCTP rule is not TCP", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(SCTP, 81))))}, []Probe{tcp81},
			func(f, to string, _ Probe) bool { return to != "x/a" }},
		{40, "UDP rule is not TCP", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(UDP, 81))))}, []Probe{tcp81},
			func(f, to string, _ Probe) bool { return to != "x/a" }},
		{41, "default namespace name label", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(nil, sel("kubernetes.io/metadata.name", "y"))))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return to != "x/a" || NS(f) == "y" }},
		{42, "egress NotIn on the default namespace label", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), egressOnly, egressRule(nil, podPeer(nil, expr("kubernetes.io/metadata.name", metav1.LabelSelectorOpNotIn, "y"))))}, []Probe{tcp80},
			func(f, to string, _ Probe) bool { return f != "x/a" || NS(to) != "y" }},
		{43, "UDP default-deny-ingress", []*networkingv1.NetworkPolicy{deny("x")}, []Probe{{80, UDP}},
			func(f, to string, _ Probe) bool { return NS(to) != "x" }},
		{44, "UDP ports", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(UDP, 81)), podPeer(nil, sel("ns", "y"))))}, []Probe{{80, UDP}, {81, UDP}, tcp81},
			func(f, to string, pr Probe) bool { return to != "x/a" || (pr == Probe{81, UDP} && NS(f) == "y") }},
		{45, "UDP pod in another namespace", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(UDP, 80)), podPeer(sel("pod", "b"), sel("ns", "y"))))}, []Probe{{80, UDP}},
			func(f, to string, _ Probe) bool { return to != "x/a" || f == "y/b" }},
		{46, "SCTP default-deny-ingress", []*networkingv1.NetworkPolicy{deny("x")}, []Probe{{80, SCTP}},
			func(f, to string, _ Probe) bool { return NS(to) != "x" }},
		{47, "SCTP ports", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(SCTP, 81)), podPeer(nil, sel("ns", "y"))))}, []Probe{{80, SCTP}, {81, SCTP}, tcp81},
			func(f, to string, pr Probe) bool { return to != "x/a" || (pr == Probe{81, SCTP} && NS(f) == "y") }},
		{48, "SCTP pod in another namespace", []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(SCTP, 80)), podPeer(sel("pod", "b"), sel("ns", "y"))))}, []Probe{{80, SCTP}},
			func(f, to string, _ Probe) bool { return to != "x/a" || f == "y/b" }},
	}
}

// Reachable applies the agent's reading of PolicyEndpoints: a pod is
// isolated in a direction when some object listing it isolates that
// direction, and then a packet passes when an entry of some object listing
// it allows the peer and port. Both ends must allow.
func Reachable(objects []v1alpha1.PolicyEndpoint, from, to string, pr Probe) bool {
	return allowedAt(objects, IP(to), IP(from), networkingv1.PolicyTypeIngress, pr) &&
		allowedAt(objects, IP(from), IP(to), networkingv1.PolicyTypeEgress, pr)
}

func allowedAt(objects []v1alpha1.PolicyEndpoint, podIP, peerIP string, dir networkingv1.PolicyType, pr Probe) bool {
	isolated, allowed := false, false
	peer := netip.MustParseAddr(peerIP)
	for _, o := range objects {
		if !slices.ContainsFunc(o.Spec.PodSelectorEndpoints, func(e v1alpha1.PodEndpoint) bool { return string(e.PodIP) == podIP }) {
			continue
		}
		if !slices.Contains(o.Spec.PodIsolation, dir) {
			continue
		}
		isolated = true
		entries := o.Spec.Ingress
		if dir == networkingv1.PolicyTypeEgress {
			entries = o.Spec.Egress
		}
		for _, e := range entries {
			if entryAllows(e, peer, pr) {
				allowed = true
			}
		}
	}
	return !isolated || allowed
}

func entryAllows(e v1alpha1.EndpointInfo, peer netip.Addr, pr Probe) bool {
	cidr, err := netip.ParsePrefix(string(e.CIDR))
	if err != nil || !cidr.Contains(peer) {
		return false
	}
	for _, x := range e.Except {
		if p, err := netip.ParsePrefix(string(x)); err == nil && p.Contains(peer) {
			return false
		}
	}
	if e.Ports == nil {
		return true
	}
	for _, p := range e.Ports {
		if *p.Protocol != pr.Proto {
			continue
		}
		if p.Port == nil || *p.Port == pr.Port || (p.EndPort != nil && *p.Port <= pr.Port && pr.Port <= *p.EndPort) {
			return true
		}
	}
	return false
}

// CheckReachability compares every pod pair (itself excluded) on every
// probe with expect, and fails t listing the wrong verdicts.
func CheckReachability(t testing.TB, objects []v1alpha1.PolicyEndpoint, probes []Probe, expect func(from, to string, pr Probe) bool) {
	t.Helper()
	var wrong []string
	for _, pr := range probes {
		for _, from := range Pods {
			for _, to := range Pods {
				if from == to {
					continue
				}
				if got, want := Reachable(objects, from, to, pr), expect(from, to, pr); got != want {
					wrong = append(wrong, fmt.Sprintf("%s -> %s %d/%s: got %v want %v", from, to, pr.Port, pr.Proto, got, want))
				}
			}
		}
	}
	if len(wrong) > 0 {
		t.Errorf("%d wrong verdicts:\n  %s", len(wrong), strings.Join(wrong, "\n  "))
	}
}
