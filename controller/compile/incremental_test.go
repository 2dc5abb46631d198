package compile

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

func keysOf(k PolicyKeys) []string {
	var out []string
	for _, key := range k.Sorted() {
		out = append(out, key.String())
	}
	return out
}

func TestAffectedPolicies(t *testing.T) {
	x := NewIndexOf(world())
	x.UpsertPolicy(netpol("x", "targets-a", sel("pod", "a")))
	x.UpsertPolicy(netpol("x", "from-blue", nil, ingressRule(nil, podPeer(nil, sel("team", "blue")))))
	x.UpsertPolicy(netpol("z", "from-b-anywhere", nil, ingressRule(nil, podPeer(sel("pod", "b"), &metav1.LabelSelector{}))))
	x.UpsertPolicy(netpol("y", "to-db", nil, egressRule(ports(port(TCP, 5432)), podPeer(sel("pod", "dual"), nil))))
	x.UpsertPolicy(netpol("z", "to-net", nil, egressRule(ports(port(TCP, 80)), ipPeer("10.0.0.0/8"))))

	check := func(what string, got PolicyKeys, want ...string) {
		t.Helper()
		if g := keysOf(got); !reflect.DeepEqual(g, want) {
			t.Errorf("%s: affected %v, want %v", what, g, want)
		}
	}
	relabeled := pod("x", "c", "10.0.0.3", withLabels("pod", "b"))
	check("pod x/c relabeled to pod=b", x.UpsertPod(relabeled), "x/from-blue", "z/from-b-anywhere")
	check("same pod again", x.UpsertPod(relabeled))
	statusOnly := relabeled.DeepCopy()
	statusOnly.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	check("status condition change", x.UpsertPod(statusOnly))
	check("new pod x/a2 labelled pod=a", x.UpsertPod(pod("x", "a2", "10.0.0.4", withLabels("pod", "a"))), "x/from-blue", "x/targets-a")
	check("pod x/a IP change", x.UpsertPod(pod("x", "a", "10.0.0.5", withLabels("pod", "a", "app", "web"), withPort("http", TCP, 8080))), "x/from-blue", "x/targets-a")
	check("pod y/a deleted", x.DeletePod(key("y", "a")), "x/from-blue", "y/to-db")
	check("namespace z labelled team=blue", x.UpsertNamespace(namespace("z", "ns", "z", "team", "blue")), "x/from-blue")
	check("namespace z unchanged", x.UpsertNamespace(namespace("z", "ns", "z", "team", "blue")))
	check("policy update", x.UpsertPolicy(netpol("x", "targets-a", sel("pod", "b"))), "x/targets-a")
	check("slice for y/dual", x.UpsertEndpointSlice(endpointSlice("y", "db-1", "db", discoveryv1.AddressTypeIPv4, "", 5432, "y/dual=10.0.1.3")), "y/to-db", "z/to-net")
	check("service db", x.UpsertService(service("y", "db", []string{"10.96.0.10"}, svcPort("", 80, intstr.FromInt32(5432)))), "y/to-db", "z/to-net")
	check("service db unchanged", x.UpsertService(service("y", "db", []string{"10.96.0.10"}, svcPort("", 80, intstr.FromInt32(5432)))))
	check("slice deleted", x.DeleteEndpointSlice(key("y", "db-1")), "y/to-db", "z/to-net")
	check("namespace y loses team=blue", x.UpsertNamespace(namespace("y", "ns", "y")), "x/from-blue")
	check("hostNetwork pod", x.UpsertPod(pod("x", "h2", "192.168.0.2", withLabels("pod", "a"), hostNetwork())))
}

// TestIncrementalMatchesFromScratch applies random changes to one index,
// recompiling only the policies each change reports, and checks after every
// change that every policy's stored result equals a fresh compilation.
func TestIncrementalMatchesFromScratch(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := NewIndex()
	// The same objects, to build a fresh index from.
	snapshot := struct {
		namespaces map[string]*corev1.Namespace
		pods       map[string]*corev1.Pod
		policies   map[string]*networkingv1.NetworkPolicy
		services   map[string]*corev1.Service
		slices     map[string]*discoveryv1.EndpointSlice
	}{map[string]*corev1.Namespace{}, map[string]*corev1.Pod{}, map[string]*networkingv1.NetworkPolicy{}, map[string]*corev1.Service{}, map[string]*discoveryv1.EndpointSlice{}}
	upsertPod := func(p *corev1.Pod) PolicyKeys { snapshot.pods[p.Namespace+"/"+p.Name] = p; return x.UpsertPod(p) }
	upsertNS := func(n *corev1.Namespace) PolicyKeys { snapshot.namespaces[n.Name] = n; return x.UpsertNamespace(n) }
	upsertPolicy := func(n *networkingv1.NetworkPolicy) PolicyKeys {
		snapshot.policies[n.Namespace+"/"+n.Name] = n
		return x.UpsertPolicy(n)
	}
	results := map[types.NamespacedName][]v1alpha1.PolicyEndpoint{}
	apply := func(affected PolicyKeys) {
		for k := range affected {
			results[k] = x.Compile(k, Options{MaxEntriesPerObject: 5}).Objects
		}
	}
	namespaces := []string{"n0", "n1", "n2"}
	values := []string{"a", "b", "c"}
	for _, ns := range namespaces {
		apply(upsertNS(namespace(ns, "team", values[rng.IntN(3)])))
	}
	randomPod := func(i int) *corev1.Pod {
		ns := namespaces[i%3]
		opts := []podOpt{withLabels("app", values[rng.IntN(3)], "tier", values[rng.IntN(3)]), onNode(fmt.Sprintf("node%d", rng.IntN(3)))}
		if rng.IntN(2) == 0 {
			opts = append(opts, withPort("http", TCP, int32(8000+rng.IntN(3))))
		}
		if rng.IntN(8) == 0 {
			opts = append(opts, withIPs())
		}
		return pod(ns, fmt.Sprintf("p%d", i), fmt.Sprintf("10.1.%d.%d", i/200, i%200+1+rng.IntN(2)*50), opts...)
	}
	randomPolicy := func(i int) *networkingv1.NetworkPolicy {
		peer := podPeer(sel("app", values[rng.IntN(3)]), nil)
		if rng.IntN(2) == 0 {
			peer.NamespaceSelector = sel("team", values[rng.IntN(3)])
		}
		p := port(TCP, 80)
		if rng.IntN(2) == 0 {
			p = port(TCP, "http")
		}
		return netpol(namespaces[i%3], fmt.Sprintf("np%d", i), sel("tier", values[rng.IntN(3)]),
			ingressRule(ports(p), peer), egressRule(ports(p), peer))
	}
	for i := range 10 {
		apply(upsertPolicy(randomPolicy(i)))
	}
	for i := range 40 {
		apply(upsertPod(randomPod(i)))
	}
	for step := range 300 {
		var what string
		switch rng.IntN(7) {
		case 0, 1, 2:
			i := rng.IntN(50)
			what = fmt.Sprintf("upsert pod %d", i)
			apply(upsertPod(randomPod(i)))
		case 3:
			i := rng.IntN(50)
			what = fmt.Sprintf("delete pod %d", i)
			delete(snapshot.pods, namespaces[i%3]+"/"+fmt.Sprintf("p%d", i))
			apply(x.DeletePod(key(namespaces[i%3], fmt.Sprintf("p%d", i))))
		case 4:
			ns := namespaces[rng.IntN(3)]
			what = "relabel namespace " + ns
			apply(upsertNS(namespace(ns, "team", values[rng.IntN(3)])))
		case 5:
			i := rng.IntN(12)
			what = fmt.Sprintf("upsert policy %d", i)
			apply(upsertPolicy(randomPolicy(i)))
		case 6:
			ns := namespaces[rng.IntN(3)]
			var backends []string
			for _, pk := range []int{rng.IntN(50), rng.IntN(50)} {
				if p := x.pods[key(namespaces[pk%3], fmt.Sprintf("p%d", pk))]; p != nil && len(p.ips) > 0 {
					backends = append(backends, fmt.Sprintf("%s/%s=%s", p.key.Namespace, p.key.Name, p.ips[0]))
				}
			}
			what = fmt.Sprintf("service and slice in %s -> %v", ns, backends)
			svc := service(ns, "svc", []string{"10.96.0." + fmt.Sprint(rng.IntN(3)+1)}, svcPort("", 1000, intstr.FromInt32(80)))
			slice := endpointSlice(ns, "svc-1", "svc", discoveryv1.AddressTypeIPv4, "", 80, backends...)
			snapshot.services[ns] = svc
			snapshot.slices[ns] = slice
			apply(x.UpsertService(svc))
			apply(x.UpsertEndpointSlice(slice))
		}
		var objs Objects
		for _, n := range snapshot.namespaces {
			objs.Namespaces = append(objs.Namespaces, *n)
		}
		for _, p := range snapshot.pods {
			objs.Pods = append(objs.Pods, *p)
		}
		for _, n := range snapshot.policies {
			objs.NetworkPolicies = append(objs.NetworkPolicies, *n)
		}
		for _, s := range snapshot.services {
			objs.Services = append(objs.Services, *s)
		}
		for _, s := range snapshot.slices {
			objs.EndpointSlices = append(objs.EndpointSlices, *s)
		}
		scratch := NewIndexOf(objs)
		for k := range x.policies {
			fresh := scratch.Compile(k, Options{MaxEntriesPerObject: 5}).Objects
			if !reflect.DeepEqual(render(fresh), render(results[k])) {
				t.Fatalf("step %d (%s): policy %s is stale:\nstored %v\nfresh  %v", step, what, k, render(results[k]), render(fresh))
			}
		}
	}
}
