package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/controller/compile"
	"github.com/palisade-net/palisade/controller/internal/netpolcases"
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

// TestUpstreamScenariosOnAPIServer runs every upstream e2e scenario through
// the apiserver and the controller: it waits until the PolicyEndpoints
// written equal the pure compilation of the same objects, then checks the
// reachability they give against the scenario's hand-written matrix.
func TestUpstreamScenariosOnAPIServer(t *testing.T) {
	c, _ := startController(t)
	ctx := context.Background()
	for _, ns := range netpolcases.Namespaces() {
		create(t, c, &ns)
		t.Cleanup(func() { _ = c.Delete(context.Background(), &ns) })
	}
	for _, p := range netpolcases.World() {
		status := p.Status
		create(t, c, &p)
		p.Status = status
		if err := c.Status().Update(ctx, &p); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range netpolcases.Cases() {
		t.Run(fmt.Sprintf("%02d %s", tc.ID, tc.Name), func(t *testing.T) {
			for _, np := range tc.Policies {
				create(t, c, np.DeepCopy())
				t.Cleanup(func() { _ = c.Delete(context.Background(), np.DeepCopy()) })
			}
			want := renderAll(assemble(t, compileCluster(t, c)))
			var got []v1alpha1.PolicyEndpoint
			deadline := time.Now().Add(30 * time.Second)
			for {
				got = assemble(t, listModelObjects(t, c))
				if renderAll(got) == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("objects never matched the compilation:\ngot\n%s\nwant\n%s", renderAll(got), want)
				}
				time.Sleep(10 * time.Millisecond)
			}
			netpolcases.CheckReachability(t, got, tc.Probes, tc.Expect)

			for _, np := range tc.Policies {
				if err := c.Delete(ctx, np.DeepCopy()); err != nil {
					t.Fatal(err)
				}
			}
			deadline = time.Now().Add(30 * time.Second)
			for len(listModelObjects(t, c)) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("objects of deleted policies remain")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
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
