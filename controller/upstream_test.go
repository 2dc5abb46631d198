package controller

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/controller/compile"
	"github.com/palisade-net/palisade/npctl/manifest"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
	"github.com/palisade-net/palisade/test/netpolcases"
	"github.com/palisade-net/palisade/test/reachability"
)

// assemble turns chunk sets into one object each, as an agent sees them.
func assemble(t testing.TB, objects []v1alpha1.PolicyEndpoint) []v1alpha1.PolicyEndpoint {
	t.Helper()
	sets := map[string][]v1alpha1.PolicyEndpoint{}
	for _, o := range objects {
		key := o.Namespace + "/" + o.Name
		if o.Spec.Chunk != nil {
			key = o.Namespace + "/" + o.Spec.Chunk.Set
		}
		sets[key] = append(sets[key], o)
	}
	var out []v1alpha1.PolicyEndpoint
	for _, objs := range sets {
		spec, _, ok := v1alpha1.CompleteRevision(objs)
		if !ok {
			continue
		}
		out = append(out, v1alpha1.PolicyEndpoint{Spec: spec})
	}
	return out
}

func renderAll(objects []v1alpha1.PolicyEndpoint) string {
	var lines []string
	for _, o := range objects {
		lines = append(lines, o.Spec.PolicyRef.Namespace+"/"+o.Spec.PolicyRef.Name+" "+renderSpec(o.Spec))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func listModelObjects(t testing.TB, c client.Client) []v1alpha1.PolicyEndpoint {
	t.Helper()
	var all []v1alpha1.PolicyEndpoint
	for _, ns := range []string{"x", "y", "z"} {
		var list v1alpha1.PolicyEndpointList
		if err := c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		all = append(all, list.Items...)
	}
	return all
}

// TestUpstreamScenariosOnAPIServer runs every step of the 48 upstream e2e
// cases of test/netpolcases (SCTP included) through the apiserver and the
// controller: after each step it waits until the PolicyEndpoints written
// equal the pure compilation of what the apiserver holds, then judges each
// expected matrix through the agent's path on the objects written.
func TestUpstreamScenariosOnAPIServer(t *testing.T) {
	c, _ := startController(t)
	ips := map[string]netip.Addr{}
	for i, ns := range netpolcases.Namespaces {
		create(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: netpolcases.NamespaceLabels(ns)}})
		for j, name := range netpolcases.PodNames {
			ip := netip.AddrFrom4([4]byte{10, 244, byte(128 + i), byte(10 + j)})
			ips[ns+"/"+name] = ip
			createPod(t, c, podSpec{ns: ns, name: name, labels: netpolcases.PodLabels(ns + "/" + name),
				node: fmt.Sprintf("node%d", (i*3+j)%2), ports: upstreamContainerPorts(), ips: []string{ip.String()}})
		}
	}
	t.Cleanup(func() {
		for _, ns := range netpolcases.Namespaces {
			_ = c.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		}
	})
	cases, checks := 0, 0
	for _, tc := range netpolcases.All() {
		cases++
		t.Run(fmt.Sprintf("%02d-%s", tc.Number, tc.Context), func(t *testing.T) {
			resetUpstreamLabels(t, c)
			t.Cleanup(func() { deleteUpstreamPolicies(t, c) })
			for s, step := range tc.Steps(func(pod string) netip.Addr { return ips[pod] }) {
				for _, a := range step.Actions {
					applyUpstreamAction(t, c, a)
				}
				if len(step.Checks) == 0 {
					continue
				}
				got := waitForCompilation(t, c)
				objs := listUpstreamCluster(t, c)
				model, err := simulate.Assemble(objs, got, nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, check := range step.Checks {
					observed := observeUpstream(t, model, objs, check)
					diffs, err := check.Expected.Differences(observed)
					if err != nil {
						t.Fatal(err)
					}
					if len(diffs) > 0 {
						t.Errorf("step %d, %s/%d:\n%s", s+1, check.Protocol, check.Port, reachability.Compare(tc.Name, check.Expected, observed))
					}
					checks++
				}
			}
			deleteUpstreamPolicies(t, c)
			deadline := time.Now().Add(30 * time.Second)
			for len(listModelObjects(t, c)) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("objects of deleted policies remain")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	if cases != 48 || checks < 48 {
		t.Errorf("%d cases, %d checks: want 48 cases and at least 48 checks", cases, checks)
	}
	t.Logf("%d cases, %d matrices checked", cases, checks)
}

func upstreamContainerPorts() []corev1.ContainerPort {
	var ports []corev1.ContainerPort
	for _, port := range netpolcases.Ports {
		for _, protocol := range netpolcases.Protocols {
			ports = append(ports, corev1.ContainerPort{Name: netpolcases.ContainerPortName(port, protocol), ContainerPort: port, Protocol: protocol})
		}
	}
	return ports
}

// resetUpstreamLabels gives namespaces and pods the labels every case
// starts from (the apiserver keeps kubernetes.io/metadata.name).
func resetUpstreamLabels(t testing.TB, c client.Client) {
	t.Helper()
	for _, ns := range netpolcases.Namespaces {
		updateObject(t, c, &corev1.Namespace{}, types.NamespacedName{Name: ns}, func(o client.Object) {
			l := netpolcases.NamespaceLabels(ns)
			l[corev1.LabelMetadataName] = ns
			o.SetLabels(l)
		})
		for _, name := range netpolcases.PodNames {
			updateObject(t, c, &corev1.Pod{}, types.NamespacedName{Namespace: ns, Name: name}, func(o client.Object) {
				o.SetLabels(netpolcases.PodLabels(ns + "/" + name))
			})
		}
	}
}

// updateObject reads obj, changes it and writes it back, retrying on
// conflicts.
func updateObject(t testing.TB, c client.Client, obj client.Object, key types.NamespacedName, change func(client.Object)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(context.Background(), key, obj); err != nil {
			return err
		}
		change(obj)
		return c.Update(context.Background(), obj)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func applyUpstreamAction(t testing.TB, c client.Client, a netpolcases.Action) {
	t.Helper()
	switch {
	case a.CreatePolicy != nil:
		create(t, c, a.CreatePolicy.DeepCopy())
	case a.UpdatePolicy != nil:
		updateObject(t, c, &networkingv1.NetworkPolicy{}, types.NamespacedName{Namespace: a.UpdatePolicy.Namespace, Name: a.UpdatePolicy.Name},
			func(o client.Object) { o.(*networkingv1.NetworkPolicy).Spec = *a.UpdatePolicy.Spec.DeepCopy() })
	case a.DeleteAllPolicies:
		deleteUpstreamPolicies(t, c)
	case a.NamespaceLabel != nil:
		updateObject(t, c, &corev1.Namespace{}, types.NamespacedName{Name: a.NamespaceLabel.Namespace}, func(o client.Object) {
			l := o.GetLabels()
			l[a.NamespaceLabel.Key] = a.NamespaceLabel.Value
			o.SetLabels(l)
		})
	case a.PodLabels != nil:
		updateObject(t, c, &corev1.Pod{}, types.NamespacedName{Namespace: reachability.Namespace(a.PodLabels.Pod), Name: reachability.Name(a.PodLabels.Pod)},
			func(o client.Object) {
				l := o.GetLabels()
				maps.Copy(l, a.PodLabels.Labels)
				o.SetLabels(l)
			})
	default:
		t.Fatalf("unknown action %+v", a)
	}
}

func deleteUpstreamPolicies(t testing.TB, c client.Client) {
	t.Helper()
	for _, ns := range netpolcases.Namespaces {
		if err := c.DeleteAllOf(context.Background(), &networkingv1.NetworkPolicy{}, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
	}
}

// waitForCompilation waits until the PolicyEndpoints the controller wrote
// equal the pure compilation of what the apiserver holds, and returns them.
func waitForCompilation(t testing.TB, c client.Client) []v1alpha1.PolicyEndpoint {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		want := renderAll(assemble(t, compileCluster(t, c)))
		written := listModelObjects(t, c)
		if renderAll(assemble(t, written)) == want {
			return written
		}
		if time.Now().After(deadline) {
			t.Fatalf("objects never matched the compilation:\ngot\n%s\nwant\n%s", renderAll(assemble(t, written)), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listUpstreamCluster reads the namespaces, pods and policies of x, y, z.
func listUpstreamCluster(t testing.TB, c client.Client) *manifest.Objects {
	t.Helper()
	objs := &manifest.Objects{}
	for _, ns := range netpolcases.Namespaces {
		var namespace corev1.Namespace
		var pods corev1.PodList
		var policies networkingv1.NetworkPolicyList
		if err := c.Get(context.Background(), types.NamespacedName{Name: ns}, &namespace); err != nil {
			t.Fatal(err)
		}
		for _, list := range []client.ObjectList{&pods, &policies} {
			if err := c.List(context.Background(), list, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
		}
		objs.Namespaces = append(objs.Namespaces, namespace)
		objs.Pods = append(objs.Pods, pods.Items...)
		objs.NetworkPolicies = append(objs.NetworkPolicies, policies.Items...)
	}
	return objs
}

// observeUpstream judges a check's matrix with the agent's per-pod
// policy (model) and the reference evaluator.
func observeUpstream(t testing.TB, model *simulate.Model, objs *manifest.Objects, check netpolcases.Check) *reachability.Matrix {
	t.Helper()
	if len(model.Waiting) > 0 {
		t.Fatalf("incomplete chunk sets: %v", model.Waiting)
	}
	pods := check.Expected.Pods()
	port := probe.Port{Protocol: check.Protocol, Port: uint16(check.Port)}
	probes, err := probe.Plan(objs, probe.Options{From: pods, To: pods, Ports: []probe.Port{port}})
	if err != nil {
		t.Fatal(err)
	}
	outcomes, err := model.Run(simulate.Reference{}, probes)
	if err != nil {
		t.Fatal(err)
	}
	observed := reachability.New(pods, false)
	for _, o := range outcomes {
		observed.Set(o.From.String(), o.To.String(), o.Allowed)
	}
	return observed
}

// compileCluster compiles everything the apiserver holds with the pure
// compiler and returns the objects of namespaces x, y and z.
func compileCluster(t testing.TB, c client.Client) []v1alpha1.PolicyEndpoint {
	t.Helper()
	ctx := context.Background()
	var (
		namespaces corev1.NamespaceList
		pods       corev1.PodList
		services   corev1.ServiceList
		slices     discoveryv1.EndpointSliceList
		policies   networkingv1.NetworkPolicyList
	)
	for _, list := range []client.ObjectList{&namespaces, &pods, &services, &slices, &policies} {
		if err := c.List(ctx, list); err != nil {
			t.Fatal(err)
		}
	}
	objects, _ := compile.CompileAll(compile.Objects{Namespaces: namespaces.Items, Pods: pods.Items, Services: services.Items,
		EndpointSlices: slices.Items, NetworkPolicies: policies.Items}, compile.Options{MaxEntriesPerObject: testMaxEntries})
	var out []v1alpha1.PolicyEndpoint
	for _, o := range objects {
		if o.Namespace == "x" || o.Namespace == "y" || o.Namespace == "z" {
			out = append(out, o)
		}
	}
	return out
}
