package agent

import (
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/palisade-net/palisade/agent/policyset"
	"github.com/palisade-net/palisade/api/v1alpha1"
)

func TestConditionOf(t *testing.T) {
	pe := func(name string, chunk *v1alpha1.Chunk) *v1alpha1.PolicyEndpoint {
		return &v1alpha1.PolicyEndpoint{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: 3},
			Spec:       v1alpha1.PolicyEndpointSpec{PolicyRef: v1alpha1.PolicyReference{Namespace: "ns", Name: "web"}, Chunk: chunk},
		}
	}
	ok, invalid, failing, elsewhere := pe("ok", nil), pe("invalid", nil), pe("failing", nil), pe("elsewhere", nil)
	waitingPE := pe("w-0", &v1alpha1.Chunk{Set: "w", Index: 0, Total: 2, Revision: "r2"})
	pod := policyset.PodKey{Namespace: "ns", Name: "p1"}
	out := outcome{
		result: policyset.Result{
			Errors: map[policyset.SetKey]error{policyset.SetOf(invalid): errors.New("bad CIDR 10.0.0.0/99")},
			Sets: map[policyset.PodKey][]policyset.SetKey{pod: {policyset.SetOf(failing)},
				{Namespace: "ns", Name: "gone"}: {policyset.SetOf(elsewhere)}},
		},
		podErrors: map[policyset.PodKey]error{pod: errors.New("cidr map full")},
		unplaced:  map[policyset.PodKey]bool{{Namespace: "ns", Name: "gone"}: true},
	}
	waiting := map[policyset.SetKey]policyset.Waiting{
		policyset.SetOf(waitingPE): {Key: policyset.SetOf(waitingPE), Have: 1, Total: 2, Enforced: "r1"},
	}
	for _, c := range []struct {
		pe       *v1alpha1.PolicyEndpoint
		status   metav1.ConditionStatus
		reason   string
		contains string
	}{
		{ok, metav1.ConditionTrue, ReasonProgrammed, ""},
		{invalid, metav1.ConditionFalse, ReasonInvalid, "10.0.0.0/99"},
		{failing, metav1.ConditionFalse, ReasonProgrammingFailed, "pod ns/p1: cidr map full"},
		{waitingPE, metav1.ConditionFalse, ReasonWaitingForChunks, `enforcing revision "r1"`},
		{elsewhere, metav1.ConditionFalse, ReasonNoInterface, "ns/gone"},
	} {
		got := conditionOf(c.pe, out, waiting)
		if got.generation != 3 || got.status != c.status || got.reason != c.reason || !strings.Contains(got.message, c.contains) {
			t.Errorf("%s: %+v, want %s/%s containing %q", c.pe.Name, got, c.status, c.reason, c.contains)
		}
	}
}
