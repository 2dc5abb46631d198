package compile

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

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
		if n > 7 || c.Spec.Chunk.Set != whole[0].Name || c.Spec.Chunk.Total != 13 || c.Spec.Chunk.Revision != chunks[0].Spec.Chunk.Revision {
			t.Errorf("chunk %d: %d entries, chunk %+v", i, n, c.Spec.Chunk)
		}
	}
	spec, revision, ok := v1alpha1.CompleteRevision(chunks)
	if !ok || revision != chunks[0].Spec.Chunk.Revision {
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

// TestChunksFitTheAPIServer: entries may be large (64 port ranges each), so
// chunks are bounded by size as well as count: a policy of 999 such peers
// makes objects etcd takes, which reassemble to the whole.
func TestChunksFitTheAPIServer(t *testing.T) {
	objs := bigNamespace(1)
	var ps []networkingv1.NetworkPolicyPort
	for i := range 64 {
		ps = append(ps, portRange(TCP, int32(10000+i*10), int32(10005+i*10)))
	}
	var peers []networkingv1.NetworkPolicyPeer
	for i := range 999 {
		peers = append(peers, ipPeer(fmt.Sprintf("10.%d.%d.0/24", 100+i/250, i%250)))
	}
	objs.NetworkPolicies = append(objs.NetworkPolicies, *netpol("big", "np", nil, ingressRule(ps, peers...)))
	chunks, _ := CompileAll(objs, Options{})
	const etcdRequestLimit = 1536 * 1024
	for _, c := range chunks {
		encoded, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(encoded) > etcdRequestLimit {
			t.Errorf("%s: %d bytes", c.Name, len(encoded))
		}
	}
	spec, _, ok := v1alpha1.CompleteRevision(chunks)
	if !ok || len(spec.Ingress) != 999 {
		t.Fatalf("%d chunks: complete=%v, %d ingress entries, want 999", len(chunks), ok, len(spec.Ingress))
	}
	t.Logf("%d chunks", len(chunks))
}
