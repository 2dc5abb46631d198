// Package policyset turns the PolicyEndpoints (and NetworkPolicies) held
// for a node into each pod's policy.Endpoint, without any I/O: Assemble
// picks the chunk set revisions to enforce, Compute unions the policies
// applying to each pod, and Build does both for tools starting from the
// objects. Rule IDs map back to their policy (Result.Origin).
package policyset

import (
	"fmt"
	"sort"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

// PolicyKey names a NetworkPolicy.
type PolicyKey struct{ Namespace, Name string }

func (k PolicyKey) String() string { return k.Namespace + "/" + k.Name }

// SetKey names a chunk set: the objects of one policy sharing
// spec.chunk.set, or a single object without spec.chunk (then Set is
// "object/" + its name).
type SetKey struct {
	Policy PolicyKey
	Set    string
}

func (k SetKey) String() string { return k.Policy.String() + "[" + k.Set + "]" }

// Set is what the agent enforces for one chunk set.
type Set struct {
	Key SetKey
	// Complete is false when no revision of the set was ever seen whole:
	// then Spec holds only the isolation, pod selector and pods of the
	// chunks present, and no rules (the set's pods are isolated with
	// nothing allowed by it).
	Complete bool
	Revision string
	Spec     v1alpha1.PolicyEndpointSpec // chunks concatenated, Chunk nil
	Objects  []string                    // the object names the spec came from
	// Fingerprint changes whenever the objects' specs do (names, UIDs,
	// generations); Compute reuses an earlier compilation of an equal one.
	Fingerprint string
}

// Waiting is a chunk set whose newest revision is incomplete.
type Waiting struct {
	Key      SetKey
	Objects  []string // names of the objects present
	Have     int
	Total    int
	Enforced string // revision still enforced; "" with Complete false if none
}

func (w Waiting) String() string {
	return fmt.Sprintf("chunk set %s: %d of %d chunks of the newest revision present", w.Key, w.Have, w.Total)
}

// PolicyOf returns the policy a PolicyEndpoint was compiled from.
func PolicyOf(pe *v1alpha1.PolicyEndpoint) PolicyKey {
	ns := pe.Spec.PolicyRef.Namespace
	if ns == "" {
		ns = pe.Namespace
	}
	return PolicyKey{Namespace: ns, Name: pe.Spec.PolicyRef.Name}
}

// SetOf returns the chunk set a PolicyEndpoint belongs to.
func SetOf(pe *v1alpha1.PolicyEndpoint) SetKey {
	if pe.Spec.Chunk == nil {
		return SetKey{Policy: PolicyOf(pe), Set: "object/" + pe.Name}
	}
	return SetKey{Policy: PolicyOf(pe), Set: pe.Spec.Chunk.Set}
}

// Assemble groups PolicyEndpoints into chunk sets and picks what to enforce
// for each (v1alpha1.CompleteRevision decides completeness): the complete
// revision when there is one, else the set enforced before (previous), else
// an incomplete Set that isolates the pods listed by the chunks present.
// Sets with no object left are dropped. Objects being deleted are ignored.
func Assemble(pes []v1alpha1.PolicyEndpoint, previous map[SetKey]Set) (map[SetKey]Set, []Waiting) {
	groups := map[SetKey][]v1alpha1.PolicyEndpoint{}
	for i := range pes {
		if pes[i].DeletionTimestamp != nil {
			continue
		}
		k := SetOf(&pes[i])
		groups[k] = append(groups[k], pes[i])
	}
	sets := make(map[SetKey]Set, len(groups))
	var waiting []Waiting
	for k, objs := range groups {
		names := make([]string, 0, len(objs))
		for _, o := range objs {
			names = append(names, o.Name)
		}
		sort.Strings(names)
		if spec, revision, ok := v1alpha1.CompleteRevision(objs); ok {
			sets[k] = Set{Key: k, Complete: true, Revision: revision, Spec: spec, Objects: names, Fingerprint: fingerprint(true, objs)}
			continue
		}
		w := Waiting{Key: k, Objects: names, Have: len(objs), Total: newestTotal(objs)}
		if prev, ok := previous[k]; ok && prev.Complete {
			sets[k] = prev
			w.Enforced = prev.Revision
		} else {
			sets[k] = isolationOnly(k, objs, names)
		}
		waiting = append(waiting, w)
	}
	sort.Slice(waiting, func(i, j int) bool { return waiting[i].Key.String() < waiting[j].Key.String() })
	return sets, waiting
}

func newestTotal(objs []v1alpha1.PolicyEndpoint) int {
	total := 0
	for _, o := range objs {
		if o.Spec.Chunk != nil && int(o.Spec.Chunk.Total) > total {
			total = int(o.Spec.Chunk.Total)
		}
	}
	return total
}

func isolationOnly(k SetKey, objs []v1alpha1.PolicyEndpoint, names []string) Set {
	sort.Slice(objs, func(i, j int) bool { return objs[i].Name < objs[j].Name })
	spec := v1alpha1.PolicyEndpointSpec{
		PodSelector: objs[0].Spec.PodSelector,
		PolicyRef:   objs[0].Spec.PolicyRef,
		NodeName:    objs[0].Spec.NodeName,
	}
	seen := map[string]bool{}
	for _, o := range objs {
		for _, t := range o.Spec.PodIsolation {
			if !seen[string(t)] {
				seen[string(t)] = true
				spec.PodIsolation = append(spec.PodIsolation, t)
			}
		}
		spec.PodSelectorEndpoints = append(spec.PodSelectorEndpoints, o.Spec.PodSelectorEndpoints...)
	}
	return Set{Key: k, Spec: spec, Objects: names, Fingerprint: fingerprint(false, objs)}
}

func fingerprint(complete bool, objs []v1alpha1.PolicyEndpoint) string {
	parts := make([]string, 0, len(objs))
	for _, o := range objs {
		if o.UID == "" {
			return "" // not from an apiserver: never reused
		}
		parts = append(parts, fmt.Sprintf("%s/%s/%d", o.Name, o.UID, o.Generation))
	}
	sort.Strings(parts)
	return fmt.Sprint(complete, parts)
}
