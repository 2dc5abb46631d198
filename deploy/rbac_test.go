package deploy_test

import (
	"context"
	"fmt"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/internal/testenv"
)

type serviceAccount struct{ namespace, name string }

var (
	agentAccount      = serviceAccount{"palisade-system", "palisade-agent"}
	controllerAccount = serviceAccount{"palisade-system", "palisade-controller"}
)

func (sa serviceAccount) user() string {
	return fmt.Sprintf("system:serviceaccount:%s:%s", sa.namespace, sa.name)
}

func (sa serviceAccount) groups() []string {
	return []string{"system:serviceaccounts", "system:serviceaccounts:" + sa.namespace, "system:authenticated"}
}

// clientAs returns a client that impersonates sa: the apiserver authorizes
// its requests as sa's.
func clientAs(t *testing.T, env *testenv.Env, sa serviceAccount) client.Client {
	t.Helper()
	config := rest.CopyConfig(env.Config)
	config.Impersonate = rest.ImpersonationConfig{UserName: sa.user(), Groups: sa.groups()}
	c, err := client.New(config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type access struct {
	account                            serviceAccount
	verb, group, resource, subresource string
	namespace                          string
	allowed                            bool
}

func (a access) String() string {
	resource := a.resource
	if a.subresource != "" {
		resource += "/" + a.subresource
	}
	if a.group != "" {
		resource += "." + a.group
	}
	where := "cluster-wide"
	if a.namespace != "" {
		where = "in " + a.namespace
	}
	return fmt.Sprintf("%s %s %s %s", a.account.name, a.verb, resource, where)
}

func allowed(ctx context.Context, c client.Client, a access) (bool, error) {
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   a.account.user(),
		Groups: a.account.groups(),
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Namespace: a.namespace,
		},
	}}
	if err := c.Create(ctx, review); err != nil {
		return false, err
	}
	return review.Status.Allowed, nil
}

// applyRBAC creates the service accounts and their roles for real and
// removes the cluster-scoped ones when t ends.
func applyRBAC(t *testing.T, env *testenv.Env) {
	t.Helper()
	ctx := context.Background()
	var objects []*unstructured.Unstructured
	for _, file := range []string{"namespace.yaml", "rbac-agent.yaml", "rbac-controller.yaml"} {
		objects = append(objects, readObjects(t, file)...)
	}
	for _, obj := range objects {
		if err := env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj.DeepCopy()),
			fieldOwner, client.ForceOwnership); err != nil {
			t.Fatalf("%s: %v", describe(obj), err)
		}
		if obj.GetKind() == "ClusterRole" || obj.GetKind() == "ClusterRoleBinding" {
			t.Cleanup(func() {
				if err := env.Client.Delete(context.Background(), obj.DeepCopy()); err != nil && !apierrors.IsNotFound(err) {
					t.Errorf("deleting %s: %v", describe(obj), err)
				}
			})
		}
	}
}

func TestRBACGrantsLeastPrivilege(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	applyRBAC(t, env)

	const pe, group = "policyendpoints", "networking.k8s.aws"
	agent, controller := agentAccount, controllerAccount
	accesses := []access{
		{agent, "watch", group, pe, "", "", true},
		{agent, "list", group, pe, "", "default", true},
		{agent, "patch", group, pe, "status", "default", true},
		{agent, "update", group, pe, "status", "default", true},
		{agent, "watch", "", "pods", "", "", true},
		{agent, "list", "", "namespaces", "", "", false},
		{agent, "watch", "networking.k8s.io", "networkpolicies", "", "", true},
		{agent, "create", "", "events", "", "default", true},
		{agent, "update", group, pe, "", "default", false},
		{agent, "patch", group, pe, "", "default", false},
		{agent, "create", group, pe, "", "default", false},
		{agent, "delete", group, pe, "", "default", false},
		{agent, "get", "", "secrets", "", "default", false},
		{agent, "list", "", "secrets", "", "", false},
		{agent, "update", "", "pods", "", "default", false},
		{agent, "create", "coordination.k8s.io", "leases", "", "palisade-system", false},

		{controller, "create", group, pe, "", "default", true},
		{controller, "patch", group, pe, "", "default", true},
		{controller, "update", group, pe, "", "default", false},
		{controller, "deletecollection", group, pe, "", "default", false},
		{controller, "delete", "coordination.k8s.io", "leases", "", "palisade-system", false},
		{controller, "delete", group, pe, "", "default", true},
		{controller, "watch", group, pe, "", "", true},
		{controller, "watch", "networking.k8s.io", "networkpolicies", "", "", true},
		{controller, "list", "", "pods", "", "", true},
		{controller, "list", "", "namespaces", "", "", true},
		{controller, "list", "", "services", "", "", true},
		{controller, "watch", "discovery.k8s.io", "endpointslices", "", "", true},
		{controller, "create", "", "events", "", "default", true},
		{controller, "create", "coordination.k8s.io", "leases", "", "palisade-system", true},
		{controller, "update", "coordination.k8s.io", "leases", "", "palisade-system", true},
		{controller, "create", "coordination.k8s.io", "leases", "", "kube-system", false},
		{controller, "update", group, pe, "status", "default", false},
		{controller, "get", "", "secrets", "", "default", false},
		{controller, "create", "networking.k8s.io", "networkpolicies", "", "default", false},
		{controller, "update", "", "pods", "", "default", false},
	}

	// The authorizer sees new bindings after its informers do.
	waitFor(t, "RBAC bindings to take effect", func() (bool, error) {
		agentWatches, err := allowed(ctx, env.Client, accesses[0])
		if err != nil {
			return false, err
		}
		controllerCreates, err := allowed(ctx, env.Client, access{controller, "create", group, pe, "", "default", true})
		return agentWatches && controllerCreates, err
	})
	for _, a := range accesses {
		got, err := allowed(ctx, env.Client, a)
		if err != nil {
			t.Fatalf("%v: %v", a, err)
		}
		if got != a.allowed {
			t.Errorf("%v: allowed = %v, want %v", a, got, a.allowed)
		}
	}
}

// TestRBACAgainstRealRequests makes the requests the binaries make, as their
// service accounts.
func TestRBACAgainstRealRequests(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	applyRBAC(t, env)
	ns := env.Namespace(t)
	agent, controller := clientAs(t, env, agentAccount), clientAs(t, env, controllerAccount)

	endpoint := &v1alpha1.PolicyEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-node1"},
		Spec: v1alpha1.PolicyEndpointSpec{
			PolicyRef: v1alpha1.PolicyReference{Name: "web", Namespace: ns},
			NodeName:  "node1",
		},
	}
	waitFor(t, "the controller creating a PolicyEndpoint", func() (bool, error) {
		err := controller.Create(ctx, endpoint)
		if apierrors.IsForbidden(err) {
			return false, nil // bindings not seen yet
		}
		return err == nil, err
	})

	var seen v1alpha1.PolicyEndpoint
	if err := agent.Get(ctx, client.ObjectKeyFromObject(endpoint), &seen); err != nil {
		t.Fatalf("the agent reading a PolicyEndpoint: %v", err)
	}
	programmed := seen.DeepCopy()
	programmed.Status.ObservedGeneration = seen.Generation
	meta.SetStatusCondition(&programmed.Status.Conditions, metav1.Condition{
		Type: "Programmed", Status: metav1.ConditionTrue, Reason: "Programmed", ObservedGeneration: seen.Generation})
	if err := agent.Status().Patch(ctx, programmed, client.MergeFrom(&seen)); err != nil {
		t.Fatalf("the agent patching PolicyEndpoint status: %v", err)
	}

	tampered := programmed.DeepCopy()
	tampered.Spec.Ingress = []v1alpha1.EndpointInfo{{CIDR: "0.0.0.0/0"}}
	if err := agent.Update(ctx, tampered); !apierrors.IsForbidden(err) {
		t.Errorf("the agent updating a PolicyEndpoint spec: err = %v, want Forbidden", err)
	}
	var secrets unstructured.UnstructuredList
	secrets.SetAPIVersion("v1")
	secrets.SetKind("SecretList")
	if err := agent.List(ctx, &secrets, client.InNamespace(ns)); !apierrors.IsForbidden(err) {
		t.Errorf("the agent listing secrets: err = %v, want Forbidden", err)
	}

	var stored v1alpha1.PolicyEndpoint
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(endpoint), &stored); err != nil {
		t.Fatal(err)
	}
	if len(stored.Spec.Ingress) != 0 || !meta.IsStatusConditionTrue(stored.Status.Conditions, "Programmed") {
		t.Errorf("stored PolicyEndpoint: spec.ingress %v, status %+v; want the agent's status and no ingress",
			stored.Spec.Ingress, stored.Status)
	}
}
