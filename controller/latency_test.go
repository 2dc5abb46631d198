package controller

import (
	"context"
	"slices"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

// BenchmarkChangeToPolicyEndpoint measures, on a real apiserver, the time
// from a pod relabel (the pod becomes or stops being a peer) to the watch
// event of the updated PolicyEndpoint, and reports its median and 90th
// percentile.
func BenchmarkChangeToPolicyEndpoint(b *testing.B) {
	c, env := startController(b)
	ctx := context.Background()
	x := newNamespace(b, c, "lat-x")
	createPod(b, c, podSpec{ns: x, name: "web", node: "n1", labels: labels("app", "web"), ips: []string{"10.6.0.1"}})
	peer := createPod(b, c, podSpec{ns: x, name: "client", node: "n1", labels: labels("app", "client"), ips: []string{"10.6.0.2"}})
	create(b, c, netpol(x, "web", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("role", "client")}}}}}))
	eventually(b, c, x, "web", "node=n1 iso=[Ingress] pods=[web@10.6.0.1] in=[] eg=[]")

	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	w, err := wc.Watch(ctx, &v1alpha1.PolicyEndpointList{}, client.InNamespace(x))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()

	var latencies []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		allowed := i%2 == 0
		if allowed {
			peer.Labels["role"] = "client"
		} else {
			delete(peer.Labels, "role")
		}
		start := time.Now()
		if err := c.Update(ctx, peer); err != nil {
			b.Fatal(err)
		}
		for {
			ev := <-w.ResultChan()
			o, ok := ev.Object.(*v1alpha1.PolicyEndpoint)
			if !ok || ev.Type != watch.Modified {
				continue
			}
			if (len(o.Spec.Ingress) == 1) == allowed {
				latencies = append(latencies, time.Since(start))
				break
			}
		}
	}
	b.StopTimer()
	slices.Sort(latencies)
	if n := len(latencies); n > 0 {
		b.ReportMetric(float64(latencies[n/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(latencies[n*9/10].Microseconds())/1000, "p90-ms")
	}
}
