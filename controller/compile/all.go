package compile

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

// Objects is a snapshot of the cluster objects compilation reads.
type Objects struct {
	Namespaces      []corev1.Namespace
	Pods            []corev1.Pod
	Services        []corev1.Service
	EndpointSlices  []discoveryv1.EndpointSlice
	NetworkPolicies []networkingv1.NetworkPolicy
}

// NewIndexOf returns an index holding objs.
func NewIndexOf(objs Objects) *Index {
	x := NewIndex()
	for i := range objs.Namespaces {
		x.UpsertNamespace(&objs.Namespaces[i])
	}
	for i := range objs.Pods {
		x.UpsertPod(&objs.Pods[i])
	}
	for i := range objs.Services {
		x.UpsertService(&objs.Services[i])
	}
	for i := range objs.EndpointSlices {
		x.UpsertEndpointSlice(&objs.EndpointSlices[i])
	}
	for i := range objs.NetworkPolicies {
		x.UpsertPolicy(&objs.NetworkPolicies[i])
	}
	return x
}

// CompileAll compiles every policy of a snapshot: the entry point for
// offline use. Objects are ordered by policy, then name.
func CompileAll(objs Objects, opts Options) ([]v1alpha1.PolicyEndpoint, []Problem) {
	x := NewIndexOf(objs)
	var problems []Problem
	objects := make([]v1alpha1.PolicyEndpoint, 0, len(objs.NetworkPolicies)*4)
	for _, key := range x.Policies().Sorted() {
		r := x.Compile(key, opts)
		objects = append(objects, r.Objects...)
		problems = append(problems, r.Problems...)
	}
	return objects, problems
}
