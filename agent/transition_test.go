package agent_test

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/palisade-net/palisade/agent"
	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/test/podnet"
)

// prober opens connections from one pod to another without pause and
// counts the ones that fail or take 900 ms or more: the kernel resends a
// dropped SYN after 1 s, so such a connection had a packet dropped, while
// a slow machine alone does not take that long to connect over a veth.
type prober struct {
	attempts, failures atomic.Int64
	stop               chan struct{}
	done               sync.WaitGroup
}

func startProbing(from, to *podnet.Pod, port uint16) *prober {
	p := &prober{stop: make(chan struct{})}
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			start := time.Now()
			got, err := from.Probe(policy.TCP, netip.AddrPortFrom(to.IPv4, port), 3*time.Second)
			p.attempts.Add(1)
			if err != nil || got != to.Name || time.Since(start) >= 900*time.Millisecond {
				p.failures.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return p
}

func (p *prober) finish() (attempts, failures int64) {
	close(p.stop)
	p.done.Wait()
	return p.attempts.Load(), p.failures.Load()
}

func (f *fixture) createPolicy(name string, selector map[string]string) {
	f.t.Helper()
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: selector},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	if err := f.env.Client.Create(context.Background(), np); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) deletePE(name string) {
	f.t.Helper()
	pe := &v1alpha1.PolicyEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name}}
	if err := f.env.Client.Delete(context.Background(), pe); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) relabelPod(name string, labels map[string]string) {
	f.t.Helper()
	ctx := context.Background()
	var pod corev1.Pod
	if err := f.env.Client.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: name}, &pod); err != nil {
		f.t.Fatal(err)
	}
	pod.Labels = labels
	if err := f.env.Client.Update(ctx, &pod); err != nil {
		f.t.Fatal(err)
	}
}

// TestReplacingAPolicyDropsNothingBothAllow: a pod moves from policy "web"
// to policy "api" (relabelled), and the agent sees the controller's
// updates in the worst order: first "web" no longer listing the pod, a
// while later "api" listing it. Both policies allow the client; no
// connection of the client fails at any moment, and once "api" is in
// place only it applies.
func TestReplacingAPolicyDropsNothingBothAllow(t *testing.T) {
	f := newFixture(t)
	client := f.addPodNet("client")
	other := f.addPodNet("other")
	server := f.addPodNet("server", 8080)
	f.createPod("client", map[string]string{"app": "client"}, client.IPv4)
	f.createPod("other", map[string]string{"app": "other"}, other.IPv4)
	f.createPod("server", map[string]string{"app": "web"}, server.IPv4)
	f.createPolicy("web", map[string]string{"app": "web"})
	f.createPolicy("api", map[string]string{"app": "api"})
	allow := func(peers ...*podnet.Pod) []v1alpha1.EndpointInfo {
		var out []v1alpha1.EndpointInfo
		for _, p := range peers {
			out = append(out, v1alpha1.EndpointInfo{CIDR: v1alpha1.NetworkAddress(p.IPv4.String()), Ports: tcpPort(8080)})
		}
		return out
	}
	f.createPE("web-x", "web", map[string]string{"app": "web"}, map[string]netip.Addr{"server": server.IPv4}, allow(client, other))
	f.startAgent(agent.Standard)
	f.expectReach(client, server, 8080, true)
	f.expectReach(other, server, 8080, true)

	probes := startProbing(client, server, 8080)
	time.Sleep(200 * time.Millisecond)
	f.relabelPod("server", map[string]string{"app": "api"})
	time.Sleep(300 * time.Millisecond)
	f.deletePE("web-x")
	time.Sleep(500 * time.Millisecond) // the agent holds "api" isolating the pod, without its rules
	f.createPE("api-x", "api", map[string]string{"app": "api"}, map[string]netip.Addr{"server": server.IPv4}, allow(client))
	f.expectReach(other, server, 8080, false)
	time.Sleep(200 * time.Millisecond)
	attempts, failures := probes.finish()
	t.Logf("client -> server: %d connections during the change, %d failed", attempts, failures)
	if attempts < 10 {
		t.Fatalf("only %d probes ran", attempts)
	}
	if failures > 0 {
		t.Errorf("%d of %d connections allowed by both the old and the new policy failed during the change", failures, attempts)
	}
	f.expectReach(client, server, 8080, true)
}

// TestNewPolicyKeepsWhatItAllowsFlowingOnARunningPod: a NetworkPolicy
// newly selecting a running, open pod does not isolate it before the
// controller's rules for it arrive, so the traffic it allows (which the old,
// open state allowed too) never drops; once the rules arrive, what the
// policy does not allow is denied.
func TestNewPolicyKeepsWhatItAllowsFlowingOnARunningPod(t *testing.T) {
	f := newFixture(t)
	client := f.addPodNet("client")
	other := f.addPodNet("other")
	server := f.addPodNet("server", 8080)
	f.createPod("client", map[string]string{"app": "client"}, client.IPv4)
	f.createPod("other", map[string]string{"app": "other"}, other.IPv4)
	f.createPod("server", map[string]string{"app": "web"}, server.IPv4)
	f.startAgent(agent.Standard)
	f.expectReach(client, server, 8080, true)
	f.expectReach(other, server, 8080, true)

	probes := startProbing(client, server, 8080)
	time.Sleep(200 * time.Millisecond)
	f.createPolicy("web", map[string]string{"app": "web"})
	time.Sleep(500 * time.Millisecond) // the agent holds "web" selecting the pod, without its rules
	f.createPE("web-x", "web", map[string]string{"app": "web"}, map[string]netip.Addr{"server": server.IPv4},
		[]v1alpha1.EndpointInfo{{CIDR: v1alpha1.NetworkAddress(client.IPv4.String()), Ports: tcpPort(8080)}})
	f.expectReach(other, server, 8080, false)
	time.Sleep(200 * time.Millisecond)
	attempts, failures := probes.finish()
	t.Logf("client -> server: %d connections during the change, %d failed", attempts, failures)
	if attempts < 10 {
		t.Fatalf("only %d probes ran", attempts)
	}
	if failures > 0 {
		t.Errorf("%d of %d connections the new policy allows failed before its rules arrived", failures, attempts)
	}
	f.expectReach(client, server, 8080, true)
}
