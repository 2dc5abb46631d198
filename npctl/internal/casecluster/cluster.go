// Package casecluster renders the upstream NetworkPolicy scenarios of
// test/netpolcases as manifests, for the npctl tests.
package casecluster

import (
	"bytes"
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/palisade-net/palisade/test/netpolcases"
	"github.com/palisade-net/palisade/test/reachability"
)

// Cluster is the state an upstream case builds step by step: the
// namespaces x, y, z and pods a, b, c of test/netpolcases, with IPs.
type Cluster struct {
	ips             map[string]netip.Addr
	podLabels       map[string]map[string]string
	namespaceLabels map[string]map[string]string
	policies        map[string]*networkingv1.NetworkPolicy
}

// New returns the cluster every case starts from, with IPv4 pod addresses.
func New() *Cluster { return NewFamily(4) }

// NewFamily returns the cluster with pod addresses of IP family 4 or 6.
func NewFamily(family int) *Cluster {
	c := &Cluster{ips: map[string]netip.Addr{}, podLabels: map[string]map[string]string{},
		namespaceLabels: map[string]map[string]string{}, policies: map[string]*networkingv1.NetworkPolicy{}}
	for i, ns := range netpolcases.Namespaces {
		c.namespaceLabels[ns] = netpolcases.NamespaceLabels(ns)
		for j, name := range netpolcases.PodNames {
			pod := ns + "/" + name
			c.ips[pod] = netip.AddrFrom4([4]byte{10, 244, byte(128 + i), byte(10 + j)})
			if family == 6 {
				c.ips[pod] = netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x00, 2: 0x02, 3: 0x44, 7: byte(128 + i), 15: byte(10 + j)})
			}
			c.podLabels[pod] = netpolcases.PodLabels(pod)
		}
	}
	return c
}

// Apply performs one action of a case.
func (c *Cluster) Apply(a netpolcases.Action) error {
	switch {
	case a.CreatePolicy != nil:
		c.policies[a.CreatePolicy.Namespace+"/"+a.CreatePolicy.Name] = a.CreatePolicy
	case a.UpdatePolicy != nil:
		c.policies[a.UpdatePolicy.Namespace+"/"+a.UpdatePolicy.Name] = a.UpdatePolicy
	case a.DeleteAllPolicies:
		clear(c.policies)
	case a.NamespaceLabel != nil:
		c.namespaceLabels[a.NamespaceLabel.Namespace][a.NamespaceLabel.Key] = a.NamespaceLabel.Value
	case a.PodLabels != nil:
		for k, v := range a.PodLabels.Labels {
			c.podLabels[a.PodLabels.Pod][k] = v
		}
	default:
		return fmt.Errorf("unknown action %+v", a)
	}
	return nil
}

// IP returns a pod's address ("ns/name").
func (c *Cluster) IP(pod string) netip.Addr { return c.ips[pod] }

// Manifests renders the cluster as one multi-document YAML stream, the way
// a user would hand it to npctl.
func (c *Cluster) Manifests() ([]byte, error) {
	var docs []any
	for _, ns := range netpolcases.Namespaces {
		docs = append(docs, &corev1.Namespace{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: c.namespaceLabels[ns]},
		})
	}
	var ports []corev1.ContainerPort
	for _, port := range netpolcases.Ports {
		for _, protocol := range netpolcases.Protocols {
			ports = append(ports, corev1.ContainerPort{Name: netpolcases.ContainerPortName(port, protocol), ContainerPort: port, Protocol: protocol})
		}
	}
	pods := make([]string, 0, len(c.ips))
	for pod := range c.ips {
		pods = append(pods, pod)
	}
	sort.Strings(pods)
	for _, pod := range pods {
		docs = append(docs, &corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Namespace: reachability.Namespace(pod), Name: reachability.Name(pod), Labels: c.podLabels[pod]},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agnhost", Image: "agnhost", Ports: ports}}},
			Status:     corev1.PodStatus{PodIP: c.ips[pod].String()},
		})
	}
	keys := make([]string, 0, len(c.policies))
	for k := range c.policies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		np := c.policies[k].DeepCopy()
		np.TypeMeta = metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"}
		docs = append(docs, np)
	}
	var b bytes.Buffer
	for _, d := range docs {
		y, err := yaml.Marshal(d)
		if err != nil {
			return nil, err
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.Bytes(), nil
}
