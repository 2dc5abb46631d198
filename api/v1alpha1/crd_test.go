package v1alpha1_test

import (
	"context"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func ptr[T any](v T) *T { return &v }

// TestCRDValidation checks that the apiserver rejects malformed objects
// with the CRD's schema and CEL rules, and accepts well-formed ones.
func TestCRDValidation(t *testing.T) {
	env := testenv.Shared(t)
	ns := env.Namespace(t)
	valid := func() *v1alpha1.PolicyEndpoint {
		return &v1alpha1.PolicyEndpoint{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "pe-", Namespace: ns},
			Spec: v1alpha1.PolicyEndpointSpec{
				PolicyRef:            v1alpha1.PolicyReference{Name: "p", Namespace: ns},
				NodeName:             "n1",
				PodSelectorEndpoints: []v1alpha1.PodEndpoint{{PodIP: "10.0.0.1", HostIP: "192.168.0.1", Name: "a", Namespace: ns}},
				Ingress: []v1alpha1.EndpointInfo{
					{CIDR: "10.0.0.0/8", Except: []v1alpha1.NetworkAddress{"10.1.0.0/16"}, Ports: []v1alpha1.Port{{Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(80)), EndPort: ptr(int32(90))}}},
					{CIDR: "fd00::/64"}, {CIDR: "10.0.0.7"},
				},
				Chunk: &v1alpha1.Chunk{Set: "s", Index: 0, Total: 1, Revision: "r"},
			},
		}
	}
	cases := []struct {
		name    string
		mutate  func(*v1alpha1.PolicyEndpoint)
		message string // empty: accepted
	}{
		{"valid", func(*v1alpha1.PolicyEndpoint) {}, ""},
		{"prefix length out of range", func(p *v1alpha1.PolicyEndpoint) { p.Spec.Ingress[0].CIDR = "10.0.0.0/33" }, "must be an IP address or a CIDR"},
		{"not an address", func(p *v1alpha1.PolicyEndpoint) { p.Spec.Ingress[0].CIDR = "10.0.0.300" }, "must be an IP address or a CIDR"},
		{"bad except", func(p *v1alpha1.PolicyEndpoint) { p.Spec.Ingress[0].Except[0] = "fd00::/200" }, "must be an IP address or a CIDR"},
		{"bad pod IP", func(p *v1alpha1.PolicyEndpoint) { p.Spec.PodSelectorEndpoints[0].PodIP = "1.2.3" }, "must be an IP address or a CIDR"},
		{"endPort below port", func(p *v1alpha1.PolicyEndpoint) { p.Spec.Ingress[0].Ports[0].EndPort = ptr(int32(70)) }, "endPort requires port"},
		{"endPort without port", func(p *v1alpha1.PolicyEndpoint) { p.Spec.Ingress[0].Ports[0].Port = nil }, "endPort requires port"},
		{"port zero", func(p *v1alpha1.PolicyEndpoint) { p.Spec.Ingress[0].Ports[0].Port = ptr(int32(0)) }, "should be greater than or equal to 1"},
		{"port too high", func(p *v1alpha1.PolicyEndpoint) { p.Spec.Ingress[0].Ports[0].EndPort = ptr(int32(70000)) }, "should be less than or equal to 65535"},
		{"unknown protocol", func(p *v1alpha1.PolicyEndpoint) { p.Spec.Ingress[0].Ports[0].Protocol = ptr(corev1.Protocol("ICMP")) }, "Unsupported value"},
		{"chunk index past total", func(p *v1alpha1.PolicyEndpoint) { p.Spec.Chunk.Index = 1 }, "index must be < total"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pe := valid()
			tc.mutate(pe)
			err := env.Client.Create(context.Background(), pe)
			switch {
			case tc.message == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.message != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tc.message)
			case tc.message != "" && !strings.Contains(err.Error(), tc.message):
				t.Fatalf("error %v, want one containing %q", err, tc.message)
			}
		})
	}
}
