package compile

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/controller/internal/netpolcases"
)

// incremental keeps the compiled objects of every policy, recompiling only
// the policies each change reports.
type incremental struct {
	x       *Index
	results map[types.NamespacedName][]v1alpha1.PolicyEndpoint
}

func newIncremental(objs Objects) *incremental {
	s := &incremental{x: NewIndexOf(objs), results: map[types.NamespacedName][]v1alpha1.PolicyEndpoint{}}
	s.apply(s.x.Policies())
	return s
}

func (s *incremental) apply(affected PolicyKeys) {
	for k := range affected {
		s.results[k] = s.x.Compile(k, Options{}).Objects
	}
}

func (s *incremental) objects() []v1alpha1.PolicyEndpoint {
	var out []v1alpha1.PolicyEndpoint
	for _, objs := range s.results {
		out = append(out, objs...)
	}
	return out
}

func upstreamPod(t *testing.T, objs Objects, ns, name string) *corev1.Pod {
	for i := range objs.Pods {
		if objs.Pods[i].Namespace == ns && objs.Pods[i].Name == name {
			return objs.Pods[i].DeepCopy()
		}
	}
	t.Fatalf("no pod %s/%s", ns, name)
	return nil
}

func TestUpstreamUpdateScenarios(t *testing.T) {
	tcp80, tcp81 := netpolcases.Probe{Port: 80, Proto: TCP}, netpolcases.Probe{Port: 81, Proto: TCP}
	t.Run("20 updated policy", func(t *testing.T) {
		s := newIncremental(upstreamWorld())
		s.apply(s.x.UpsertPolicy(netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(TCP, 80)), podPeer(nil, sel("ns", "y"))))))
		netpolcases.CheckReachability(t, s.objects(), []netpolcases.Probe{tcp81}, func(f, to string, _ netpolcases.Probe) bool { return to != "x/a" })
		s.apply(s.x.UpsertPolicy(netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(TCP, 81)), podPeer(nil, sel("ns", "y"))))))
		netpolcases.CheckReachability(t, s.objects(), []netpolcases.Probe{tcp81}, func(f, to string, _ netpolcases.Probe) bool { return to != "x/a" || netpolcases.NS(f) == "y" })
	})
	t.Run("21 ingress from updated namespace", func(t *testing.T) {
		s := newIncremental(upstreamWorld())
		s.apply(s.x.UpsertPolicy(netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(nil, sel("ns2", "updated"))))))
		netpolcases.CheckReachability(t, s.objects(), []netpolcases.Probe{tcp80}, func(f, to string, _ netpolcases.Probe) bool { return to != "x/a" })
		s.apply(s.x.UpsertNamespace(namespace("y", "ns", "y", "ns2", "updated")))
		netpolcases.CheckReachability(t, s.objects(), []netpolcases.Probe{tcp80}, func(f, to string, _ netpolcases.Probe) bool { return to != "x/a" || netpolcases.NS(f) == "y" })
	})
	t.Run("22 ingress from updated pod", func(t *testing.T) {
		objs := upstreamWorld()
		s := newIncremental(objs)
		s.apply(s.x.UpsertPolicy(netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(sel("pod2", "updated"), nil)))))
		netpolcases.CheckReachability(t, s.objects(), []netpolcases.Probe{tcp80}, func(f, to string, _ netpolcases.Probe) bool { return to != "x/a" })
		b := upstreamPod(t, objs, "x", "b")
		b.Labels["pod2"] = "updated"
		s.apply(s.x.UpsertPod(b))
		netpolcases.CheckReachability(t, s.objects(), []netpolcases.Probe{tcp80}, func(f, to string, _ netpolcases.Probe) bool { return to != "x/a" || f == "x/b" })
	})
	t.Run("24 deny ingress to updated pod", func(t *testing.T) {
		objs := upstreamWorld()
		s := newIncremental(objs)
		s.apply(s.x.UpsertPolicy(netpol("x", "p", sel("target", "isolated"), ingressOnly)))
		netpolcases.CheckReachability(t, s.objects(), []netpolcases.Probe{tcp80}, func(f, to string, _ netpolcases.Probe) bool { return true })
		a := upstreamPod(t, objs, "x", "a")
		a.Labels["target"] = "isolated"
		s.apply(s.x.UpsertPod(a))
		netpolcases.CheckReachability(t, s.objects(), []netpolcases.Probe{tcp80}, func(f, to string, _ netpolcases.Probe) bool { return to != "x/a" })
	})
	t.Run("33 stop enforcing deleted policies", func(t *testing.T) {
		s := newIncremental(upstreamWorld())
		s.apply(s.x.UpsertPolicy(netpol("x", "deny-all", sel(), policyTypes(networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress))))
		netpolcases.CheckReachability(t, s.objects(), []netpolcases.Probe{tcp80}, func(f, to string, _ netpolcases.Probe) bool {
			return netpolcases.NS(f) != "x" && netpolcases.NS(to) != "x"
		})
		s.apply(s.x.DeletePolicy(types.NamespacedName{Namespace: "x", Name: "deny-all"}))
		netpolcases.CheckReachability(t, s.objects(), []netpolcases.Probe{tcp80}, func(f, to string, _ netpolcases.Probe) bool { return true })
	})
}
