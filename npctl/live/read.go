// Package live reads from a cluster what npctl explain needs: the objects
// a simulation uses and the PolicyEndpoints the controller wrote.
package live

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/npctl/manifest"
)

// Scheme knows the kinds Read lists.
func Scheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme, networkingv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	return scheme, nil
}

// NewClient connects with a kubeconfig: path (empty: $KUBECONFIG, then
// ~/.kube/config) and context (empty: the current one).
func NewClient(path, context string) (client.Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	config, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	scheme, err := Scheme()
	if err != nil {
		return nil, err
	}
	return client.New(config, client.Options{Scheme: scheme})
}

// Read lists the cluster's Namespaces, Pods with an IP (others cannot be
// probed), Services, EndpointSlices, NetworkPolicies and PolicyEndpoints.
func Read(ctx context.Context, c client.Reader) (*manifest.Objects, []v1alpha1.PolicyEndpoint, error) {
	var (
		namespaces corev1.NamespaceList
		pods       corev1.PodList
		services   corev1.ServiceList
		slices     discoveryv1.EndpointSliceList
		policies   networkingv1.NetworkPolicyList
		pes        v1alpha1.PolicyEndpointList
	)
	for _, l := range []struct {
		what string
		list client.ObjectList
	}{
		{"namespaces", &namespaces}, {"pods", &pods}, {"services", &services},
		{"endpointslices", &slices}, {"networkpolicies", &policies}, {"policyendpoints", &pes},
	} {
		if err := c.List(ctx, l.list); err != nil {
			return nil, nil, fmt.Errorf("listing %s: %w", l.what, err)
		}
	}
	objs := &manifest.Objects{
		Namespaces:      namespaces.Items,
		Services:        services.Items,
		EndpointSlices:  slices.Items,
		NetworkPolicies: policies.Items,
		Sources:         map[string]manifest.Source{},
	}
	for _, p := range pods.Items {
		if _, err := manifest.PodIPs(&p); err == nil {
			objs.Pods = append(objs.Pods, p)
		}
	}
	return objs, pes.Items, nil
}
