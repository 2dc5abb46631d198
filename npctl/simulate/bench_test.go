package simulate_test

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/palisade-net/palisade/npctl/manifest"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
)

// syntheticCluster has namespaces of pods serving TCP 80 and 443, each
// namespace default-deny for ingress but for its own pods on 80 and for
// pods labelled role=client of every namespace on 443.
func syntheticCluster(namespaces, podsPerNamespace int) *manifest.Objects {
	objs := &manifest.Objects{Sources: map[string]manifest.Source{}}
	for n := range namespaces {
		ns := fmt.Sprintf("ns%d", n)
		objs.Namespaces = append(objs.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		for p := range podsPerNamespace {
			role := "server"
			if p%4 == 0 {
				role = "client"
			}
			objs.Pods = append(objs.Pods, corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("pod%d", p), Labels: map[string]string{"role": role}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{
					{ContainerPort: 80}, {ContainerPort: 443}}}}},
				Status: corev1.PodStatus{PodIP: netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), byte(p + 1)}).String()},
			})
		}
		port := func(p int) networkingv1.NetworkPolicyPort {
			v := intstr.FromInt32(int32(p))
			return networkingv1.NetworkPolicyPort{Port: &v}
		}
		objs.NetworkPolicies = append(objs.NetworkPolicies,
			networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deny"},
				Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}},
			networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "allow"},
				Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
					{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}, Ports: []networkingv1.NetworkPolicyPort{port(80)}},
					{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
						Ports: []networkingv1.NetworkPolicyPort{port(443)}},
				}}})
	}
	return objs
}

// BenchmarkSimulate measures compiling a synthetic cluster and judging its
// full matrix (every pod to every other on 80 and 443) with the reference
// evaluator; probes/s is the matrix rate.
func BenchmarkSimulate(b *testing.B) {
	for _, size := range []struct{ namespaces, pods int }{{4, 10}, {10, 20}} {
		objs := syntheticCluster(size.namespaces, size.pods)
		probes, err := probe.Plan(objs, probe.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%dpods/build", size.namespaces*size.pods), func(b *testing.B) {
			for b.Loop() {
				if _, err := simulate.Build(objs); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("%dpods/matrix", size.namespaces*size.pods), func(b *testing.B) {
			model, err := simulate.Build(objs)
			if err != nil {
				b.Fatal(err)
			}
			denied := 0
			for b.Loop() {
				out, err := model.Run(simulate.Reference{}, probes)
				if err != nil {
					b.Fatal(err)
				}
				denied = 0
				for _, o := range out {
					if !o.Allowed {
						denied++
					}
				}
			}
			if denied == 0 || denied == len(probes) {
				b.Fatalf("%d of %d probes denied: the policies should split them", denied, len(probes))
			}
			b.ReportMetric(float64(len(probes))*float64(b.N)/b.Elapsed().Seconds(), "probes/s")
			b.ReportMetric(float64(len(probes)), "probes")
		})
	}
}
