package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/agent/policyset"
	"github.com/palisade-net/palisade/api/v1alpha1"
)

// ConditionProgrammed is the PolicyEndpoint condition the agent maintains.
const ConditionProgrammed = "Programmed"

// Reasons of the Programmed condition.
const (
	ReasonProgrammed        = "Programmed"
	ReasonInvalid           = "InvalidPolicy"     // cannot be converted; its pods stay isolated
	ReasonProgrammingFailed = "ProgrammingFailed" // the dataplane refused (map full...); its pods stay closed
	ReasonWaitingForChunks  = "WaitingForChunks"  // newest revision incomplete; the previous one is enforced
	ReasonNoInterface       = "InterfaceNotFound" // a selected pod's interface is not found (yet)
)

type condition struct {
	generation int64
	status     metav1.ConditionStatus
	reason     string
	message    string
}

// conditionOf decides the Programmed condition of one PolicyEndpoint.
func conditionOf(pe *v1alpha1.PolicyEndpoint, out outcome, waiting map[policyset.SetKey]policyset.Waiting) condition {
	c := condition{generation: pe.Generation, status: metav1.ConditionTrue, reason: ReasonProgrammed, message: "enforced by the node's dataplane"}
	key := policyset.SetOf(pe)
	if err := out.result.Errors[key]; err != nil {
		return condition{pe.Generation, metav1.ConditionFalse, ReasonInvalid, err.Error() + "; selected pods stay isolated without this policy's rules"}
	}
	if w, ok := waiting[key]; ok {
		msg := w.String()
		if w.Enforced != "" {
			msg += fmt.Sprintf("; enforcing revision %q until complete", w.Enforced)
		} else {
			msg += "; selected pods are isolated until it is complete"
		}
		return condition{pe.Generation, metav1.ConditionFalse, ReasonWaitingForChunks, msg}
	}
	var failures []string
	for pod, err := range out.podErrors {
		for _, s := range out.result.Sets[pod] {
			if s == key {
				failures = append(failures, fmt.Sprintf("pod %s: %v", pod, err))
				break
			}
		}
	}
	if len(failures) > 0 {
		sort.Strings(failures)
		return condition{pe.Generation, metav1.ConditionFalse, ReasonProgrammingFailed, strings.Join(failures, "; ") + "; these pods stay closed"}
	}
	var unplaced []string
	for pod := range out.unplaced {
		if slices.Contains(out.result.Sets[pod], key) {
			unplaced = append(unplaced, pod.String())
		}
	}
	if len(unplaced) > 0 {
		sort.Strings(unplaced)
		return condition{pe.Generation, metav1.ConditionFalse, ReasonNoInterface, "no interface found for pod " + strings.Join(unplaced, ", ") +
			"; enforced once its interface appears"}
	}
	return c
}

// reportStatus patches the status of every PolicyEndpoint whose condition
// changed, and records an Event for every new failure.
func (a *Agent) reportStatus(ctx context.Context, out outcome) error {
	waiting := map[policyset.SetKey]policyset.Waiting{}
	for _, w := range out.waiting {
		waiting[w.Key] = w
	}
	var errs []error
	present := map[string]bool{}
	for i := range out.pes {
		pe := &out.pes[i]
		id := pe.Namespace + "/" + pe.Name
		present[id] = true
		c := conditionOf(pe, out, waiting)
		if prev, ok := a.conditions[id]; ok && prev == c {
			continue
		}
		if upToDate(pe, c) {
			a.conditions[id] = c
			continue
		}
		patched := pe.DeepCopy()
		patched.Status.ObservedGeneration = c.generation
		meta.SetStatusCondition(&patched.Status.Conditions, metav1.Condition{
			Type:               ConditionProgrammed,
			Status:             c.status,
			Reason:             c.reason,
			Message:            truncate(c.message, 32768),
			ObservedGeneration: c.generation,
		})
		if err := a.client.Status().Patch(ctx, patched, client.MergeFrom(pe)); err != nil {
			if !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
			}
			continue
		}
		if c.status == metav1.ConditionFalse && (a.conditions[id].reason != c.reason || a.conditions[id].message != c.message) {
			eventType := corev1.EventTypeWarning
			if c.reason == ReasonWaitingForChunks {
				eventType = corev1.EventTypeNormal
			}
			a.recorder.Eventf(patched, nil, eventType, c.reason, "Program", "%s", truncate(c.message, 1000))
		}
		a.conditions[id] = c
		a.log.V(1).Info("status", "policyEndpoint", id, "generation", c.generation, "programmed", c.status, "reason", c.reason)
	}
	for id := range a.conditions {
		if !present[id] {
			delete(a.conditions, id)
		}
	}
	return errors.Join(errs...)
}

func upToDate(pe *v1alpha1.PolicyEndpoint, c condition) bool {
	if pe.Status.ObservedGeneration != c.generation {
		return false
	}
	cur := meta.FindStatusCondition(pe.Status.Conditions, ConditionProgrammed)
	return cur != nil && cur.Status == c.status && cur.Reason == c.reason && cur.Message == truncate(c.message, 32768) && cur.ObservedGeneration == c.generation
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
