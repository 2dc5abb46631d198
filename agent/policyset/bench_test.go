package policyset

import (
	"fmt"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

// BenchmarkBuildNode is the agent's per-event work on a busy node: 110
// pods, 50 policies of 200 ingress rules each, 5 pods per policy.
func BenchmarkBuildNode(b *testing.B) {
	const pods, policies, rules = 110, 50, 200
	var pes []v1alpha1.PolicyEndpoint
	var nps []networkingv1.NetworkPolicy
	var podList []Pod
	for i := 0; i < pods; i++ {
		podList = append(podList, Pod{Namespace: "ns", Name: fmt.Sprintf("p%d", i), Labels: map[string]string{"app": fmt.Sprintf("a%d", i%policies)}})
	}
	for p := 0; p < policies; p++ {
		name := fmt.Sprintf("a%d", p)
		var ingress []v1alpha1.EndpointInfo
		for r := 0; r < rules; r++ {
			ingress = append(ingress, v1alpha1.EndpointInfo{CIDR: v1alpha1.NetworkAddress(fmt.Sprintf("10.%d.%d.0/24", p, r)), Ports: []v1alpha1.Port{{Port: ptr(int32(80 + r%3))}}})
		}
		var listed []string
		for i := p; i < pods; i += policies {
			listed = append(listed, fmt.Sprintf("p%d", i))
		}
		pes = append(pes, pe("ns", name, name+"-x", nil, ingressOnly, listed, ingress, nil))
		nps = append(nps, networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Spec:       networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}},
		})
	}
	for i := range pes {
		pes[i].UID = types.UID(fmt.Sprintf("uid-%d", i))
		pes[i].Generation = 1
	}
	var selections []Selection
	for i := range nps {
		s, err := SelectionOf(&nps[i])
		if err != nil {
			b.Fatal(err)
		}
		selections = append(selections, s)
	}
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			r, _ := Build(pes, nps, podList)
			if len(r.Endpoints) != pods {
				b.Fatalf("%d endpoints", len(r.Endpoints))
			}
		}
	})
	// What the agent does on a pod or interface event: nothing changed in
	// the PolicyEndpoints, compiled sets are reused.
	b.Run("reuse", func(b *testing.B) {
		sets, _ := Assemble(pes, nil)
		prev := Compute(Input{Sets: sets, Selections: selections, Pods: podList})
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			sets, _ = Assemble(pes, sets)
			r := Compute(Input{Sets: sets, Selections: selections, Pods: podList, Previous: &prev})
			if len(r.Endpoints) != pods {
				b.Fatalf("%d endpoints", len(r.Endpoints))
			}
			prev = r
		}
	})
}
