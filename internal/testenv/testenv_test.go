package testenv

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestCRDsParsesThePolicyEndpointCRD(t *testing.T) {
	crds, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, crd := range crds {
		names = append(names, crd.Name)
	}
	if len(crds) != 1 || crds[0].Name != "policyendpoints.networking.k8s.aws" {
		t.Fatalf("CRDs = %v, want [policyendpoints.networking.k8s.aws]", names)
	}
}

func TestStartControlPlaneWithoutAssetsSaysToRunMakeTestenv(t *testing.T) {
	_, err := StartControlPlane(context.Background(), Options{AssetsDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "make testenv") {
		t.Fatalf("err = %v, want one telling to run `make testenv`", err)
	}
}

func TestNamespacePrefix(t *testing.T) {
	for name, want := range map[string]string{
		"TestFoo/sub_case":       "testfoo-sub-case-",
		"123":                    "t123-",
		"///":                    "t-",
		strings.Repeat("a", 100): strings.Repeat("a", 40) + "-",
	} {
		if got := namespacePrefix(name); got != want {
			t.Errorf("namespacePrefix(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestPolicyEndpointRoundTrip(t *testing.T) {
	env := Shared(t)
	ctx := context.Background()
	ns := env.Namespace(t)

	tcp := corev1.ProtocolTCP
	port, endPort := int32(8000), int32(8080)
	want := &v1alpha1.PolicyEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-node1",
			Labels: map[string]string{v1alpha1.NodeLabel: "node1", v1alpha1.PolicyNameLabel: "web"}},
		Spec: v1alpha1.PolicyEndpointSpec{
			PodSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyRef:    v1alpha1.PolicyReference{Name: "web", Namespace: ns},
			PodIsolation: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			PodSelectorEndpoints: []v1alpha1.PodEndpoint{
				{HostIP: "192.168.1.10", PodIP: "10.1.0.5", Name: "web-0", Namespace: ns},
			},
			Ingress: []v1alpha1.EndpointInfo{{
				CIDR: "10.0.0.0/8", Except: []v1alpha1.NetworkAddress{"10.9.0.0/16"},
				Ports: []v1alpha1.Port{{Protocol: &tcp, Port: &port, EndPort: &endPort}},
			}},
			NodeName: "node1",
		},
	}
	if err := env.Client.Create(ctx, want.DeepCopy()); err != nil {
		t.Fatal(err)
	}

	got := &v1alpha1.PolicyEndpoint{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(want), got); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got.Spec, want.Spec) {
		t.Fatalf("spec read back differs:\n got %+v\nwant %+v", got.Spec, want.Spec)
	}

	// status is a subresource: the agent's update of it must stick and
	// leave the generation alone.
	got.Status.ObservedGeneration = got.Generation
	meta.SetStatusCondition(&got.Status.Conditions, metav1.Condition{
		Type: "Programmed", Status: metav1.ConditionTrue, Reason: "Programmed", ObservedGeneration: got.Generation})
	if err := env.Client.Status().Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	again := &v1alpha1.PolicyEndpoint{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(want), again); err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionTrue(again.Status.Conditions, "Programmed") || again.Generation != got.Generation {
		t.Fatalf("after status update: status %+v generation %d, want Programmed and generation %d",
			again.Status, again.Generation, got.Generation)
	}

	var list v1alpha1.PolicyEndpointList
	if err := env.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{v1alpha1.NodeLabel: "node1"}); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != want.Name {
		t.Fatalf("list by node label returned %d items, want %s", len(list.Items), want.Name)
	}
}

func TestPolicyEndpointValidationRejectsEndPortBelowPort(t *testing.T) {
	env := Shared(t)
	ns := env.Namespace(t)
	port, endPort := int32(8080), int32(80)
	pe := &v1alpha1.PolicyEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad"},
		Spec: v1alpha1.PolicyEndpointSpec{
			PolicyRef: v1alpha1.PolicyReference{Name: "p", Namespace: ns},
			Ingress:   []v1alpha1.EndpointInfo{{CIDR: "10.0.0.0/8", Ports: []v1alpha1.Port{{Port: &port, EndPort: &endPort}}}},
		},
	}
	err := env.Client.Create(context.Background(), pe)
	if !apierrors.IsInvalid(err) {
		t.Fatalf("creating endPort < port: err = %v, want Invalid", err)
	}
}

func TestKubeconfigFileWorksForAnotherClient(t *testing.T) {
	env := Shared(t)
	config, err := clientcmd.BuildConfigFromFlags("", env.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace(t)
	var got corev1.Namespace
	if err := c.Get(context.Background(), client.ObjectKey{Name: ns}, &got); err != nil {
		t.Fatalf("reading namespace %s through %s: %v", ns, env.KubeconfigPath, err)
	}
}

func TestAuthorizationIsRBAC(t *testing.T) {
	env := Shared(t)
	config, err := env.AddUser("nobody")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	err = c.List(context.Background(), &corev1.SecretList{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("a user without bindings listing secrets: err = %v, want Forbidden", err)
	}
}

// BenchmarkStartControlPlane measures a start (etcd, kube-apiserver, CRDs
// served) and a stop; run with -benchtime=1x, each takes seconds.
func BenchmarkStartControlPlane(b *testing.B) {
	var starting, stopping time.Duration
	for b.Loop() {
		begin := time.Now()
		cp, err := StartControlPlane(context.Background(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		started := time.Now()
		if err := cp.Stop(); err != nil {
			b.Fatal(err)
		}
		starting += started.Sub(begin)
		stopping += time.Since(started)
	}
	b.ReportMetric(starting.Seconds()/float64(b.N), "start-s/op")
	b.ReportMetric(stopping.Seconds()/float64(b.N), "stop-s/op")
}
