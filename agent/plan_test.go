package agent

import (
	"net/netip"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/palisade-net/palisade/agent/podlink"
	"github.com/palisade-net/palisade/agent/policyset"
	"github.com/palisade-net/palisade/api/v1alpha1"
)

func TestMapLinksByRouteThenByName(t *testing.T) {
	pods := []podInfo{
		{Key: policyset.PodKey{Namespace: "ns", Name: "routed"}, IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
		{Key: policyset.PodKey{Namespace: "ns", Name: "named"}},
		{Key: policyset.PodKey{Namespace: "ns", Name: "host"}, HostNetwork: true, IPs: []netip.Addr{netip.MustParseAddr("10.0.0.2")}},
		{Key: policyset.PodKey{Namespace: "ns", Name: "nowhere"}, IPs: []netip.Addr{netip.MustParseAddr("10.0.0.3")}},
	}
	links := map[int]linkInfo{
		7: {Index: 7, Name: "cali123"},
		8: {Index: 8, Name: podlink.VPCCNIName("ns", "named")},
		9: {Index: 9, Name: "veth9"},
	}
	routes := map[netip.Addr]int{netip.MustParseAddr("10.0.0.1"): 7, netip.MustParseAddr("10.0.0.2"): 9, netip.MustParseAddr("10.0.0.3"): 2}
	resolve := func(ips []netip.Addr) (int, bool) { i, ok := routes[ips[0]]; return i, ok }
	m := mapLinks(pods, links, resolve)
	want := map[int]policyset.PodKey{7: {Namespace: "ns", Name: "routed"}, 8: {Namespace: "ns", Name: "named"}}
	if len(m) != len(want) || m[7] != want[7] || m[8] != want[8] {
		t.Fatalf("mapping %v, want %v", m, want)
	}
}

// TestMapLinksGivesAReusedIPToTheLivePod: an IP that passed from a pod
// being deleted to a new one leads to one interface, the new pod's,
// whatever order the pods are listed in.
func TestMapLinksGivesAReusedIPToTheLivePod(t *testing.T) {
	ip := []netip.Addr{netip.MustParseAddr("10.0.0.5")}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	old := podInfo{Key: policyset.PodKey{Namespace: "ns", Name: "old"}, IPs: ip, Created: t0}
	fresh := podInfo{Key: policyset.PodKey{Namespace: "ns", Name: "db"}, IPs: ip, Created: t0.Add(time.Hour)}
	links := map[int]linkInfo{5: {Index: 5, Name: "veth5"}}
	resolve := func([]netip.Addr) (int, bool) { return 5, true }
	terminating := old
	terminating.Terminating = true
	olderLive := fresh
	olderLive.Created = t0.Add(-time.Hour)
	for _, tc := range []struct {
		name  string
		a, b  podInfo
		owner string
	}{
		{"newer wins", old, fresh, "db"},
		{"live wins over terminating", terminating, olderLive, "db"},
	} {
		for _, order := range [][]podInfo{{tc.a, tc.b}, {tc.b, tc.a}} {
			if got := mapLinks(order, links, resolve)[5].Name; got != tc.owner {
				t.Errorf("%s: pods %s, %s: veth5 placed %s, want %s", tc.name, order[0].Key.Name, order[1].Key.Name, got, tc.owner)
			}
		}
	}
}

func TestPlanModes(t *testing.T) {
	np := networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "db-only"},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": "db"}}},
	}
	pe := v1alpha1.PolicyEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-x"},
		Spec: v1alpha1.PolicyEndpointSpec{
			PolicyRef:            v1alpha1.PolicyReference{Namespace: "ns", Name: "web"},
			PodSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PodIsolation:         []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			PodSelectorEndpoints: []v1alpha1.PodEndpoint{{Namespace: "ns", Name: "web-1", PodIP: "10.0.0.1"}},
			Ingress:              []v1alpha1.EndpointInfo{{CIDR: "10.1.0.0/16"}},
		},
	}
	web := policyset.PodKey{Namespace: "ns", Name: "web-1"}
	free := policyset.PodKey{Namespace: "ns", Name: "free"}
	db := policyset.PodKey{Namespace: "ns", Name: "db-new"}
	pods := []podInfo{{Key: web, Labels: map[string]string{"app": "web"}}, {Key: free}, {Key: db, Labels: map[string]string{"tier": "db"}}}
	var podsets []policyset.Pod
	for _, p := range pods {
		podsets = append(podsets, policyset.Pod{Namespace: p.Key.Namespace, Name: p.Key.Name, Labels: p.Labels})
	}
	result, _ := policyset.Build([]v1alpha1.PolicyEndpoint{pe}, []networkingv1.NetworkPolicy{np}, podsets)
	now := time.Now()
	links := map[int]linkInfo{1: {Index: 1, FirstSeen: now}, 2: {Index: 2, FirstSeen: now}, 3: {Index: 3, FirstSeen: now}, 4: {Index: 4, FirstSeen: now.Add(-time.Hour)}}
	mapping := map[int]policyset.PodKey{1: web, 2: free}
	in := planInput{Mode: Standard, Synced: true, Now: now, Started: now.Add(-2 * time.Hour), Grace: time.Minute, Pods: pods, Links: links, Mapping: mapping, Result: result}

	got := plan(in)
	if tw := got[1]; tw.Endpoint == nil || len(tw.Endpoint.Ingress.Rules) != 1 || !tw.Settled || !tw.Attach {
		t.Fatalf("web pod: %+v", tw)
	}
	if tf := got[2]; tf.Endpoint != nil || !tf.Attach || !tf.Settled {
		t.Fatalf("unselected pod: %+v", tf)
	}
	// db-new is selected by db-only and not placed yet: the unknown
	// interface 3 may be it, so it is isolated (ingress, as db-only).
	if tu := got[3]; tu.Endpoint == nil || !tu.Endpoint.Ingress.Isolated || tu.Endpoint.Egress.Isolated || len(tu.Endpoint.Ingress.Rules) != 0 || tu.Pod != nil {
		t.Fatalf("unknown interface while a selected pod is pending: %+v", tu)
	}
	if _, held := got[4]; held {
		t.Fatalf("interface past its grace period held")
	}
	// An interface that existed before the agent started is not held.
	in.Started = now
	if got := plan(in); got[3].Endpoint != nil {
		t.Fatalf("interface older than the agent held: %+v", got[3])
	}
	in.Started = now.Add(-2 * time.Hour)

	// Once db-new is placed on 3 it gets its own (isolated, unsettled) policy.
	in.Mapping = map[int]policyset.PodKey{1: web, 2: free, 3: db}
	got = plan(in)
	if td := got[3]; td.Pod == nil || *td.Pod != db || td.Endpoint == nil || !td.Endpoint.Ingress.Isolated || td.Settled {
		t.Fatalf("placed db pod: %+v", td)
	}

	// No pending selected pod: unknown interfaces are left open in standard mode...
	in.Mapping = map[int]policyset.PodKey{1: web, 3: db}
	in.Pods = pods[:1]
	got = plan(in)
	if _, held := got[2]; held {
		t.Fatalf("standard mode held an interface no selected pod can be behind: %+v", got[2])
	}
	// ...and denied in strict mode.
	in.Mode = Strict
	got = plan(in)
	if ts := got[2]; ts.Endpoint != denyAll {
		t.Fatalf("strict mode: %+v", ts)
	}

	// Before the first sync: strict denies everything, standard touches nothing.
	in.Synced = false
	got = plan(in)
	for _, i := range []int{1, 2, 3} {
		if got[i].Endpoint != denyAll {
			t.Fatalf("strict before sync, interface %d: %+v", i, got[i])
		}
	}
	in.Mode = Standard
	if got = plan(in); len(got) != 0 {
		t.Fatalf("standard before sync: %+v", got)
	}
}
