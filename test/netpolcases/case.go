// Package netpolcases is the port of the upstream Kubernetes NetworkPolicy
// end-to-end scenarios (k8s.io/kubernetes v1.36.0,
// test/e2e/network/netpol/network_policy.go) as data: the policies each
// case applies and the reachability matrix it expects, over namespaces x,
// y, z (labelled ns=<name>) and pods a, b, c (labelled pod=<name>) serving
// ports 80 and 81 on TCP and UDP under the named ports serve-<port>-<proto>.
package netpolcases

import (
	"net/netip"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/palisade-net/palisade/test/reachability"
)

// Namespaces and PodNames make the cluster every case runs in.
var (
	Namespaces = []string{"x", "y", "z"}
	PodNames   = []string{"a", "b", "c"}
	Ports      = []int32{80, 81}
	Protocols  = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}
)

// NamespaceLabels are the labels every case starts from (the apiserver adds
// kubernetes.io/metadata.name itself).
func NamespaceLabels(namespace string) map[string]string {
	return map[string]string{"ns": namespace}
}

// PodLabels are the labels every case starts from; pod is "ns/name".
func PodLabels(pod string) map[string]string {
	return map[string]string{"pod": reachability.Name(pod)}
}

// ContainerPortName is the upstream name of a served port, e.g. serve-80-tcp.
func ContainerPortName(port int32, protocol corev1.Protocol) string {
	names := map[corev1.Protocol]string{corev1.ProtocolTCP: "tcp", corev1.ProtocolUDP: "udp", corev1.ProtocolSCTP: "sctp"}
	return "serve-" + strconv.Itoa(int(port)) + "-" + names[protocol]
}

// Case is one upstream scenario.
type Case struct {
	// Number is the position in the upstream file (1..48).
	Number int
	// Context is the upstream context: TCP, UDP or SCTP.
	Context string
	Name    string
	// Pods are the pods the case probes, "ns/name".
	Pods []string
	// SkipReason, when set, says why the case cannot run on real sockets
	// and where it is covered instead.
	SkipReason string
	// Steps builds the case's steps; ip gives a pod's address for the
	// cases that put pod IPs into ipBlocks.
	Steps func(ip func(pod string) netip.Addr) []Step
}

// Step applies Actions in order, then expects every Check to hold.
type Step struct {
	Actions []Action
	Checks  []Check
}

// Action changes the cluster; exactly one field is set.
type Action struct {
	CreatePolicy      *networkingv1.NetworkPolicy
	UpdatePolicy      *networkingv1.NetworkPolicy
	DeleteAllPolicies bool
	NamespaceLabel    *NamespaceLabel
	PodLabels         *PodLabelChange
}

// NamespaceLabel adds (or overwrites) one label of a namespace.
type NamespaceLabel struct {
	Namespace, Key, Value string
}

// PodLabelChange adds (or overwrites) labels of Pod ("ns/name").
type PodLabelChange struct {
	Pod    string
	Labels map[string]string
}

// Check is the expected matrix on one port and protocol.
type Check struct {
	Port     int32
	Protocol corev1.Protocol
	Expected *reachability.Matrix
}
