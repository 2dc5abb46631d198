package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// freeAddresses returns two distinct loopback addresses with free ports;
// both listeners are held until both are chosen, since the kernel may hand
// a just-closed port out again.
func freeAddresses(t *testing.T) (string, string) {
	t.Helper()
	var addresses [2]string
	for i := range addresses {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addresses[i] = l.Addr().String()
	}
	return addresses[0], addresses[1]
}

type replica struct {
	cancel  context.CancelFunc
	done    chan struct{} // closed when run returns
	err     error
	metrics string
	probe   string
}

func startReplica(t *testing.T, env *testenv.Env, leaseNS string) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{cancel: cancel, done: make(chan struct{})}
	r.metrics, r.probe = freeAddresses(t)
	go func() {
		defer close(r.done)
		r.err = run(ctx, []string{"--kubeconfig=" + env.KubeconfigPath, "--metrics-bind-address=" + r.metrics,
			"--health-probe-bind-address=" + r.probe, "--leader-elect", "--leader-election-namespace=" + leaseNS, "--zap-log-level=error"})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Errorf("replica did not stop")
		}
	})
	return r
}

func get(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(body), err
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTwoReplicasFailOver runs two controller replicas with leader election:
// one leads and compiles; when it stops, the other takes over.
func TestTwoReplicasFailOver(t *testing.T) {
	env := testenv.Shared(t)
	c := env.Client
	ctx := context.Background()
	ns := env.Namespace(t)
	first := startReplica(t, env, ns)
	waitFor(t, "the first replica to lead", 30*time.Second, func() bool {
		var lease coordinationv1.Lease
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "palisade-controller.palisade.io"}, &lease) == nil &&
			lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != ""
	})
	second := startReplica(t, env, ns)
	waitFor(t, "the second replica to be healthy", 30*time.Second, func() bool {
		_, err := get("http://" + second.probe + "/healthz")
		return err == nil
	})

	compiles := func(name string) {
		t.Helper()
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "example.invalid/x"}}}}
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.9.0.1", PodIPs: []corev1.PodIP{{IP: "10.9.0.1"}}}
		if err := c.Status().Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}}}
		if err := c.Create(ctx, np); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "PolicyEndpoint of "+name, 60*time.Second, func() bool {
			var list v1alpha1.PolicyEndpointList
			return c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{v1alpha1.PolicyNameLabel: name}) == nil && len(list.Items) == 1
		})
	}
	compiles("before")
	body, err := get("http://" + first.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, metric := range []string{"palisade_controller_compile_seconds_count", "palisade_controller_policyendpoint_writes_total{operation=\"create\"}", "controller_runtime_reconcile_total"} {
		if !strings.Contains(body, metric) {
			t.Errorf("metrics lack %s", metric)
		}
	}

	first.cancel()
	<-first.done
	compiles("after")
}
