package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

// TestChunkedUpdateIsNeverPartial watches a chunked policy's objects while
// it changes, replaying every intermediate state as an agent would see it:
// whenever CompleteRevision accepts a state, that state must be the whole
// old or the whole new compilation, never a mixture.
func TestChunkedUpdateIsNeverPartial(t *testing.T) {
	c, env := startController(t)
	ctx := context.Background()
	x := newNamespace(t, c, "chunk-x")
	for i := range 10 {
		createPod(t, c, podSpec{ns: x, name: fmt.Sprintf("p%d", i), node: "n1", labels: labels("app", "web"), ips: []string{fmt.Sprintf("10.5.0.%d", i+1)}})
	}
	create(t, c, netpol(x, "web", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}}}}}))
	peersOf := func(n int) string {
		var list []string
		for i := range n {
			list = append(list, fmt.Sprintf("10.5.0.%d/32", i+1))
		}
		slices.Sort(list)
		return strings.Join(list, " ")
	}
	podsLine := func(n int) string {
		var list []string
		for i := range n {
			list = append(list, fmt.Sprintf("p%d@10.5.0.%d", i, i+1))
		}
		slices.Sort(list)
		return strings.Join(list, " ")
	}
	line := func(n int) string {
		return fmt.Sprintf("node=n1 iso=[Ingress] pods=[%s] in=[%s] eg=[]", podsLine(n), peersOf(n))
	}
	old := line(10)
	eventually(t, c, x, "web", old)
	if n := len(listPolicyEndpoints(t, c, x, "web")); n < 3 {
		t.Fatalf("expected the policy to be chunked, got %d objects", n)
	}

	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	var list v1alpha1.PolicyEndpointList
	if err := wc.List(ctx, &list, client.InNamespace(x)); err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, &v1alpha1.PolicyEndpointList{}, client.InNamespace(x), &client.ListOptions{Raw: nil})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	state := map[string]v1alpha1.PolicyEndpoint{}
	for _, o := range list.Items {
		state[o.Name] = o
	}

	// Grow from 10 to 13 pods: more chunks, every chunk rewritten.
	for i := 10; i < 13; i++ {
		createPod(t, c, podSpec{ns: x, name: fmt.Sprintf("p%d", i), node: "n1", labels: labels("app", "web"), ips: []string{fmt.Sprintf("10.5.0.%d", i+1)}})
	}
	final := line(13)
	// Compilations between the pod creations are whole objects too.
	allowed := map[string]bool{old: true, line(11): true, line(12): true, final: true}
	timeout := time.After(20 * time.Second)
	states, complete := 0, 0
	for {
		select {
		case ev := <-w.ResultChan():
			o, ok := ev.Object.(*v1alpha1.PolicyEndpoint)
			if !ok {
				t.Fatalf("watch event %v", ev.Type)
			}
			if ev.Type == watch.Deleted {
				delete(state, o.Name)
			} else {
				state[o.Name] = *o
			}
			states++
			var objs []v1alpha1.PolicyEndpoint
			for _, o := range state {
				objs = append(objs, o)
			}
			spec, _, ok := v1alpha1.CompleteRevision(objs)
			if !ok {
				continue
			}
			complete++
			got := renderSpec(spec)
			if !allowed[got] {
				t.Fatalf("an agent would have enforced a partial policy:\n  %s", got)
			}
			if got == final {
				t.Logf("%d states observed, %d complete", states, complete)
				return
			}
		case <-timeout:
			t.Fatalf("final state never observed; %d states", states)
		}
	}
}
