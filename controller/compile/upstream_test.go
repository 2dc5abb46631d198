package compile

import (
	"fmt"
	"testing"

	"github.com/palisade-net/palisade/controller/internal/netpolcases"
)

func upstreamWorld() Objects {
	return Objects{Namespaces: netpolcases.Namespaces(), Pods: netpolcases.World()}
}

// TestUpstreamNetpolScenarios compiles each upstream e2e scenario and
// checks the reachability the compiled objects give against the scenario's
// hand-written matrix.
func TestUpstreamNetpolScenarios(t *testing.T) {
	for _, tc := range netpolcases.Cases() {
		t.Run(fmt.Sprintf("%02d %s", tc.ID, tc.Name), func(t *testing.T) {
			objs := upstreamWorld()
			for _, np := range tc.Policies {
				objs.NetworkPolicies = append(objs.NetworkPolicies, *np)
			}
			objects, problems := CompileAll(objs, Options{})
			if len(problems) > 0 {
				t.Errorf("problems: %+v", problems)
			}
			netpolcases.CheckReachability(t, objects, tc.Probes, tc.Expect)
		})
	}
}
