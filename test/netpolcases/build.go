package netpolcases

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/palisade-net/palisade/test/reachability"
)

// The helpers below keep the cases close to how the upstream file reads.

const namespaceNameLabel = corev1.LabelMetadataName

var (
	tcp  = corev1.ProtocolTCP
	udp  = corev1.ProtocolUDP
	sctp = corev1.ProtocolSCTP
)

type policyOption func(*networkingv1.NetworkPolicy)

// newPolicy is a policy in namespace selecting pods with target.
func newPolicy(namespace, name string, target metav1.LabelSelector, options ...policyOption) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: target},
	}
	for _, option := range options {
		option(p)
	}
	return p
}

// ingress makes the policy an ingress policy with these rules (none: deny).
func ingress(rules ...networkingv1.NetworkPolicyIngressRule) policyOption {
	return func(p *networkingv1.NetworkPolicy) {
		if p.Spec.Ingress == nil {
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{}
			p.Spec.PolicyTypes = append(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		}
		p.Spec.Ingress = append(p.Spec.Ingress, rules...)
	}
}

// egress makes the policy an egress policy with these rules (none: deny).
func egress(rules ...networkingv1.NetworkPolicyEgressRule) policyOption {
	return func(p *networkingv1.NetworkPolicy) {
		if p.Spec.Egress == nil {
			p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{}
			p.Spec.PolicyTypes = append(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
		p.Spec.Egress = append(p.Spec.Egress, rules...)
	}
}

func from(peers ...networkingv1.NetworkPolicyPeer) networkingv1.NetworkPolicyIngressRule {
	return networkingv1.NetworkPolicyIngressRule{From: peers}
}

func to(peers ...networkingv1.NetworkPolicyPeer) networkingv1.NetworkPolicyEgressRule {
	return networkingv1.NetworkPolicyEgressRule{To: peers}
}

func ingressOnPorts(ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyIngressRule {
	return networkingv1.NetworkPolicyIngressRule{Ports: ports}
}

func egressOnPorts(ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyEgressRule {
	return networkingv1.NetworkPolicyEgressRule{Ports: ports}
}

// selectAll is the empty selector.
func selectAll() metav1.LabelSelector { return metav1.LabelSelector{} }

// matchLabels selects by label key, value pairs.
func matchLabels(keyValues ...string) metav1.LabelSelector {
	labels := map[string]string{}
	for i := 0; i+1 < len(keyValues); i += 2 {
		labels[keyValues[i]] = keyValues[i+1]
	}
	return metav1.LabelSelector{MatchLabels: labels}
}

func matchExpression(key string, operator metav1.LabelSelectorOperator, values ...string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: operator, Values: values}}}
}

func podPeer(s metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: &s}
}

func namespacePeer(s metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: &s}
}

func podInNamespacePeer(namespaces, pods metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: &namespaces, PodSelector: &pods}
}

func ipBlockPeer(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func numberedPort(protocol *corev1.Protocol, port int32) networkingv1.NetworkPolicyPort {
	p := intstr.FromInt32(port)
	return networkingv1.NetworkPolicyPort{Protocol: protocol, Port: &p}
}

func namedPort(protocol *corev1.Protocol, name string) networkingv1.NetworkPolicyPort {
	p := intstr.FromString(name)
	return networkingv1.NetworkPolicyPort{Protocol: protocol, Port: &p}
}

func protocolOnly(protocol corev1.Protocol) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: &protocol}
}

func create(p *networkingv1.NetworkPolicy) Action { return Action{CreatePolicy: p} }
func update(p *networkingv1.NetworkPolicy) Action { return Action{UpdatePolicy: p} }

func check(port int32, protocol corev1.Protocol, expected *reachability.Matrix) Check {
	return Check{Port: port, Protocol: protocol, Expected: expected}
}

// hostPrefix is the /32 or /128 of a pod address.
func hostPrefix(a netip.Addr) string {
	return netip.PrefixFrom(a, a.BitLen()).String()
}

// largePrefixAround is the /4 holding a (upstream makeLargeCIDRForIP).
func largePrefixAround(a netip.Addr) string {
	p, _ := a.Prefix(4)
	return p.String()
}

// everyone matches every pod in a reachability override.
var everyone = reachability.Peer{}

func inNamespace(ns string) reachability.Peer { return reachability.Peer{Namespace: ns} }

func pod(ns, name string) reachability.Peer { return reachability.Peer{Namespace: ns, Pod: name} }
