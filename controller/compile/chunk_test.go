package compile

import (
	"fmt"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

func bigNamespace(pods int) Objects {
	objs := Objects{Namespaces: []corev1.Namespace{*namespace("big")}}
	for i := range pods {
		objs.Pods = append(objs.Pods, *pod("big", fmt.Sprintf("p%02d", i), fmt.Sprintf("10.2.0.%d", i+1)))
	}
	return objs
}

// TestChunksReassembleToTheWhole checks the chunking rule: the chunks of one
// revision concatenate into exactly the unchunked object, and a set with a
// chunk missing or from another revision is never complete.
func TestChunksReassembleToTheWhole(t *testing.T) {
	objs := bigNamespace(30)
	objs.NetworkPolicies = append(objs.NetworkPolicies, *netpol("big", "np", nil,
		ingressRule(ports(port(TCP, 80)), podPeer(sel(), nil)), egressRule(nil, podPeer(sel(), nil))))
	whole, _ := CompileAll(objs, Options{})
	if len(whole) != 1 {
		t.Fatalf("unchunked: %d objects", len(whole))
	}
	chunks, _ := CompileAll(objs, Options{MaxEntriesPerObject: 7})
	if len(chunks) != 13 { // 30 pods + 30 ingress + 30 egress entries, 7 per object
		t.Fatalf("got %d chunks, want 13", len(chunks))
	}
	for i, c := range chunks {
		n := len(c.Spec.PodSelectorEndpoints) + len(c.Spec.Ingress) + len(c.Spec.Egress)
		if n > 7 || c.Spec.Chunk.Set != whole[0].Name || c.Spec.Chunk.Total != 13 || c.Spec.Chunk.Revision != whole[0].Spec.Chunk.Revision {
			t.Errorf("chunk %d: %d entries, chunk %+v", i, n, c.Spec.Chunk)
		}
	}
	spec, revision, ok := v1alpha1.CompleteRevision(chunks)
	if !ok || revision != whole[0].Spec.Chunk.Revision {
		t.Fatalf("complete set not recognized: ok=%v revision=%q", ok, revision)
	}
	want := whole[0].Spec
	want.Chunk = nil
	if !reflect.DeepEqual(spec, want) {
		t.Errorf("reassembled spec differs from the whole:\n%+v\n%+v", spec, want)
	}

	if _, _, ok := v1alpha1.CompleteRevision(chunks[1:]); ok {
		t.Errorf("a set missing a chunk was taken as complete")
	}

	objs.Pods = append(objs.Pods, *pod("big", "p99", "10.2.0.99"))
	next, _ := CompileAll(objs, Options{MaxEntriesPerObject: 7})
	if next[0].Spec.Chunk.Revision == chunks[0].Spec.Chunk.Revision {
		t.Fatalf("revision did not change with the content")
	}
	// Mid-update: the controller has rewritten some chunks in place only.
	mixed := append([]v1alpha1.PolicyEndpoint{}, chunks...)
	for i := range 5 {
		mixed[i] = next[i]
	}
	if _, _, ok := v1alpha1.CompleteRevision(mixed); ok {
		t.Errorf("a set mixing two revisions was taken as complete")
	}
	// The update finished: 14 chunks now, all of the new revision.
	if spec, _, ok := v1alpha1.CompleteRevision(next); !ok || len(spec.PodSelectorEndpoints) != 31 {
		t.Errorf("new revision: ok=%v pods=%d", ok, len(spec.PodSelectorEndpoints))
	}
	// Shrinking: new revision fully written, a stale higher chunk not yet deleted.
	stale := append(append([]v1alpha1.PolicyEndpoint{}, chunks...), next...)
	if _, revision, ok := v1alpha1.CompleteRevision(dedupeByName(stale)); !ok || revision != next[0].Spec.Chunk.Revision {
		t.Errorf("leftover chunk of an old revision blocked the new one: ok=%v", ok)
	}
}

// dedupeByName keeps the last object of each name, as an apiserver would.
func dedupeByName(objs []v1alpha1.PolicyEndpoint) []v1alpha1.PolicyEndpoint {
	byName := map[string]int{}
	var out []v1alpha1.PolicyEndpoint
	for _, o := range objs {
		if i, ok := byName[o.Name]; ok {
			out[i] = o
			continue
		}
		byName[o.Name] = len(out)
		out = append(out, o)
	}
	return out
}
