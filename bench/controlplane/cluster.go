// Package controlplane measures the controller's compiler on synthetic
// clusters (full compilation, one pod changing, PolicyEndpoint bytes) and
// the agent's programming time and memory.
package controlplane

import (
	"fmt"
	"net/netip"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/palisade-net/palisade/controller/compile"
)

// Cluster shape: pods spread over namespaces and nodes, apps and tiers so
// that each policy selects a slice of a namespace and peers with others.
const (
	podsPerNamespace = 200
	podsPerNode      = 50
	appsPerNamespace = 20
	// namespacesPerTeam keeps the peers of a policy (the web pods of its
	// team) the same size whatever the cluster size.
	namespacesPerTeam = 2
)

var tiers = []string{"web", "api", "db"}

// Cluster builds a deterministic cluster of pods and policies.
func Cluster(pods, policies int) compile.Objects {
	namespaces := max(1, pods/podsPerNamespace)
	var objs compile.Objects
	for n := range namespaces {
		objs.Namespaces = append(objs.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name:   namespaceName(n),
			Labels: map[string]string{"team": "team-" + strconv.Itoa(n/namespacesPerTeam)},
		}})
	}
	for i := range pods {
		objs.Pods = append(objs.Pods, Pod(i, namespaces))
	}
	for k := range policies {
		objs.NetworkPolicies = append(objs.NetworkPolicies, Policy(k, namespaces))
	}
	return objs
}

func namespaceName(n int) string { return "ns-" + strconv.Itoa(n) }

// Pod is pod i of a cluster with the given number of namespaces.
func Pod(i, namespaces int) corev1.Pod {
	within := i / namespaces
	ip := podIP(i).String()
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespaceName(i % namespaces),
			Name:      "pod-" + strconv.Itoa(i),
			Labels: map[string]string{
				"app":  "app-" + strconv.Itoa(within%appsPerNamespace),
				"tier": tiers[within%len(tiers)],
			},
		},
		Spec: corev1.PodSpec{
			NodeName:   "node-" + strconv.Itoa(i/podsPerNode),
			Containers: []corev1.Container{{Name: "main", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
		},
		Status: corev1.PodStatus{
			Phase:  corev1.PodRunning,
			HostIP: hostIP(i / podsPerNode).String(),
			PodIP:  ip,
			PodIPs: []corev1.PodIP{{IP: ip}},
		},
	}
}

func podIP(i int) netip.Addr {
	base := netip.MustParseAddr("10.0.0.0").As4()
	n := uint32(base[0])<<24 + uint32(i) + 1
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func hostIP(node int) netip.Addr {
	return netip.AddrFrom4([4]byte{192, 168, byte(node >> 8), byte(node)})
}

// Policy is policy k: it selects one app of a namespace, admits web pods
// of its team's namespaces on a named port and a port range, and may send
// to the next app and to the pod network minus one block on 443.
func Policy(k, namespaces int) networkingv1.NetworkPolicy {
	n := k % namespaces
	app := (k / namespaces) % appsPerNamespace
	tcp := corev1.ProtocolTCP
	port := func(p intstr.IntOrString) *intstr.IntOrString { return &p }
	rangeEnd := int32(9100)
	return networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespaceName(n), Name: "policy-" + strconv.Itoa(k), UID: types.UID("uid-policy-" + strconv.Itoa(k))},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "app-" + strconv.Itoa(app)}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}},
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "team-" + strconv.Itoa(n/namespacesPerTeam)}},
				}},
				Ports: []networkingv1.NetworkPolicyPort{
					{Protocol: &tcp, Port: port(intstr.FromString("http"))},
					{Protocol: &tcp, Port: port(intstr.FromInt32(9000)), EndPort: &rangeEnd},
				},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{
					PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "app-" + strconv.Itoa((app+1)%appsPerNamespace)}},
				}}},
				{
					To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.200.0.0/16"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(intstr.FromInt32(443))}},
				},
			},
		},
	}
}

// Relabelled is pod i moved to another app, the single change the
// change-latency measurement applies.
func Relabelled(i, namespaces int) corev1.Pod {
	pod := Pod(i, namespaces)
	within := i / namespaces
	pod.Labels["app"] = "app-" + strconv.Itoa((within+1)%appsPerNamespace)
	return pod
}

func (s Size) String() string { return fmt.Sprintf("pods=%d/policies=%d", s.Pods, s.Policies) }

// Size is one point of the matrix.
type Size struct{ Pods, Policies int }
