// Package v1alpha1 holds the PolicyEndpoint API (networking.k8s.aws/v1alpha1).
//
// The spec fields podSelector, policyRef, podIsolation, podSelectorEndpoints,
// ingress and egress keep the names and shapes of the object EKS uses.
// Palisade adds nodeName and chunk to the spec and a status.
//
// # Layout: one chunk set per (policy, node, group of pods)
//
// The controller writes, for every NetworkPolicy, one logical object per
// node that runs pods the policy selects (spec.nodeName, mirrored in the
// label palisade.io/node). Target pods on a node that resolve the policy's
// ingress named ports to different numbers get separate logical objects,
// so every object's ingress rules hold for all of its pods. A node agent
// watches PolicyEndpoints with the label selector palisade.io/node=<node>:
// the apiserver filters at the source, so the bytes an agent receives grow
// with the policies that select its own pods (times the size of their peer
// lists), not with the number of nodes, pods or policies in the cluster. A
// pod change on one node rewrites only objects whose content changed: the
// objects of the nodes hosting the policy's targets when the pod is a peer,
// and only its own node's object when it is a target.
//
// The agent's view of one pod is the union of the ingress (egress) entries
// of every PolicyEndpoint listing the pod in podSelectorEndpoints; the pod is
// isolated in a direction when any such object lists that direction in
// podIsolation.
//
// # Chunking
//
// A logical object larger than the controller's bound (pods plus entries)
// is split into chunks: objects sharing spec.chunk.set, each with index and
// total and a revision that fingerprints the whole logical object. Chunk i
// of a set always has the same name, so an update rewrites the chunks in
// place. The rule, implemented by CompleteRevision: an agent enforces a
// revision only when every chunk 0..total-1 carries it; until then it keeps
// the last complete revision it enforced (with none, the set's pods are
// isolated and the set allows nothing). A node therefore never enforces
// part of a policy as if it were the whole. Objects that fit are one chunk
// (total 1).
//
// # Status
//
// The node agent reports, per object, the generation it programmed
// (status.observedGeneration) and a Programmed condition. Whether a policy
// is enforced everywhere is visible with
//
//	kubectl get pe -l palisade.io/policy=<name>
//
// whose columns show per node the object's generation, the observed one and
// Programmed.
// +kubebuilder:object:generate=true
// +groupName=networking.k8s.aws
package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	GroupVersion  = schema.GroupVersion{Group: "networking.k8s.aws", Version: "v1alpha1"}
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}
	AddToScheme   = SchemeBuilder.AddToScheme
)

// NodeLabel carries spec.nodeName so that agents can select their objects.
const NodeLabel = "palisade.io/node"

// PolicyNameLabel carries spec.policyRef.name (the namespace is the object's).
const PolicyNameLabel = "palisade.io/policy"

// LabelValue fits a node or policy name into a label value (63 characters
// at most): a longer name keeps a prefix and gets a hash of the whole, so
// selecting by label stays exact in practice, and the spec's fields stay
// authoritative.
func LabelValue(name string) string {
	if len(name) <= 63 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return strings.TrimRight(name[:52], "-.") + "-" + hex.EncodeToString(sum[:5])
}

// Size limits of the schema (they keep the CEL validation cost in budget).
const (
	// MaxListItems bounds podSelectorEndpoints, ingress and egress.
	MaxListItems = 2000
	// MaxExcepts bounds an entry's except list.
	MaxExcepts = 32
	// MaxPorts bounds an entry's port list.
	MaxPorts = 64
)

// NetworkAddress is an IP address or a CIDR.
// +kubebuilder:validation:MaxLength=43
// +kubebuilder:validation:Pattern=`^([0-9.]+|[0-9a-fA-F:.]+)(/[0-9]{1,3})?$`
// +kubebuilder:validation:XValidation:rule="isIP(self) || isCIDR(self)",message="must be an IP address or a CIDR"
type NetworkAddress string

// PolicyReference names the NetworkPolicy an object was compiled from.
type PolicyReference struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// Port is a protocol with an optional port or port range.
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || (has(self.port) && self.endPort >= self.port)",message="endPort requires port and must be >= port"
type Port struct {
	// +kubebuilder:validation:Enum=TCP;UDP;SCTP
	// +optional
	Protocol *corev1.Protocol `json:"protocol,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port *int32 `json:"port,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	EndPort *int32 `json:"endPort,omitempty"`
}

// EndpointInfo is one resolved peer: a CIDR minus excepts, on ports.
// No ports means every protocol and port.
type EndpointInfo struct {
	CIDR NetworkAddress `json:"cidr"`
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Except []NetworkAddress `json:"except,omitempty"`
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Ports []Port `json:"ports,omitempty"`
}

// PodEndpoint is a pod the policy selects. A dual-stack pod appears once per IP.
type PodEndpoint struct {
	// HostIP is the node's address; empty until the kubelet reports it.
	// +optional
	HostIP    NetworkAddress `json:"hostIP,omitempty"`
	PodIP     NetworkAddress `json:"podIP"`
	Name      string         `json:"name"`
	Namespace string         `json:"namespace"`
}

// Chunk places an object in a policy split over several objects.
// The chunks of one revision, ordered by index, concatenate (pods, ingress,
// egress) into one logical object; see CompleteRevision.
// +kubebuilder:validation:XValidation:rule="self.index < self.total",message="index must be < total"
type Chunk struct {
	// Set is shared by every chunk of one logical object (one policy, node
	// and group of pods), whatever the revision.
	// +kubebuilder:validation:MinLength=1
	Set string `json:"set"`
	// +kubebuilder:validation:Minimum=0
	Index int32 `json:"index"`
	// +kubebuilder:validation:Minimum=1
	Total int32 `json:"total"`
	// Revision is shared by every chunk of one compilation of the policy.
	Revision string `json:"revision"`
}

type PolicyEndpointSpec struct {
	// PodSelector is the policy's pod selector (nil selects all pods of the namespace).
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	PolicyRef   PolicyReference       `json:"policyRef"`
	// PodIsolation lists the directions the policy isolates.
	// +optional
	PodIsolation []networkingv1.PolicyType `json:"podIsolation,omitempty"`
	// +kubebuilder:validation:MaxItems=2000
	// +optional
	PodSelectorEndpoints []PodEndpoint `json:"podSelectorEndpoints,omitempty"`
	// +kubebuilder:validation:MaxItems=2000
	// +optional
	Ingress []EndpointInfo `json:"ingress,omitempty"`
	// +kubebuilder:validation:MaxItems=2000
	// +optional
	Egress []EndpointInfo `json:"egress,omitempty"`
	// NodeName is the node whose pods this object concerns.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// +optional
	Chunk *Chunk `json:"chunk,omitempty"`
}

type PolicyEndpointStatus struct {
	// ObservedGeneration is the generation the node agent last programmed.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Programmed is True once the node's dataplane enforces this generation.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=pe
// +kubebuilder:printcolumn:name="Policy",type=string,JSONPath=`.spec.policyRef.name`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.nodeName`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Generation",type=integer,JSONPath=`.metadata.generation`
// +kubebuilder:printcolumn:name="Observed",type=integer,JSONPath=`.status.observedGeneration`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PolicyEndpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   PolicyEndpointSpec   `json:"spec,omitempty"`
	Status PolicyEndpointStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true
type PolicyEndpointList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PolicyEndpoint `json:"items"`
}

func init() {
	SchemeBuilder.Register(&PolicyEndpoint{}, &PolicyEndpointList{})
}
