package v1alpha1

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func chunkOf(name, revision string, index, total int32, pods ...string) PolicyEndpoint {
	o := PolicyEndpoint{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: PolicyEndpointSpec{
		NodeName: "n1", Chunk: &Chunk{Set: "s", Index: index, Total: total, Revision: revision}}}
	for _, p := range pods {
		o.Spec.PodSelectorEndpoints = append(o.Spec.PodSelectorEndpoints, PodEndpoint{Name: p})
	}
	return o
}

func podNames(s PolicyEndpointSpec) string {
	out := ""
	for _, p := range s.PodSelectorEndpoints {
		out += p.Name
	}
	return out
}

func TestCompleteRevision(t *testing.T) {
	cases := []struct {
		name     string
		objects  []PolicyEndpoint
		complete bool
		pods     string
		revision string
	}{
		{"nothing", nil, false, "", ""},
		{"single unchunked object", []PolicyEndpoint{{Spec: PolicyEndpointSpec{PodSelectorEndpoints: []PodEndpoint{{Name: "a"}}}}}, true, "a", ""},
		{"whole set out of order", []PolicyEndpoint{chunkOf("s-2", "r1", 2, 3, "c"), chunkOf("s", "r1", 0, 3, "a"), chunkOf("s-1", "r1", 1, 3, "b")}, true, "abc", "r1"},
		{"chunk missing", []PolicyEndpoint{chunkOf("s", "r1", 0, 3, "a"), chunkOf("s-2", "r1", 2, 3, "c")}, false, "", ""},
		{"two revisions mixed", []PolicyEndpoint{chunkOf("s", "r2", 0, 2, "a"), chunkOf("s-1", "r1", 1, 2, "b")}, false, "", ""},
		{"totals disagree", []PolicyEndpoint{chunkOf("s", "r1", 0, 2, "a"), chunkOf("s-1", "r1", 1, 3, "b")}, false, "", ""},
		{"duplicate index", []PolicyEndpoint{chunkOf("s", "r1", 0, 2, "a"), chunkOf("s-x", "r1", 0, 2, "b")}, false, "", ""},
		{"new revision whole, stale chunk of the old one left", []PolicyEndpoint{chunkOf("s", "r2", 0, 2, "a"), chunkOf("s-1", "r2", 1, 2, "b"), chunkOf("s-2", "r1", 2, 3, "z")}, true, "ab", "r2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec, revision, ok := CompleteRevision(tc.objects)
			if ok != tc.complete || podNames(spec) != tc.pods || revision != tc.revision {
				t.Errorf("got ok=%v pods=%q revision=%q, want ok=%v pods=%q revision=%q", ok, podNames(spec), revision, tc.complete, tc.pods, tc.revision)
			}
			if ok && spec.Chunk != nil {
				t.Errorf("assembled spec keeps a chunk")
			}
		})
	}
}
