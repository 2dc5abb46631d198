// Package v1alpha1 holds the PolicyEndpoint API (networking.k8s.aws/v1alpha1).
//
// The spec fields podSelector, policyRef, podIsolation, podSelectorEndpoints,
// ingress and egress keep the names and shapes of the object EKS uses.
// Palisade adds nodeName and chunk to the spec and a status:
//
//   - Each object concerns the pods of one node only (spec.nodeName, mirrored
//     in the label palisade.io/node), so a node agent watches with a label
//     selector and receives bytes in proportion to its own pods' policies.
//   - A policy whose rules do not fit one object is split into chunks that
//     share chunk.revision; an agent enforces a revision only once all
//     chunk.total chunks of it are present, and keeps the previous complete
//     revision until then.
//   - status reports what the node's agent programmed.
//
// +kubebuilder:object:generate=true
// +groupName=networking.k8s.aws
package v1alpha1

import (
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

// NetworkAddress is an IP address or a CIDR.
// +kubebuilder:validation:MaxLength=43
// +kubebuilder:validation:Pattern=`^([0-9.]+|[0-9a-fA-F:.]+)(/[0-9]{1,3})?$`
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
	CIDR   NetworkAddress   `json:"cidr"`
	Except []NetworkAddress `json:"except,omitempty"`
	Ports  []Port           `json:"ports,omitempty"`
}

// PodEndpoint is a pod the policy selects. A dual-stack pod appears once per IP.
type PodEndpoint struct {
	HostIP    NetworkAddress `json:"hostIP"`
	PodIP     NetworkAddress `json:"podIP"`
	Name      string         `json:"name"`
	Namespace string         `json:"namespace"`
}

// Chunk places an object in a policy split over several objects.
type Chunk struct {
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
	// +optional
	PodSelectorEndpoints []PodEndpoint `json:"podSelectorEndpoints,omitempty"`
	// +optional
	Ingress []EndpointInfo `json:"ingress,omitempty"`
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
