package v1alpha1

import "sort"

// CompleteRevision is the chunking rule an agent applies to the objects of
// one chunk set (the objects sharing spec.chunk.set, or a single object
// without spec.chunk). It returns the logical spec (chunks concatenated in
// index order) and its revision when every chunk 0..total-1 of one revision
// is present, each exactly once; otherwise ok is false and the agent keeps
// enforcing the last complete revision it saw (or, having none, treats the
// set's pods as isolated with nothing allowed by it).
//
// The controller writes chunk i of every revision to the same object name,
// so at most one revision can be complete at a time.
func CompleteRevision(objects []PolicyEndpoint) (spec PolicyEndpointSpec, revision string, ok bool) {
	if len(objects) == 0 {
		return PolicyEndpointSpec{}, "", false
	}
	if len(objects) == 1 && objects[0].Spec.Chunk == nil {
		return objects[0].Spec, "", true
	}
	byRevision := map[string][]*PolicyEndpoint{}
	for i := range objects {
		chunk := objects[i].Spec.Chunk
		if chunk == nil {
			return PolicyEndpointSpec{}, "", false
		}
		byRevision[chunk.Revision] = append(byRevision[chunk.Revision], &objects[i])
	}
	for revision, chunks := range byRevision {
		total := chunks[0].Spec.Chunk.Total
		if int(total) != len(chunks) {
			continue
		}
		sort.Slice(chunks, func(a, b int) bool { return chunks[a].Spec.Chunk.Index < chunks[b].Spec.Chunk.Index })
		complete := true
		for i, c := range chunks {
			if c.Spec.Chunk.Total != total || c.Spec.Chunk.Index != int32(i) {
				complete = false
				break
			}
		}
		if !complete {
			continue
		}
		spec = *chunks[0].Spec.DeepCopy()
		spec.Chunk = nil
		for _, c := range chunks[1:] {
			spec.PodSelectorEndpoints = append(spec.PodSelectorEndpoints, c.Spec.PodSelectorEndpoints...)
			spec.Ingress = append(spec.Ingress, c.Spec.Ingress...)
			spec.Egress = append(spec.Egress, c.Spec.Egress...)
		}
		return spec, revision, true
	}
	return PolicyEndpointSpec{}, "", false
}
