package controller

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

var ingressAndEgress = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}

// TestSemanticsOnAPIServer runs policies through a real apiserver and
// checks the exact content of the PolicyEndpoints the controller writes.
func TestSemanticsOnAPIServer(t *testing.T) {
	c, _ := startController(t)
	x := newNamespace(t, c, "sem-x", "team", "red")
	y := newNamespace(t, c, "sem-y", "team", "blue")
	http := func(n int32) []corev1.ContainerPort {
		return []corev1.ContainerPort{{Name: "http", ContainerPort: n, Protocol: corev1.ProtocolTCP}}
	}
	createPod(t, c, podSpec{ns: x, name: "a", node: "n1", labels: labels("app", "a"), ips: []string{"10.20.0.1"}, ports: http(8080)})
	createPod(t, c, podSpec{ns: x, name: "b", node: "n2", labels: labels("app", "b"), ips: []string{"10.20.0.2", "fd00::2"}, ports: http(9090)})
	createPod(t, c, podSpec{ns: x, name: "c", node: "n1", labels: labels("app", "c"), ips: []string{"10.20.0.3"}})
	createPod(t, c, podSpec{ns: x, name: "host", node: "n1", labels: labels("app", "a"), ips: []string{"192.168.0.1"}, hostNetwork: true})
	createPod(t, c, podSpec{ns: x, name: "done", node: "n1", labels: labels("app", "a"), ips: []string{"10.20.0.9"}, phase: corev1.PodSucceeded})
	createPod(t, c, podSpec{ns: x, name: "pending", node: "", labels: labels("app", "a")})
	ya := createPod(t, c, podSpec{ns: y, name: "a", node: "n1", labels: labels("app", "a"), ips: []string{"10.20.1.1"}, ports: http(8080)})
	yb := createPod(t, c, podSpec{ns: y, name: "b", node: "n2", labels: labels("app", "b"), ips: []string{"10.20.1.2"}, ports: http(8080)})
	svc := createService(t, c, y, "web", 80, intstr.FromString("http"))
	createSlice(t, c, y, "web-1", "web", 8080, ya, yb)

	cases := []struct {
		name string
		spec networkingv1.NetworkPolicySpec
		want []string
	}{
		{"default deny skips hostNetwork, terminated and unscheduled pods",
			networkingv1.NetworkPolicySpec{},
			[]string{"node=n1 iso=[Ingress] pods=[a@10.20.0.1 c@10.20.0.3] in=[] eg=[]", "node=n2 iso=[Ingress] pods=[b@10.20.0.2 b@fd00::2] in=[] eg=[]"}},
		{"pod selector and namespace selector peers",
			networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "a"), Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: sel("app", "b")}, {NamespaceSelector: sel("team", "blue"), PodSelector: sel("app", "a")}}}}},
			[]string{"node=n1 iso=[Ingress] pods=[a@10.20.0.1] in=[10.20.0.2/32 10.20.1.1/32 fd00::2/128] eg=[]"}},
		{"ipBlock with except and a port range",
			networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "c"), Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{func() networkingv1.NetworkPolicyPort {
					p := tcpPort(1000)
					end := int32(2000)
					p.EndPort = &end
					return p
				}()},
				From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "172.16.0.0/12", Except: []string{"172.16.1.0/24"}}}}}}},
			[]string{"node=n1 iso=[Ingress] pods=[c@10.20.0.3] in=[172.16.0.0/12!172.16.1.0/24(TCP:1000-2000)] eg=[]"}},
		{"named port resolved per target pod",
			networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{tcpPort("http")},
				From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "blue")}}}}},
			[]string{
				"node=n1 iso=[Ingress] pods=[a@10.20.0.1] in=[10.20.1.1/32(TCP:8080) 10.20.1.2/32(TCP:8080)] eg=[]",
				"node=n1 iso=[Ingress] pods=[c@10.20.0.3] in=[] eg=[]",
				"node=n2 iso=[Ingress] pods=[b@10.20.0.2 b@fd00::2] in=[10.20.1.1/32(TCP:9090) 10.20.1.2/32(TCP:9090)] eg=[]"}},
		{"egress to pods also allows their Service's cluster IP on the service port",
			networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "c"), PolicyTypes: ingressAndEgress, Egress: []networkingv1.NetworkPolicyEgressRule{{
				Ports: []networkingv1.NetworkPolicyPort{tcpPort("http")}, To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "blue")}}}}},
			[]string{"node=n1 iso=[Ingress Egress] pods=[c@10.20.0.3] in=[] eg=[" + svc.Spec.ClusterIP + "/32(TCP:80) 10.20.1.1/32(TCP:8080) 10.20.1.2/32(TCP:8080)]"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := "p" + string(rune('a'+i))
			create(t, c, netpol(x, name, tc.spec))
			eventually(t, c, x, name, tc.want...)
		})
	}
}

// TestReactsToEveryChange follows one policy through the changes that alter
// its result and checks the objects after each.
func TestReactsToEveryChange(t *testing.T) {
	c, _ := startController(t)
	ctx := context.Background()
	x := newNamespace(t, c, "chg-x")
	y := newNamespace(t, c, "chg-y")
	createPod(t, c, podSpec{ns: x, name: "web", node: "n1", labels: labels("app", "web"), ips: []string{"10.1.0.1"}})
	client1 := createPod(t, c, podSpec{ns: x, name: "client", node: "n1", labels: labels("app", "other"), ips: []string{"10.1.0.2"}})
	np := netpol(x, "web", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web"), PolicyTypes: ingressAndEgress,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("role", "client")}, {NamespaceSelector: sel("access", "yes")}}}},
		Egress:  []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{tcpPort(5432)}, To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("kubernetes.io/metadata.name", y), PodSelector: sel("app", "db")}}}},
	})
	create(t, c, np)
	eventually(t, c, x, "web", "node=n1 iso=[Ingress Egress] pods=[web@10.1.0.1] in=[] eg=[]")

	t.Log("pod relabel adds a peer")
	client1.Labels["role"] = "client"
	if err := c.Update(ctx, client1); err != nil {
		t.Fatal(err)
	}
	eventually(t, c, x, "web", "node=n1 iso=[Ingress Egress] pods=[web@10.1.0.1] in=[10.1.0.2/32] eg=[]")

	t.Log("namespace relabel adds its pods")
	createPod(t, c, podSpec{ns: y, name: "db", node: "n2", labels: labels("app", "db"), ips: []string{"10.1.1.1"}})
	eventually(t, c, x, "web", "node=n1 iso=[Ingress Egress] pods=[web@10.1.0.1] in=[10.1.0.2/32] eg=[10.1.1.1/32(TCP:5432)]")
	var yns corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: y}, &yns); err != nil {
		t.Fatal(err)
	}
	yns.Labels["access"] = "yes"
	if err := c.Update(ctx, &yns); err != nil {
		t.Fatal(err)
	}
	eventually(t, c, x, "web", "node=n1 iso=[Ingress Egress] pods=[web@10.1.0.1] in=[10.1.0.2/32 10.1.1.1/32] eg=[10.1.1.1/32(TCP:5432)]")

	t.Log("IP assignment makes a new pod a target")
	web2 := createPod(t, c, podSpec{ns: x, name: "web2", node: "n2", labels: labels("app", "web")})
	setPodIPs(t, c, web2, corev1.PodRunning, "10.1.0.3")
	eventually(t, c, x, "web",
		"node=n1 iso=[Ingress Egress] pods=[web@10.1.0.1] in=[10.1.0.2/32 10.1.1.1/32] eg=[10.1.1.1/32(TCP:5432)]",
		"node=n2 iso=[Ingress Egress] pods=[web2@10.1.0.3] in=[10.1.0.2/32 10.1.1.1/32] eg=[10.1.1.1/32(TCP:5432)]")

	t.Log("Service and EndpointSlice add the cluster IP")
	var db corev1.Pod
	if err := c.Get(ctx, client.ObjectKey{Namespace: y, Name: "db"}, &db); err != nil {
		t.Fatal(err)
	}
	svc := createService(t, c, y, "db", 15432, intstr.FromInt32(5432))
	createSlice(t, c, y, "db-1", "db", 5432, &db)
	withService := func(pods string) []string {
		return []string{
			"node=n1 iso=[Ingress Egress] pods=[web@10.1.0.1] in=[10.1.0.2/32 10.1.1.1/32] eg=[" + svc.Spec.ClusterIP + "/32(TCP:15432) 10.1.1.1/32(TCP:5432)]",
			"node=n2 iso=[Ingress Egress] pods=[" + pods + "] in=[10.1.0.2/32 10.1.1.1/32] eg=[" + svc.Spec.ClusterIP + "/32(TCP:15432) 10.1.1.1/32(TCP:5432)]"}
	}
	eventually(t, c, x, "web", withService("web2@10.1.0.3")...)

	t.Log("pod deletion removes a target")
	if err := c.Delete(ctx, web2, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, c, x, "web", withService("web2@10.1.0.3")[:1]...)

	t.Log("policy update")
	if err := c.Get(ctx, client.ObjectKeyFromObject(np), np); err != nil {
		t.Fatal(err)
	}
	np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	if err := c.Update(ctx, np); err != nil {
		t.Fatal(err)
	}
	eventually(t, c, x, "web", "node=n1 iso=[Ingress] pods=[web@10.1.0.1] in=[10.1.0.2/32 10.1.1.1/32] eg=[]")

	t.Log("policy deletion deletes its objects")
	if err := c.Delete(ctx, np); err != nil {
		t.Fatal(err)
	}
	eventually(t, c, x, "web")
}

// TestWritesOnlyChangedObjects checks that a change concerning one node's
// pods rewrites that node's object only.
func TestWritesOnlyChangedObjects(t *testing.T) {
	c, _ := startController(t)
	ctx := context.Background()
	x := newNamespace(t, c, "wr-x")
	createPod(t, c, podSpec{ns: x, name: "a", node: "n1", labels: labels("app", "web"), ips: []string{"10.2.0.1"}})
	createPod(t, c, podSpec{ns: x, name: "b", node: "n2", labels: labels("app", "web"), ips: []string{"10.2.0.2"}})
	create(t, c, netpol(x, "web", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web")}))
	eventually(t, c, x, "web", "node=n1 iso=[Ingress] pods=[a@10.2.0.1] in=[] eg=[]", "node=n2 iso=[Ingress] pods=[b@10.2.0.2] in=[] eg=[]")
	versions := func() map[string]string {
		out := map[string]string{}
		for _, o := range listPolicyEndpoints(t, c, x, "web") {
			out[o.Spec.NodeName] = o.ResourceVersion
		}
		return out
	}
	before := versions()
	updates, creates := testutil.ToFloat64(writesTotal.WithLabelValues("update")), testutil.ToFloat64(writesTotal.WithLabelValues("create"))
	createPod(t, c, podSpec{ns: x, name: "c", node: "n2", labels: labels("app", "web"), ips: []string{"10.2.0.3"}})
	// An unrelated pod and a status-only change must not cause writes either.
	other := createPod(t, c, podSpec{ns: x, name: "unrelated", node: "n1", labels: labels("app", "db"), ips: []string{"10.2.0.9"}})
	other.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if err := c.Status().Update(ctx, other); err != nil {
		t.Fatal(err)
	}
	eventually(t, c, x, "web", "node=n1 iso=[Ingress] pods=[a@10.2.0.1] in=[] eg=[]", "node=n2 iso=[Ingress] pods=[b@10.2.0.2 c@10.2.0.3] in=[] eg=[]")
	time.Sleep(300 * time.Millisecond)
	after := versions()
	if after["n1"] != before["n1"] {
		t.Errorf("node n1's object was rewritten (%s -> %s)", before["n1"], after["n1"])
	}
	if after["n2"] == before["n2"] {
		t.Errorf("node n2's object was not updated")
	}
	if u, c := testutil.ToFloat64(writesTotal.WithLabelValues("update"))-updates, testutil.ToFloat64(writesTotal.WithLabelValues("create"))-creates; u != 1 || c != 0 {
		t.Errorf("the controller wrote %v updates and %v creates, want exactly the one update of n2's object", u, c)
	}
}

// TestRestoresAndCollects checks that objects altered or left behind by
// someone else are put right.
func TestRestoresAndCollects(t *testing.T) {
	c, _ := startController(t)
	ctx := context.Background()
	x := newNamespace(t, c, "gc-x")
	createPod(t, c, podSpec{ns: x, name: "a", node: "n1", labels: labels("app", "web"), ips: []string{"10.3.0.1"}})
	create(t, c, netpol(x, "web", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web")}))
	want := "node=n1 iso=[Ingress] pods=[a@10.3.0.1] in=[] eg=[]"
	eventually(t, c, x, "web", want)

	objs := listPolicyEndpoints(t, c, x, "web")
	tampered := objs[0].DeepCopy()
	tampered.Spec.Ingress = []v1alpha1.EndpointInfo{{CIDR: "0.0.0.0/0"}}
	if err := c.Update(ctx, tampered); err != nil {
		t.Fatal(err)
	}
	eventually(t, c, x, "web", want)

	if err := c.Delete(ctx, &objs[0]); err != nil {
		t.Fatal(err)
	}
	eventually(t, c, x, "web", want)

	orphan := &v1alpha1.PolicyEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: x, Name: "gone-123", Labels: map[string]string{v1alpha1.PolicyNameLabel: "gone", v1alpha1.NodeLabel: "n1"}},
		Spec:       v1alpha1.PolicyEndpointSpec{PolicyRef: v1alpha1.PolicyReference{Name: "gone", Namespace: x}, NodeName: "n1"},
	}
	create(t, c, orphan)
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := c.Get(ctx, client.ObjectKeyFromObject(orphan), orphan)
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("object of a missing policy was not collected (err %v)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProblemsBecomeEvents checks that a named port no pod defines gives a
// Warning Event on the NetworkPolicy and allows nothing.
func TestProblemsBecomeEvents(t *testing.T) {
	c, _ := startController(t)
	ctx := context.Background()
	x := newNamespace(t, c, "ev-x")
	createPod(t, c, podSpec{ns: x, name: "a", node: "n1", labels: labels("app", "web"), ips: []string{"10.4.0.1"}})
	create(t, c, netpol(x, "web", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{tcpPort("nonexistent")}}}}))
	eventually(t, c, x, "web", "node=n1 iso=[Ingress] pods=[a@10.4.0.1] in=[] eg=[]")
	deadline := time.Now().Add(20 * time.Second)
	for {
		var list eventsv1.EventList
		if err := c.List(ctx, &list, client.InNamespace(x)); err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(list.Items, func(e eventsv1.Event) bool {
			return e.Regarding.Kind == "NetworkPolicy" && e.Regarding.Name == "web" && e.Reason == "UnresolvedNamedPort" && e.Type == corev1.EventTypeWarning
		}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no UnresolvedNamedPort event; events: %+v", list.Items)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
