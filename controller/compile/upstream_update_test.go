package compile_test

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/controller/compile"
	"github.com/palisade-net/palisade/test/netpolcases"
)

// incremental keeps the compiled objects of every policy, recompiling only
// the policies each change reports, as the controller does.
type incremental struct {
	index   *compile.Index
	results map[types.NamespacedName][]v1alpha1.PolicyEndpoint
}

func newIncremental(objs compile.Objects) *incremental {
	s := &incremental{index: compile.NewIndexOf(objs), results: map[types.NamespacedName][]v1alpha1.PolicyEndpoint{}}
	s.recompile(s.index.Policies())
	return s
}

func (s *incremental) recompile(affected compile.PolicyKeys) {
	for k := range affected {
		if !s.index.HasPolicy(k) {
			delete(s.results, k)
			continue
		}
		s.results[k] = s.index.Compile(k, compile.Options{}).Objects
	}
}

func (s *incremental) objects() []v1alpha1.PolicyEndpoint {
	var out []v1alpha1.PolicyEndpoint
	for _, objs := range s.results {
		out = append(out, objs...)
	}
	return out
}

// TestUpstreamScenariosIncrementally runs every step of the 48 upstream
// cases through the compiler's index, recompiling only the policies each
// change reports as affected, and judges each expected matrix through the
// agent's path: a change the index fails to attribute to a policy leaves a
// stale object and a wrong matrix.
func TestUpstreamScenariosIncrementally(t *testing.T) {
	checks := 0
	for _, tc := range netpolcases.All() {
		t.Run(fmt.Sprintf("%02d-%s", tc.Number, tc.Context), func(t *testing.T) {
			cluster := newCaseCluster()
			s := newIncremental(cluster.objects())
			for n, step := range tc.Steps(cluster.IP) {
				for _, a := range step.Actions {
					affected, err := cluster.apply(a, s.index)
					if err != nil {
						t.Fatalf("step %d: %v", n+1, err)
					}
					s.recompile(affected)
				}
				for _, check := range step.Checks {
					expectMatrix(t, tc, n+1, check, observe(t, cluster.objects(), s.objects(), check))
					checks++
				}
			}
		})
	}
	if checks < 48 {
		t.Errorf("only %d checks ran", checks)
	}
	t.Logf("%d matrices checked", checks)
}
