package controlplane

import (
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/bench/result"
	"github.com/palisade-net/palisade/controller/compile"
)

// CompileOutcome is what compiling one cluster size cost.
type CompileOutcome struct {
	Size Size
	// Full is indexing every object and compiling every policy (without
	// encoding the results).
	Full    time.Duration
	Objects int
	Bytes   int
	// Change is re-indexing one relabelled pod and recompiling the
	// policies it affects. Objects and Bytes count every PolicyEndpoint
	// and its JSON; ChangedObjects and ChangedBytes are the
	// PolicyEndpoints that differ afterwards (what the controller writes).
	Change         time.Duration
	ChangedObjects int
	ChangedBytes   int
	Problems       int
}

// MeasureCompile compiles a cluster of the given size, then applies one
// pod change, repeats times, keeping the fastest of each (the least
// disturbed by other work on the machine).
func MeasureCompile(size Size, repeats int) (CompileOutcome, error) {
	if size.Pods < 1 || size.Policies < 1 || repeats < 1 {
		return CompileOutcome{}, fmt.Errorf("controlplane: size %v, repeats %d: need at least one pod, policy and repeat", size, repeats)
	}
	objs := Cluster(size.Pods, size.Policies)
	namespaces := len(objs.Namespaces)
	out := CompileOutcome{Size: size}
	for r := range repeats {
		start := time.Now()
		index := compile.NewIndexOf(objs)
		var results []compile.Result
		for _, key := range index.Policies().Sorted() {
			results = append(results, index.Compile(key, compile.Options{}))
		}
		full := time.Since(start)
		compiled := map[types.NamespacedName][]byte{}
		objects, bytes, problems := 0, 0, 0
		for _, result := range results {
			problems += len(result.Problems)
			for i := range result.Objects {
				data, err := json.Marshal(&result.Objects[i])
				if err != nil {
					return CompileOutcome{}, fmt.Errorf("controlplane: encode %s: %w", result.Objects[i].Name, err)
				}
				compiled[objectKey(&result.Objects[i])] = data
				objects++
				bytes += len(data)
			}
		}
		results = nil

		// The pod moves to another app and back, changeRepeats times; the
		// fastest change counts, the first one's objects are what is written.
		original, moved := Pod(size.Pods/2, namespaces), Relabelled(size.Pods/2, namespaces)
		var change time.Duration
		var changedResults []compile.Result
		for c := range changeRepeats {
			pod := &moved
			if c%2 == 1 {
				pod = &original
			}
			var results []compile.Result
			start = time.Now()
			for key := range index.UpsertPod(pod) {
				results = append(results, index.Compile(key, compile.Options{}))
			}
			elapsed := time.Since(start)
			if c == 0 {
				change, changedResults = elapsed, results
			}
			change = min(change, elapsed)
		}
		changedObjects, changedBytes := 0, 0
		for _, result := range changedResults {
			for i := range result.Objects {
				data, err := json.Marshal(&result.Objects[i])
				if err != nil {
					return CompileOutcome{}, fmt.Errorf("controlplane: encode %s: %w", result.Objects[i].Name, err)
				}
				if string(compiled[objectKey(&result.Objects[i])]) != string(data) {
					changedObjects++
					changedBytes += len(data)
				}
			}
		}

		if r == 0 || full < out.Full {
			out.Full = full
		}
		if r == 0 || change < out.Change {
			out.Change = change
		}
		out.Objects, out.Bytes, out.Problems = objects, bytes, problems
		out.ChangedObjects, out.ChangedBytes = changedObjects, changedBytes
	}
	if out.Objects == 0 {
		return out, fmt.Errorf("controlplane: %v compiled to no PolicyEndpoints: the synthetic cluster selects nothing", size)
	}
	return out, nil
}

// changeRepeats is how many single-pod changes each repeat times.
const changeRepeats = 5

// CompileMeasurements reports each size's full compilation and single
// change. Gating ratios: how full compilation scales with pods (time per
// pod relative to the smallest pod count of the same policy count, 1.0 is
// linear), and a change's cost relative to a full compilation.
func CompileMeasurements(outcomes []CompileOutcome, repeats int) []result.Measurement {
	smallest := map[int]CompileOutcome{}
	for _, o := range outcomes {
		if s, ok := smallest[o.Size.Policies]; !ok || o.Size.Pods < s.Size.Pods {
			smallest[o.Size.Policies] = o
		}
	}
	var ms []result.Measurement
	for _, o := range outcomes {
		full := result.Measurement{
			Name:       "ControlPlane/compile/" + o.Size.String(),
			Iterations: repeats,
			Metrics: []result.Metric{
				{Value: float64(o.Full.Nanoseconds()), Unit: "ns/op"},
				{Value: float64(o.Objects), Unit: "objects"},
				{Value: float64(o.Bytes), Unit: "B"},
			},
		}
		if s := smallest[o.Size.Policies]; s.Size.Pods < o.Size.Pods {
			perPod := o.Full.Seconds() / float64(o.Size.Pods)
			smallPerPod := s.Full.Seconds() / float64(s.Size.Pods)
			full.Metrics = append(full.Metrics, result.Metric{Value: perPod / smallPerPod, Unit: result.RatioUnit, Gate: true})
		}
		ms = append(ms, full, result.Measurement{
			Name:       "ControlPlane/change/" + o.Size.String(),
			Iterations: repeats * changeRepeats,
			Metrics: []result.Metric{
				{Value: float64(o.Change.Nanoseconds()), Unit: "ns/op"},
				{Value: float64(o.ChangedObjects), Unit: "objects-written"},
				{Value: float64(o.ChangedBytes), Unit: "B-written"},
				{Value: o.Change.Seconds() / o.Full.Seconds(), Unit: result.RatioUnit, Gate: true},
			},
		})
	}
	return ms
}

func objectKey(pe *v1alpha1.PolicyEndpoint) types.NamespacedName {
	return types.NamespacedName{Namespace: pe.Namespace, Name: pe.Name}
}
