package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/test/localcluster"
	"github.com/palisade-net/palisade/test/netpolcases"
	"github.com/palisade-net/palisade/test/reachability"
)

// convergenceDeadline bounds the wait for one expected matrix.
const convergenceDeadline = 20 * time.Second

var measured convergence

// families probed by default: every case holds on both, except the
// ipBlock cases, which run once per family with that family's addresses.
var families = []localcluster.Family{localcluster.IPv4, localcluster.IPv6}

// previous is the last step of the case that ran before, to measure how
// fast deleting its policies restores traffic.
var previous struct {
	pods     []string
	families []localcluster.Family
	checks   []netpolcases.Check
}

func needCluster(t *testing.T) {
	t.Helper()
	if setupError != nil {
		t.Fatalf("the local cluster did not start: %v", setupError)
	}
}

func allPods() []string {
	var pods []string
	for _, ns := range netpolcases.Namespaces {
		for _, name := range netpolcases.PodNames {
			pods = append(pods, ns+"/"+name)
		}
	}
	return pods
}

// Without any policy every pod reaches every pod on every served port.
func TestWithoutPoliciesEveryPodConnects(t *testing.T) {
	needCluster(t)
	pods := allPods()
	for _, family := range families {
		for _, protocol := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
			for _, port := range netpolcases.Ports {
				start := time.Now()
				wait, err := cluster.WaitFor(context.Background(), reachability.New(pods, true), family, port, protocol, start, convergenceDeadline, nil)
				if err != nil {
					t.Fatalf("%v\n%s", err, reachability.Compare(fmt.Sprintf("%d/%s %s", port, protocol, family), reachability.New(pods, true), wait.Observed))
				}
				t.Logf("%s %d/%s: %d pairs connected, matrix in %v", family, port, protocol, len(pods)*len(pods), time.Since(start).Round(time.Millisecond))
			}
		}
	}
}

func TestUpstreamNetworkPolicyCases(t *testing.T) {
	needCluster(t)
	start := time.Now()
	for _, c := range netpolcases.All() {
		t.Run(fmt.Sprintf("%02d-%s-%s", c.Number, c.Context, c.Name), func(t *testing.T) {
			if c.SkipReason != "" {
				t.Skip(c.SkipReason)
			}
			if !usesIPBlocks(c) {
				runCase(t, c, families, localcluster.IPv4)
				return
			}
			for _, family := range families {
				t.Run(family.String(), func(t *testing.T) {
					runCase(t, c, []localcluster.Family{family}, family)
				})
			}
		})
	}
	t.Logf("48 cases in %v", time.Since(start).Round(time.Millisecond))
	report := measured.report(localcluster.PollTimeout)
	t.Log(report)
	if report.All.Samples > 0 && !t.Failed() {
		if err := writeReport("results/convergence.json", report); err != nil {
			t.Errorf("writing results/convergence.json: %v", err)
		}
	}
}

// usesIPBlocks tells whether a case's policies hold pod addresses.
func usesIPBlocks(c netpolcases.Case) bool {
	for _, step := range c.Steps(func(string) netip.Addr { return netip.IPv4Unspecified() }) {
		for _, a := range step.Actions {
			for _, p := range []*networkingv1.NetworkPolicy{a.CreatePolicy, a.UpdatePolicy} {
				if p == nil {
					continue
				}
				for _, rule := range p.Spec.Egress {
					for _, peer := range rule.To {
						if peer.IPBlock != nil {
							return true
						}
					}
				}
				for _, rule := range p.Spec.Ingress {
					for _, peer := range rule.From {
						if peer.IPBlock != nil {
							return true
						}
					}
				}
			}
		}
	}
	return false
}

// runCase runs c's steps, probing every check over each family; pod
// addresses in policies are of addressFamily.
func runCase(t *testing.T, c netpolcases.Case, families []localcluster.Family, addressFamily localcluster.Family) {
	ctx := context.Background()
	resetCluster(t, c, families)
	steps := c.Steps(func(pod string) netip.Addr {
		p, ok := cluster.Pod(pod)
		if !ok {
			t.Fatalf("no pod %s", pod)
		}
		if addressFamily == localcluster.IPv6 {
			return p.IPv6
		}
		return p.IPv4
	})
	for s, step := range steps {
		changes := false
		// watched[family][check]: pairs connected before the change that
		// stay connected after it.
		watched := map[localcluster.Family][][]reachability.Pair{}
		for _, family := range families {
			for _, check := range step.Checks {
				before, err := cluster.Observe(ctx, c.Pods, family, check.Port, check.Protocol, localcluster.PollTimeout)
				if err != nil {
					t.Fatal(err)
				}
				if diffs, _ := check.Expected.Differences(before); len(diffs) > 0 {
					changes = true
				}
				watched[family] = append(watched[family], stayingConnected(before, check.Expected))
			}
		}
		policiesBefore, err := anyPolicy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		changed := time.Now()
		for _, action := range step.Actions {
			if err := apply(ctx, action); err != nil {
				t.Fatalf("step %d: %v", s+1, err)
			}
		}
		// Every (family, check) is awaited at once, so that each one's time
		// runs from the change and not from the end of the one before.
		type outcome struct {
			wait  localcluster.Wait
			err   error
			title string
			check netpolcases.Check
		}
		var outcomes []*outcome
		var wg sync.WaitGroup
		for _, family := range families {
			for i, check := range step.Checks {
				o := &outcome{title: fmt.Sprintf("%d/%s %s", check.Port, check.Protocol, family), check: check}
				outcomes = append(outcomes, o)
				wg.Add(1)
				go func() {
					defer wg.Done()
					o.wait, o.err = cluster.WaitFor(ctx, check.Expected, family, check.Port, check.Protocol, changed, convergenceDeadline, watched[family][i])
				}()
			}
		}
		wg.Wait()
		var slowest time.Duration
		interrupted := 0
		for _, o := range outcomes {
			if o.err != nil {
				t.Errorf("step %d: %v\n%s", s+1, o.err, reachability.Compare(o.title, o.check.Expected, o.wait.Observed))
			}
			slowest = max(slowest, o.wait.Took)
			interrupted += o.wait.Interrupted
		}
		if interrupted > 0 {
			t.Errorf("step %d: %d pairs allowed before and after the change were blocked during it", s+1, interrupted)
		}
		if t.Failed() {
			t.FailNow()
		}
		measured.interruptions(interrupted, policiesBefore)
		if changes {
			measured.record(kindOf(step.Actions), slowest)
			t.Logf("step %d (%s): expected traffic after %v; %d pairs meant to stay connected were seen blocked meanwhile", s+1, kindOf(step.Actions), slowest.Round(time.Millisecond), interrupted)
		} else {
			t.Logf("step %d (%s): no traffic change expected; held (%d pairs seen blocked meanwhile)", s+1, kindOf(step.Actions), interrupted)
		}
	}
	previous.pods, previous.families, previous.checks = c.Pods, families, steps[len(steps)-1].Checks
}

// stayingConnected lists the pairs (loopback excluded) connected in before
// and expected connected after.
func stayingConnected(before, after *reachability.Matrix) []reachability.Pair {
	var pairs []reachability.Pair
	for _, from := range after.Pods() {
		for _, to := range after.Pods() {
			if from != to && before.Get(from, to) && after.Get(from, to) {
				pairs = append(pairs, reachability.Pair{From: from, To: to})
			}
		}
	}
	return pairs
}

// anyPolicy tells whether some NetworkPolicy exists in the cases' namespaces.
func anyPolicy(ctx context.Context) (bool, error) {
	for _, ns := range netpolcases.Namespaces {
		var list networkingv1.NetworkPolicyList
		if err := cluster.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		if len(list.Items) > 0 {
			return true, nil
		}
	}
	return false, nil
}

func kindOf(actions []netpolcases.Action) string {
	for _, a := range actions {
		switch {
		case a.CreatePolicy != nil:
			return "create"
		case a.UpdatePolicy != nil:
			return "update"
		case a.DeleteAllPolicies:
			return "delete"
		case a.NamespaceLabel != nil, a.PodLabels != nil:
			return "label"
		}
	}
	return "none"
}

func apply(ctx context.Context, a netpolcases.Action) error {
	switch {
	case a.CreatePolicy != nil:
		return cluster.Client.Create(ctx, a.CreatePolicy.DeepCopy())
	case a.UpdatePolicy != nil:
		current := a.UpdatePolicy.DeepCopy()
		existing := current.DeepCopy()
		if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(current), existing); err != nil {
			return err
		}
		current.ResourceVersion = existing.ResourceVersion
		return cluster.Client.Update(ctx, current)
	case a.DeleteAllPolicies:
		return cluster.DeleteAllPolicies(ctx, netpolcases.Namespaces)
	case a.NamespaceLabel != nil:
		l := a.NamespaceLabel
		return cluster.SetNamespaceLabels(ctx, l.Namespace, map[string]string{l.Key: l.Value}, true)
	case a.PodLabels != nil:
		return cluster.SetPodLabels(ctx, reachability.Namespace(a.PodLabels.Pod), reachability.Name(a.PodLabels.Pod), a.PodLabels.Labels, true)
	}
	return fmt.Errorf("empty action")
}

// resetCluster deletes every policy and restores every label, waits until
// the previous case's pods connect again (a "delete" convergence sample
// when they did not before), then until the new case's pods all connect.
func resetCluster(t *testing.T, c netpolcases.Case, families []localcluster.Family) {
	ctx := context.Background()
	changed := time.Now()
	if err := cluster.DeleteAllPolicies(ctx, netpolcases.Namespaces); err != nil {
		t.Fatal(err)
	}
	if err := restoreLabels(ctx); err != nil {
		t.Fatal(err)
	}
	for _, family := range previous.families {
		for _, check := range previous.checks {
			allowed := reachability.New(previous.pods, true)
			wait, err := cluster.WaitFor(ctx, allowed, family, check.Port, check.Protocol, changed, convergenceDeadline, nil)
			if err != nil {
				t.Fatalf("previous case's traffic not restored after deleting its policies: %v\n%s", err, reachability.Compare("reset", allowed, wait.Observed))
			}
			if diffs, _ := check.Expected.Differences(allowed); len(diffs) > 0 {
				measured.record("delete", wait.Took)
			}
		}
	}
	for _, s := range c.Steps(func(string) netip.Addr { return netip.IPv4Unspecified() }) {
		for _, family := range families {
			for _, check := range s.Checks {
				allowed := reachability.New(c.Pods, true)
				if wait, err := cluster.WaitFor(ctx, allowed, family, check.Port, check.Protocol, changed, convergenceDeadline, nil); err != nil {
					t.Fatalf("before the case, without policies: %v\n%s", err, reachability.Compare("reset", allowed, wait.Observed))
				}
			}
		}
	}
}

func restoreLabels(ctx context.Context) error {
	for _, ns := range netpolcases.Namespaces {
		current := &corev1.Namespace{}
		if err := cluster.Client.Get(ctx, client.ObjectKey{Name: ns}, current); err != nil {
			return err
		}
		want := netpolcases.NamespaceLabels(ns)
		want[corev1.LabelMetadataName] = ns
		if !maps.Equal(current.Labels, want) {
			if err := cluster.SetNamespaceLabels(ctx, ns, want, false); err != nil {
				return err
			}
		}
	}
	for _, pod := range allPods() {
		current := &corev1.Pod{}
		if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: reachability.Namespace(pod), Name: reachability.Name(pod)}, current); err != nil {
			return err
		}
		want := netpolcases.PodLabels(pod)
		if !maps.Equal(current.Labels, want) {
			if err := cluster.SetPodLabels(ctx, reachability.Namespace(pod), reachability.Name(pod), want, false); err != nil {
				return err
			}
		}
	}
	return nil
}
