package policyset

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/policy"
)

// PodKey names a pod.
type PodKey struct{ Namespace, Name string }

func (k PodKey) String() string { return k.Namespace + "/" + k.Name }

// Pod is a pod of the node as the agent sees it.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
}

// Selection is what a NetworkPolicy alone tells about its targets: which
// pods of its namespace it selects and which directions it isolates. It lets
// the agent isolate a new pod before the controller lists it.
type Selection struct {
	Policy          PolicyKey
	Selector        labels.Selector
	Ingress, Egress bool
	// IngressNamedPorts is set when an ingress rule names a port: the
	// controller resolves it per target pod, so the ingress rules compiled
	// for some pods do not hold for another.
	IngressNamedPorts bool
}

// SelectionOf reads a NetworkPolicy's pod selector and policy types, with
// the Kubernetes default for empty policyTypes: Ingress, plus Egress when
// the policy has egress rules.
func SelectionOf(np *networkingv1.NetworkPolicy) (Selection, error) {
	s := Selection{Policy: PolicyKey{np.Namespace, np.Name}}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		return s, fmt.Errorf("NetworkPolicy %s: pod selector: %w", s.Policy, err)
	}
	s.Selector = sel
	for _, rule := range np.Spec.Ingress {
		for _, port := range rule.Ports {
			if port.Port != nil && port.Port.Type == intstr.String {
				s.IngressNamedPorts = true
			}
		}
	}
	if len(np.Spec.PolicyTypes) == 0 {
		s.Ingress, s.Egress = true, len(np.Spec.Egress) > 0
		return s, nil
	}
	if s.Ingress, s.Egress, err = isolation(np.Spec.PolicyTypes); err != nil {
		return s, fmt.Errorf("NetworkPolicy %s: %w", s.Policy, err)
	}
	return s, nil
}

// isolation reads policy types. An unknown type is an error and isolates
// both directions.
func isolation(types []networkingv1.PolicyType) (ingress, egress bool, err error) {
	for _, t := range types {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		default:
			return true, true, fmt.Errorf("unknown policy type %q", t)
		}
	}
	return ingress, egress, nil
}

// Compiled is a chunk set turned into rules. When Err is set the set still
// isolates its pods but contributes no rules (fail closed).
type Compiled struct {
	Key             SetKey
	Complete        bool
	Revision        string
	Ingress, Egress bool // isolated directions
	// Selector is the policy's pod selector, used to apply the set's rules
	// at once to matching pods the controller has not listed yet; it
	// matches nothing for an incomplete set.
	Selector     labels.Selector
	Pods         map[PodKey]bool // podSelectorEndpoints
	IngressRules []policy.Rule
	EgressRules  []policy.Rule
	Err          error
	// Origins maps the ID of each rule above back to where it came from.
	Origins     map[uint32]RuleOrigin
	fingerprint string
}

// Compile converts a chunk set.
func Compile(s Set) Compiled {
	c := Compiled{Key: s.Key, Complete: s.Complete, Revision: s.Revision, Pods: map[PodKey]bool{}, Selector: labels.Nothing(), fingerprint: s.Fingerprint}
	var errs []error
	var err error
	if c.Ingress, c.Egress, err = isolation(s.Spec.PodIsolation); err != nil {
		errs = append(errs, err)
	}
	for _, ep := range s.Spec.PodSelectorEndpoints {
		c.Pods[PodKey{ep.Namespace, ep.Name}] = true
	}
	if s.Complete {
		if s.Spec.PodSelector == nil {
			c.Selector = labels.Everything()
		} else if sel, err := metav1.LabelSelectorAsSelector(s.Spec.PodSelector); err != nil {
			errs = append(errs, fmt.Errorf("pod selector: %w", err))
		} else {
			c.Selector = sel
		}
	}
	if c.IngressRules, err = ConvertRules(s.Key, policy.Ingress, s.Spec.Ingress); err != nil {
		errs = append(errs, err)
	}
	if c.EgressRules, err = ConvertRules(s.Key, policy.Egress, s.Spec.Egress); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		c.Err = fmt.Errorf("policy %s, objects %v: %w", s.Key.Policy, s.Objects, errors.Join(errs...))
		c.IngressRules, c.EgressRules = nil, nil
	}
	c.Origins = make(map[uint32]RuleOrigin, len(c.IngressRules)+len(c.EgressRules))
	for _, d := range []struct {
		dir   policy.Dir
		rules []policy.Rule
	}{{policy.Ingress, c.IngressRules}, {policy.Egress, c.EgressRules}} {
		for i, rule := range d.rules {
			c.Origins[rule.ID] = RuleOrigin{Policy: s.Key.Policy, Set: s.Key.Set, Direction: d.dir, Index: i}
		}
	}
	return c
}

// Input is everything the agent holds for its node.
type Input struct {
	Sets       map[SetKey]Set // from Assemble
	Selections []Selection    // from the NetworkPolicies
	Pods       []Pod          // the node's pods, with labels
	// Previous, when set, is the result enforced before: its compiled sets
	// are reused for sets with the same Fingerprint, and its pods' last
	// settled policies bridge a change until the new one is settled.
	Previous *Result
}

// Result is the policy of every pod some policy applies to.
type Result struct {
	// Endpoints holds the policy of each pod that at least one policy
	// applies to; a pod absent from it is not policed.
	Endpoints map[PodKey]*policy.Endpoint
	// Policies lists, per pod, the policies applied to it, sorted.
	Policies map[PodKey][]PolicyKey
	// Errors holds the chunk sets that could not be converted; their pods
	// are isolated without their rules.
	Errors map[SetKey]error
	// Sets lists, per pod, the chunk sets applied to it, sorted.
	Sets map[PodKey][]SetKey
	// Settled holds the pods whose every applied policy comes with the
	// controller's rules for that pod (a complete chunk set listing it, or
	// selecting it when the policy's rules do not depend on the target
	// pod), as opposed to isolation from a NetworkPolicy or an incomplete
	// set alone, which allows nothing yet.
	Settled map[PodKey]bool
	// LastSettled holds, per pod, its policy when it was last settled
	// (now, or before a change still in progress).
	LastSettled map[PodKey]*policy.Endpoint
	// Compiled holds the converted sets.
	Compiled map[SetKey]Compiled
}

// Compute gives each pod the union of the policies that apply to it.
//
// A chunk set applies to the pods it lists. Once complete, it also applies
// through its pod selector to the pods of its namespace that no set of the
// same policy lists (pods the controller has not compiled yet): with its
// rules when they hold for any target pod, else (ingress named ports,
// which resolve per pod, or the NetworkPolicy not held) with its ingress
// isolation but not its ingress rules. A NetworkPolicy applies, for
// isolation only, to the pods it selects. A direction is isolated if any
// applied policy isolates it; its rules are those of every applied set.
// Pods listed by a set but absent from in.Pods get only what the listing
// gives.
//
// While a pod is not settled (some policy applying to it has no rules for
// it yet), a direction that its last settled policy (in.Previous) isolated
// too keeps that policy's rules besides the new ones: replacing a policy
// drops nothing the old and the new one both allow. A direction that was
// open and is now isolated gets the new rules only (fail closed).
func Compute(in Input) Result {
	r := Result{
		Endpoints:   map[PodKey]*policy.Endpoint{},
		Policies:    map[PodKey][]PolicyKey{},
		Errors:      map[SetKey]error{},
		Sets:        map[PodKey][]SetKey{},
		Settled:     map[PodKey]bool{},
		LastSettled: map[PodKey]*policy.Endpoint{},
		Compiled:    map[SetKey]Compiled{},
	}
	keys := make([]SetKey, 0, len(in.Sets))
	for k := range in.Sets {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	compiled := make([]Compiled, 0, len(keys))
	listed := map[PolicyKey]map[PodKey]bool{}
	for _, k := range keys {
		set := in.Sets[k]
		var c Compiled
		if prev, ok := in.Previous.compiled(k); ok && set.Fingerprint != "" && prev.fingerprint == set.Fingerprint {
			c = prev
		} else {
			c = Compile(set)
		}
		compiled = append(compiled, c)
		r.Compiled[k] = c
		if c.Err != nil {
			r.Errors[k] = c.Err
		}
		if listed[k.Policy] == nil {
			listed[k.Policy] = map[PodKey]bool{}
		}
		for pk := range c.Pods {
			listed[k.Policy][pk] = true
		}
	}
	selections := append([]Selection(nil), in.Selections...)
	sort.Slice(selections, func(i, j int) bool { return selections[i].Policy.String() < selections[j].Policy.String() })
	selectionOf := make(map[PolicyKey]Selection, len(selections))
	for _, s := range selections {
		selectionOf[s.Policy] = s
	}

	pods := map[PodKey]labels.Set{}
	var order []PodKey
	for _, p := range in.Pods {
		k := PodKey{p.Namespace, p.Name}
		if _, dup := pods[k]; !dup {
			order = append(order, k)
		}
		pods[k] = labels.Set(p.Labels)
	}
	for _, c := range compiled {
		for k := range c.Pods {
			if _, known := pods[k]; !known {
				pods[k] = nil
				order = append(order, k)
			}
		}
	}

	for _, pk := range order {
		podLabels := pods[pk]
		var ep policy.Endpoint
		applied := map[PolicyKey]bool{}
		withRules := map[PolicyKey]bool{}
		bySelector := map[PolicyKey]bool{}
		var sets []SetKey
		for _, c := range compiled {
			policyKey := c.Key.Policy
			ingressRules := c.IngressRules
			hasRules := c.Complete
			if !c.Pods[pk] {
				// The sets of one policy on a node differ only in the
				// pods they list and their resolution of ingress named
				// ports: one applied through the selector is enough.
				if podLabels == nil || pk.Namespace != policyKey.Namespace || listed[policyKey][pk] || bySelector[policyKey] || !c.Selector.Matches(podLabels) {
					continue
				}
				bySelector[policyKey] = true
				if sel, held := selectionOf[policyKey]; c.Ingress && (!held || sel.IngressNamedPorts) {
					ingressRules, hasRules = nil, false
				}
			}
			applied[policyKey] = true
			sets = append(sets, c.Key)
			if hasRules {
				withRules[policyKey] = true
			}
			ep.Ingress.Isolated = ep.Ingress.Isolated || c.Ingress
			ep.Egress.Isolated = ep.Egress.Isolated || c.Egress
			ep.Ingress.Rules = appendShared(ep.Ingress.Rules, ingressRules)
			ep.Egress.Rules = appendShared(ep.Egress.Rules, c.EgressRules)
		}
		for _, s := range selections {
			if podLabels == nil || pk.Namespace != s.Policy.Namespace || s.Selector == nil || !s.Selector.Matches(podLabels) {
				continue
			}
			applied[s.Policy] = true
			ep.Ingress.Isolated = ep.Ingress.Isolated || s.Ingress
			ep.Egress.Isolated = ep.Egress.Isolated || s.Egress
		}
		if len(applied) == 0 {
			r.LastSettled[pk] = unpoliced
			continue
		}
		// Rules of a direction that is not isolated change nothing.
		if !ep.Ingress.Isolated {
			ep.Ingress.Rules = nil
		}
		if !ep.Egress.Isolated {
			ep.Egress.Rules = nil
		}
		settled := len(withRules) == len(applied)
		if settled {
			r.LastSettled[pk] = &ep
		} else if last := in.Previous.lastSettled(pk); last != nil {
			r.LastSettled[pk] = last
			ep.Ingress = bridge(ep.Ingress, last.Ingress)
			ep.Egress = bridge(ep.Egress, last.Egress)
		}
		r.Endpoints[pk] = &ep
		r.Sets[pk] = sets
		r.Settled[pk] = settled
		list := make([]PolicyKey, 0, len(applied))
		for k := range applied {
			list = append(list, k)
		}
		sort.Slice(list, func(i, j int) bool { return list[i].String() < list[j].String() })
		r.Policies[pk] = list
	}
	return r
}

// unpoliced is the settled state of a pod no policy applies to. Nobody
// modifies it.
var unpoliced = &policy.Endpoint{}

// bridge is what a pod enforces in one direction while its policies are
// not settled, given what it enforced when they last were. A direction
// that was open stays open until the controller's rules arrive: isolating
// it at once would drop the traffic the new policy allows, which the old
// state allowed too. (A new pod has no settled state, so a policy
// selecting it isolates it from its first packet.) A direction that was
// isolated keeps its old rules beside the new ones.
func bridge(now, before policy.Direction) policy.Direction {
	if now.Isolated && !before.Isolated {
		return policy.Direction{}
	}
	now.Rules = keepRules(now, before)
	return now
}

// keepRules returns the rules of now plus, when the direction was isolated
// before too, those of before it lacks.
func keepRules(now, before policy.Direction) []policy.Rule {
	if !now.Isolated || !before.Isolated || len(before.Rules) == 0 {
		return now.Rules
	}
	have := make(map[uint32][]int, len(now.Rules))
	for i, rule := range now.Rules {
		have[rule.ID] = append(have[rule.ID], i)
	}
	rules := slices.Clip(now.Rules)
	for _, rule := range before.Rules {
		if !slices.ContainsFunc(have[rule.ID], func(i int) bool { return sameRule(now.Rules[i], rule) }) {
			rules = append(rules, rule)
		}
	}
	return rules
}

func sameRule(a, b policy.Rule) bool {
	return a.ID == b.ID && a.CIDR == b.CIDR && slices.Equal(a.Except, b.Except) && slices.Equal(a.Ports, b.Ports)
}

// appendShared appends more to rules; when rules is empty it returns more
// itself, capped so that a later append copies: pods selected by one set
// share its rules, which nobody modifies.
func appendShared(rules, more []policy.Rule) []policy.Rule {
	if len(rules) == 0 {
		return slices.Clip(more)
	}
	return append(rules, more...)
}

// Origin maps a rule ID of Endpoints back to where the rule came from.
func (r *Result) Origin(id uint32) (RuleOrigin, bool) {
	if r == nil {
		return RuleOrigin{}, false
	}
	for _, c := range r.Compiled {
		if o, ok := c.Origins[id]; ok {
			return o, true
		}
	}
	return RuleOrigin{}, false
}

func (r *Result) lastSettled(k PodKey) *policy.Endpoint {
	if r == nil {
		return nil
	}
	return r.LastSettled[k]
}

func (r *Result) compiled(k SetKey) (Compiled, bool) {
	if r == nil {
		return Compiled{}, false
	}
	c, ok := r.Compiled[k]
	return c, ok
}

// Build is Assemble (with nothing enforced before) then Compute, for tools
// that start from the objects: PolicyEndpoints, the NetworkPolicies (may be
// nil) and the pods with their labels (may be nil: then the pods listed by
// the PolicyEndpoints are used).
func Build(pes []v1alpha1.PolicyEndpoint, nps []networkingv1.NetworkPolicy, pods []Pod) (Result, []Waiting) {
	sets, waiting := Assemble(pes, nil)
	in := Input{Sets: sets, Pods: pods}
	selErrs := map[PolicyKey]error{}
	for i := range nps {
		s, err := SelectionOf(&nps[i])
		if err != nil {
			selErrs[s.Policy] = err
			continue
		}
		in.Selections = append(in.Selections, s)
	}
	r := Compute(in)
	for k, err := range selErrs {
		r.Errors[SetKey{Policy: k, Set: "networkpolicy"}] = err
	}
	return r, waiting
}
