package compile_test

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/controller/compile"
	"github.com/palisade-net/palisade/npctl/manifest"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
	"github.com/palisade-net/palisade/test/netpolcases"
	"github.com/palisade-net/palisade/test/reachability"
)

// caseCluster is the cluster of test/netpolcases as an upstream case
// changes it step by step: namespaces x, y, z and pods a, b, c with IPs,
// spread over two nodes.
type caseCluster struct {
	namespaces []corev1.Namespace
	pods       []corev1.Pod
	policies   map[string]*networkingv1.NetworkPolicy
}

func newCaseCluster() *caseCluster {
	c := &caseCluster{policies: map[string]*networkingv1.NetworkPolicy{}}
	var ports []corev1.ContainerPort
	for _, port := range netpolcases.Ports {
		for _, protocol := range netpolcases.Protocols {
			ports = append(ports, corev1.ContainerPort{Name: netpolcases.ContainerPortName(port, protocol), ContainerPort: port, Protocol: protocol})
		}
	}
	for i, ns := range netpolcases.Namespaces {
		nsLabels := netpolcases.NamespaceLabels(ns)
		nsLabels[corev1.LabelMetadataName] = ns
		c.namespaces = append(c.namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: nsLabels}})
		for j, name := range netpolcases.PodNames {
			ip := netip.AddrFrom4([4]byte{10, 244, byte(128 + i), byte(10 + j)}).String()
			c.pods = append(c.pods, corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: netpolcases.PodLabels(ns + "/" + name)},
				Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node%d", (i*3+j)%2),
					Containers: []corev1.Container{{Name: "agnhost", Image: "agnhost", Ports: slices.Clone(ports)}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
			})
		}
	}
	return c
}

// IP returns a pod's address ("ns/name"); the zero address if there is no
// such pod, which no case expects.
func (c *caseCluster) IP(pod string) netip.Addr {
	if p := c.pod(pod); p != nil {
		return netip.MustParseAddr(p.Status.PodIP)
	}
	return netip.Addr{}
}

func (c *caseCluster) pod(key string) *corev1.Pod {
	for i := range c.pods {
		if c.pods[i].Namespace+"/"+c.pods[i].Name == key {
			return &c.pods[i]
		}
	}
	return nil
}

func (c *caseCluster) namespace(name string) *corev1.Namespace {
	for i := range c.namespaces {
		if c.namespaces[i].Name == name {
			return &c.namespaces[i]
		}
	}
	return nil
}

// apply performs one action of a case, feeding what changed to index when
// it is not nil, and returns the policies the index says are affected.
func (c *caseCluster) apply(a netpolcases.Action, index *compile.Index) (compile.PolicyKeys, error) {
	affected := compile.PolicyKeys{}
	merge := func(keys compile.PolicyKeys) {
		maps.Copy(affected, keys)
	}
	switch {
	case a.CreatePolicy != nil || a.UpdatePolicy != nil:
		np := a.CreatePolicy
		if np == nil {
			np = a.UpdatePolicy
		}
		c.policies[np.Namespace+"/"+np.Name] = np.DeepCopy()
		if index != nil {
			merge(index.UpsertPolicy(np.DeepCopy()))
		}
	case a.DeleteAllPolicies:
		for _, np := range c.policies {
			if index != nil {
				merge(index.DeletePolicy(types.NamespacedName{Namespace: np.Namespace, Name: np.Name}))
			}
		}
		clear(c.policies)
	case a.NamespaceLabel != nil:
		ns := c.namespace(a.NamespaceLabel.Namespace)
		if ns == nil {
			return nil, fmt.Errorf("no namespace %q", a.NamespaceLabel.Namespace)
		}
		ns.Labels[a.NamespaceLabel.Key] = a.NamespaceLabel.Value
		if index != nil {
			merge(index.UpsertNamespace(ns.DeepCopy()))
		}
	case a.PodLabels != nil:
		p := c.pod(a.PodLabels.Pod)
		if p == nil {
			return nil, fmt.Errorf("no pod %q", a.PodLabels.Pod)
		}
		maps.Copy(p.Labels, a.PodLabels.Labels)
		if index != nil {
			merge(index.UpsertPod(p.DeepCopy()))
		}
	default:
		return nil, fmt.Errorf("unknown action %+v", a)
	}
	return affected, nil
}

// objects returns the cluster as the compiler reads it.
func (c *caseCluster) objects() compile.Objects {
	objs := compile.Objects{}
	for _, ns := range c.namespaces {
		objs.Namespaces = append(objs.Namespaces, *ns.DeepCopy())
	}
	for _, p := range c.pods {
		objs.Pods = append(objs.Pods, *p.DeepCopy())
	}
	for _, key := range slices.Sorted(maps.Keys(c.policies)) {
		objs.NetworkPolicies = append(objs.NetworkPolicies, *c.policies[key].DeepCopy())
	}
	return objs
}

// observe judges a check's matrix the way the agents would enforce pes:
// the agent's policy assembly (agent/policyset) gives each pod's
// policy.Endpoint, and the reference evaluator judges the first packet of
// each probe on the source's egress and the destination's ingress.
func observe(t *testing.T, objs compile.Objects, pes []v1alpha1.PolicyEndpoint, check netpolcases.Check) *reachability.Matrix {
	t.Helper()
	mobjs := &manifest.Objects{Namespaces: objs.Namespaces, Pods: objs.Pods, NetworkPolicies: objs.NetworkPolicies}
	model, err := simulate.Assemble(mobjs, pes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(model.Waiting) > 0 {
		t.Fatalf("incomplete chunk sets: %v", model.Waiting)
	}
	pods := check.Expected.Pods()
	port := probe.Port{Protocol: check.Protocol, Port: uint16(check.Port)}
	probes, err := probe.Plan(mobjs, probe.Options{From: pods, To: pods, Ports: []probe.Port{port}})
	if err != nil {
		t.Fatal(err)
	}
	outcomes, err := model.Run(simulate.Reference{}, probes)
	if err != nil {
		t.Fatal(err)
	}
	observed := reachability.New(pods, false)
	for _, o := range outcomes {
		observed.Set(o.From.String(), o.To.String(), o.Allowed)
	}
	return observed
}

// expectMatrix reports a check whose observed matrix differs from the one
// upstream expects.
func expectMatrix(t *testing.T, c netpolcases.Case, step int, check netpolcases.Check, observed *reachability.Matrix) {
	t.Helper()
	diffs, err := check.Expected.Differences(observed)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Errorf("step %d, %s/%d:\n%s", step, check.Protocol, check.Port, reachability.Compare(c.Name, check.Expected, observed))
	}
}

// TestUpstreamNetpolScenarios runs every step of the 48 upstream e2e cases
// of test/netpolcases (SCTP included: compiled content needs no sockets),
// compiling the whole cluster after each step and judging each expected
// matrix through the agent's path.
func TestUpstreamNetpolScenarios(t *testing.T) {
	cases, checks := 0, 0
	for _, tc := range netpolcases.All() {
		cases++
		t.Run(fmt.Sprintf("%02d-%s", tc.Number, tc.Context), func(t *testing.T) {
			cluster := newCaseCluster()
			for s, step := range tc.Steps(cluster.IP) {
				for _, a := range step.Actions {
					if _, err := cluster.apply(a, nil); err != nil {
						t.Fatalf("step %d: %v", s+1, err)
					}
				}
				if len(step.Checks) == 0 {
					continue
				}
				objs := cluster.objects()
				pes, problems := compile.CompileAll(objs, compile.Options{})
				if len(problems) > 0 {
					t.Errorf("step %d: problems: %+v", s+1, problems)
				}
				for _, check := range step.Checks {
					expectMatrix(t, tc, s+1, check, observe(t, objs, pes, check))
					checks++
				}
			}
		})
	}
	if cases != 48 || checks < 48 {
		t.Errorf("%d cases, %d checks: want 48 cases and at least 48 checks", cases, checks)
	}
	t.Logf("%d cases, %d matrices checked", cases, checks)
}
