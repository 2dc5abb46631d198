// Package controller runs the policy compiler against a cluster: it feeds
// controller/compile's index from watches, reconciles each NetworkPolicy
// into its PolicyEndpoints, and reports problems as Events.
package controller

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/controller/compile"
)

// DefaultBatchDelay is how long a policy waits after a change before it is
// compiled, so that a burst of changes costs one compilation.
const DefaultBatchDelay = 10 * time.Millisecond

// Reconciler keeps every NetworkPolicy's PolicyEndpoints equal to its
// compilation.
type Reconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	Compile  compile.Options
	// BatchDelay: 0 means DefaultBatchDelay.
	BatchDelay time.Duration
	// MaxConcurrentReconciles: 0 means 4.
	MaxConcurrentReconciles int
	// SkipNameValidation allows several controllers in one process (tests).
	SkipNameValidation bool

	mu    sync.Mutex
	index *compile.Index
	// pendingSince is when the oldest unprocessed change of a policy happened.
	pendingSince map[types.NamespacedName]time.Time
	// reported holds the problems last reported per policy, so that a
	// recompilation with the same problems does not repeat its Events.
	reported map[types.NamespacedName][]compile.Problem
	desired  map[types.NamespacedName]int
}

// SetupWithManager registers the controller and its watches.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.index = compile.NewIndex()
	r.pendingSince = map[types.NamespacedName]time.Time{}
	r.reported = map[types.NamespacedName][]compile.Problem{}
	r.desired = map[types.NamespacedName]int{}
	if r.BatchDelay == 0 {
		r.BatchDelay = DefaultBatchDelay
	}
	workers := r.MaxConcurrentReconciles
	if workers == 0 {
		workers = 4
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("palisade-policyendpoints").
		WithOptions(controller.Options{MaxConcurrentReconciles: workers, SkipNameValidation: &r.SkipNameValidation}).
		Watches(&networkingv1.NetworkPolicy{}, r.indexHandler(
			func(o client.Object) compile.PolicyKeys { return r.index.UpsertPolicy(o.(*networkingv1.NetworkPolicy)) },
			func(k types.NamespacedName) compile.PolicyKeys { return r.index.DeletePolicy(k) })).
		Watches(&corev1.Pod{}, r.indexHandler(
			func(o client.Object) compile.PolicyKeys { return r.index.UpsertPod(o.(*corev1.Pod)) },
			func(k types.NamespacedName) compile.PolicyKeys { return r.index.DeletePod(k) })).
		Watches(&corev1.Namespace{}, r.indexHandler(
			func(o client.Object) compile.PolicyKeys { return r.index.UpsertNamespace(o.(*corev1.Namespace)) },
			func(k types.NamespacedName) compile.PolicyKeys { return r.index.DeleteNamespace(k.Name) })).
		Watches(&corev1.Service{}, r.indexHandler(
			func(o client.Object) compile.PolicyKeys { return r.index.UpsertService(o.(*corev1.Service)) },
			func(k types.NamespacedName) compile.PolicyKeys { return r.index.DeleteService(k) })).
		Watches(&discoveryv1.EndpointSlice{}, r.indexHandler(
			func(o client.Object) compile.PolicyKeys {
				return r.index.UpsertEndpointSlice(o.(*discoveryv1.EndpointSlice))
			},
			func(k types.NamespacedName) compile.PolicyKeys { return r.index.DeleteEndpointSlice(k) })).
		Watches(&v1alpha1.PolicyEndpoint{}, r.policyEndpointHandler()).
		Complete(r)
}

type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]

// indexHandler applies object events to the index and queues the policies
// they affect.
func (r *Reconciler) indexHandler(upsert func(client.Object) compile.PolicyKeys, remove func(types.NamespacedName) compile.PolicyKeys) handler.EventHandler {
	apply := func(q queue, change func() compile.PolicyKeys) {
		now := time.Now()
		r.mu.Lock()
		affected := change()
		for k := range affected {
			if _, pending := r.pendingSince[k]; !pending {
				r.pendingSince[k] = now
			}
		}
		for kind, n := range r.index.Counts() {
			indexObjects.WithLabelValues(kind).Set(float64(n))
		}
		r.mu.Unlock()
		for k := range affected {
			q.AddAfter(reconcile.Request{NamespacedName: k}, r.BatchDelay)
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q queue) {
			apply(q, func() compile.PolicyKeys { return upsert(e.Object) })
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q queue) {
			apply(q, func() compile.PolicyKeys { return upsert(e.ObjectNew) })
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q queue) {
			apply(q, func() compile.PolicyKeys { return remove(client.ObjectKeyFromObject(e.Object)) })
		},
	}
}

// policyEndpointHandler queues a policy when one of its objects is
// created, deleted or has its spec changed by someone, so that stale
// objects are collected and altered ones restored.
func (r *Reconciler) policyEndpointHandler() handler.EventHandler {
	enqueue := func(o client.Object, q queue) {
		if pe, ok := o.(*v1alpha1.PolicyEndpoint); ok && pe.Spec.PolicyRef.Name != "" {
			q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: pe.Namespace, Name: pe.Spec.PolicyRef.Name}}, r.BatchDelay)
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q queue) { enqueue(e.Object, q) },
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q queue) {
			if e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() {
				enqueue(e.ObjectNew, q)
			}
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q queue) { enqueue(e.Object, q) },
	}
}

// Reconcile writes the policy's desired PolicyEndpoints (creating and
// updating before deleting, so that chunk sets stay whole) and deletes the
// objects it no longer wants.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	start := time.Now()
	r.mu.Lock()
	result := r.index.Compile(req.NamespacedName, r.Compile)
	known := r.index.HasPolicy(req.NamespacedName)
	since, pending := r.pendingSince[req.NamespacedName]
	delete(r.pendingSince, req.NamespacedName)
	r.desired[req.NamespacedName] = len(result.Objects)
	if len(result.Objects) == 0 {
		delete(r.desired, req.NamespacedName)
	}
	total := 0
	for _, n := range r.desired {
		total += n
	}
	r.mu.Unlock()
	compileSeconds.Observe(time.Since(start).Seconds())
	policyEndpoints.Set(float64(total))

	var policy networkingv1.NetworkPolicy
	err := r.Client.Get(ctx, req.NamespacedName, &policy)
	switch {
	case err == nil && !known:
		// The index has not seen the policy yet: do not delete its objects.
		return reconcile.Result{RequeueAfter: r.BatchDelay}, nil
	case apierrors.IsNotFound(err):
		if known {
			return reconcile.Result{RequeueAfter: r.BatchDelay}, nil
		}
	case err != nil:
		return reconcile.Result{}, err
	}

	var existing v1alpha1.PolicyEndpointList
	if err := r.Client.List(ctx, &existing, client.InNamespace(req.Namespace),
		client.MatchingLabels{v1alpha1.PolicyNameLabel: compile.PolicyLabelValue(req.Name)}); err != nil {
		return reconcile.Result{}, err
	}
	current := map[string]*v1alpha1.PolicyEndpoint{}
	for i := range existing.Items {
		if existing.Items[i].Spec.PolicyRef.Name == req.Name {
			current[existing.Items[i].Name] = &existing.Items[i]
		}
	}
	wanted := map[string]bool{}
	for i := range result.Objects {
		want := &result.Objects[i]
		wanted[want.Name] = true
		have := current[want.Name]
		if have == nil {
			if err := r.Client.Create(ctx, want); apierrors.IsAlreadyExists(err) {
				var taken v1alpha1.PolicyEndpoint
				if err := r.Client.Get(ctx, client.ObjectKeyFromObject(want), &taken); err == nil && taken.Spec.PolicyRef.Name != req.Name {
					return reconcile.Result{}, fmt.Errorf("PolicyEndpoint %s belongs to policy %s", want.Name, taken.Spec.PolicyRef.Name)
				}
				// The cache has not seen our earlier write yet.
				return reconcile.Result{RequeueAfter: r.BatchDelay}, nil
			} else if err != nil {
				return reconcile.Result{}, fmt.Errorf("creating PolicyEndpoint %s: %w", want.Name, err)
			}
			writesTotal.WithLabelValues("create").Inc()
			continue
		}
		if sameContent(have, want) {
			unchangedTotal.Inc()
			continue
		}
		patch := client.MergeFromWithOptions(have.DeepCopy(), client.MergeFromWithOptimisticLock{})
		have.Spec = want.Spec
		have.Labels = want.Labels
		have.OwnerReferences = want.OwnerReferences
		if err := r.Client.Patch(ctx, have, patch); apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return reconcile.Result{RequeueAfter: r.BatchDelay}, nil
		} else if err != nil {
			return reconcile.Result{}, fmt.Errorf("updating PolicyEndpoint %s: %w", want.Name, err)
		}
		writesTotal.WithLabelValues("update").Inc()
	}
	for name, have := range current {
		if wanted[name] {
			continue
		}
		if err := r.Client.Delete(ctx, have, client.Preconditions{UID: &have.UID}); err != nil && !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("deleting PolicyEndpoint %s: %w", name, err)
		}
		writesTotal.WithLabelValues("delete").Inc()
	}
	if pending {
		changeLatencySeconds.Observe(time.Since(since).Seconds())
	}
	r.report(&policy, req.NamespacedName, result.Problems, err == nil)
	logger.V(1).Info("reconciled", "objects", len(result.Objects), "problems", len(result.Problems), "duration", time.Since(start))
	return reconcile.Result{}, nil
}

// report emits an Event per problem on the policy, once per distinct set.
func (r *Reconciler) report(policy *networkingv1.NetworkPolicy, key types.NamespacedName, problems []compile.Problem, exists bool) {
	r.mu.Lock()
	same := slices.Equal(r.reported[key], problems)
	if exists && len(problems) > 0 {
		r.reported[key] = problems
	} else {
		delete(r.reported, key)
	}
	r.mu.Unlock()
	if same || !exists || r.Recorder == nil {
		return
	}
	for _, p := range problems {
		problemsTotal.WithLabelValues(p.Reason).Inc()
		r.Recorder.Eventf(policy, nil, corev1.EventTypeWarning, p.Reason, "Compile", "%s", p.Message)
	}
}

// sameContent compares what the controller owns in an object.
func sameContent(have, want *v1alpha1.PolicyEndpoint) bool {
	return reflect.DeepEqual(have.Spec, want.Spec) && reflect.DeepEqual(have.Labels, want.Labels) &&
		reflect.DeepEqual(have.OwnerReferences, want.OwnerReferences)
}
