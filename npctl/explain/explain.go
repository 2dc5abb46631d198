// Package explain says in words why a simulated connection is allowed or
// denied: which policies isolate each side, and which rule admits the
// packet or why none does.
package explain

import (
	"fmt"
	"net/netip"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/palisade-net/palisade/agent/policyset"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
	"github.com/palisade-net/palisade/policy"
)

// Outcome explains o, judged on model m.
func Outcome(m *simulate.Model, o simulate.Outcome) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s) -> %s (%s) %s: %s\n", o.From, o.FromIP, o.To, o.ToIP, o.Port, word(o.Allowed))
	frame := simulate.Frame(o.Probe)
	for _, s := range []simulate.Step{o.Egress, o.Ingress} {
		b.WriteString("\n")
		explainStep(&b, m, s, frame)
	}
	return b.String()
}

func word(allowed bool) string {
	if allowed {
		return "ALLOWED"
	}
	return "DENIED"
}

func explainStep(b *strings.Builder, m *simulate.Model, s simulate.Step, frame []byte) {
	fmt.Fprintf(b, "%s of %s: %s\n", s.Dir, s.Pod, strings.ToLower(word(s.Verdict.Allowed)))
	if !s.Policed {
		fmt.Fprintf(b, "  no NetworkPolicy selects %s: all its %s traffic is allowed\n", s.Pod, s.Dir)
		return
	}
	var isolating, others []string
	for _, k := range s.Policies {
		if isolates(m, k, s.Dir) {
			isolating = append(isolating, k.String())
		} else {
			others = append(others, k.String())
		}
	}
	if len(isolating) == 0 {
		fmt.Fprintf(b, "  policies %s select %s but none has policy type %s: all its %s traffic is allowed\n",
			strings.Join(others, ", "), s.Pod, policyType(s.Dir), s.Dir)
		return
	}
	fmt.Fprintf(b, "  isolated for %s by %s\n", s.Dir, strings.Join(isolating, ", "))
	if len(others) > 0 {
		fmt.Fprintf(b, "  (also selected by %s, which do not isolate %s)\n", strings.Join(others, ", "), s.Dir)
	}
	ep := m.Endpoint(s.Pod)
	rules := ep.Of(s.Dir).Rules
	pkt, err := policy.ParseFrame(frame, s.Dir)
	if err != nil {
		fmt.Fprintf(b, "  the probe packet does not parse: %v\n", err)
		return
	}
	peer := describeAddr(m, pkt.Peer)
	switch {
	case s.Verdict.Allowed && s.Verdict.Reason == policy.ReasonRule:
		fmt.Fprintf(b, "  allowed by %s\n", describeRule(m, ruleByID(rules, s.Verdict.RuleID)))
		return
	case s.Verdict.Allowed:
		fmt.Fprintf(b, "  allowed: %s\n", s.Verdict.Reason)
		return
	case len(rules) == 0:
		fmt.Fprintf(b, "  no rule allows any %s traffic: every packet is denied\n", s.Dir)
		return
	}
	fmt.Fprintf(b, "  no rule allows %s %s on %s; its %d %s rules:\n", peerWord(s.Dir), peer, portOf(pkt), len(rules), s.Dir)
	for i := range rules {
		fmt.Fprintf(b, "    - %s: %s\n", describeRule(m, &rules[i]), whyNot(&rules[i], pkt))
	}
}

func peerWord(d policy.Dir) string {
	if d == policy.Egress {
		return "to"
	}
	return "from"
}

func policyType(d policy.Dir) networkingv1.PolicyType {
	if d == policy.Egress {
		return networkingv1.PolicyTypeEgress
	}
	return networkingv1.PolicyTypeIngress
}

// isolates reports whether policy k isolates direction d, from the
// NetworkPolicy when there is one, else from its PolicyEndpoints.
func isolates(m *simulate.Model, k policyset.PolicyKey, d policy.Dir) bool {
	for i := range m.Objects.NetworkPolicies {
		np := &m.Objects.NetworkPolicies[i]
		if np.Namespace != k.Namespace || np.Name != k.Name {
			continue
		}
		sel, err := policyset.SelectionOf(np)
		if err != nil {
			return true // the agent isolates both directions of a policy it cannot read
		}
		return (d == policy.Ingress && sel.Ingress) || (d == policy.Egress && sel.Egress)
	}
	for _, c := range m.Policy.Compiled {
		if c.Key.Policy == k && ((d == policy.Ingress && c.Ingress) || (d == policy.Egress && c.Egress)) {
			return true
		}
	}
	return false
}

func ruleByID(rules []policy.Rule, id uint32) *policy.Rule {
	for i := range rules {
		if rules[i].ID == id {
			return &rules[i]
		}
	}
	return nil
}

// describeRule names a rule by its policy and position, and says what it allows.
func describeRule(m *simulate.Model, r *policy.Rule) string {
	if r == nil {
		return "an unknown rule"
	}
	origin, ok := m.Policy.Origin(r.ID)
	name := fmt.Sprintf("rule %d", r.ID)
	if ok {
		name = fmt.Sprintf("policy %s, %s entry %d", origin.Policy, origin.Direction, origin.Index)
	}
	peers := describePrefix(m, r.CIDR)
	if len(r.Except) > 0 {
		var ex []string
		for _, e := range r.Except {
			ex = append(ex, e.String())
		}
		peers += " except " + strings.Join(ex, ", ")
	}
	return fmt.Sprintf("%s (peers %s, %s)", name, peers, describePorts(r.Ports))
}

func describePrefix(m *simulate.Model, p netip.Prefix) string {
	if p.IsSingleIP() {
		return describeAddr(m, p.Addr())
	}
	return p.String()
}

func describeAddr(m *simulate.Model, a netip.Addr) string {
	if pod, ok := m.PodByIP(a); ok {
		return fmt.Sprintf("%s (pod %s)", a, pod)
	}
	return a.String()
}

func describePorts(ports []policy.PortRange) string {
	if len(ports) == 0 {
		return "all ports and protocols"
	}
	var out []string
	for _, p := range ports {
		out = append(out, describePortRange(p))
	}
	return "ports " + strings.Join(out, ", ")
}

func describePortRange(p policy.PortRange) string {
	proto := protocolName(p.Protocol)
	switch {
	case p.Port == 0:
		return proto + "/all"
	case p.EndPort != 0:
		return fmt.Sprintf("%s/%d-%d", proto, p.Port, p.EndPort)
	}
	return fmt.Sprintf("%s/%d", proto, p.Port)
}

func protocolName(p policy.Protocol) string {
	switch p {
	case policy.TCP:
		return "TCP"
	case policy.UDP:
		return "UDP"
	case policy.SCTP:
		return "SCTP"
	}
	return fmt.Sprintf("protocol-%d", p)
}

func portOf(p policy.Packet) string {
	if p.HasPort {
		return fmt.Sprintf("%s/%d", protocolName(p.Protocol), p.Port)
	}
	return protocolName(p.Protocol)
}

// whyNot says why rule r does not allow the packet.
func whyNot(r *policy.Rule, p policy.Packet) string {
	if !r.CIDR.Contains(p.Peer) {
		return fmt.Sprintf("peer %s is outside %s", p.Peer, r.CIDR)
	}
	for _, e := range r.Except {
		if e.Contains(p.Peer) {
			return fmt.Sprintf("peer %s is in the excepted %s", p.Peer, e)
		}
	}
	return fmt.Sprintf("%s is not among its ports", portOf(p))
}

// Endpoint describes the policy pod's agent enforces: the policies applied,
// and per direction whether it is isolated and every rule, in words.
func Endpoint(m *simulate.Model, pod probe.Pod) string {
	var b strings.Builder
	ep := m.Endpoint(pod)
	if ep == nil {
		fmt.Fprintf(&b, "%s: no NetworkPolicy selects it; all its traffic is allowed\n", pod)
		return b.String()
	}
	var names []string
	for _, k := range m.Policies(pod) {
		names = append(names, k.String())
	}
	fmt.Fprintf(&b, "%s: selected by %s\n", pod, strings.Join(names, ", "))
	for _, dir := range []policy.Dir{policy.Ingress, policy.Egress} {
		d := ep.Of(dir)
		switch {
		case !d.Isolated:
			fmt.Fprintf(&b, "%s: not isolated, all allowed\n", dir)
			continue
		case len(d.Rules) == 0:
			fmt.Fprintf(&b, "%s: isolated, no rule: all denied\n", dir)
			continue
		}
		fmt.Fprintf(&b, "%s: isolated, %d rules, a packet passes if one allows it:\n", dir, len(d.Rules))
		for i := range d.Rules {
			fmt.Fprintf(&b, "  %08x  %s\n", d.Rules[i].ID, describeRule(m, &d.Rules[i]))
		}
	}
	return b.String()
}

// RuleName names a rule ID by its policy and entry, e.g.
// "rule 08577837 (y/allow, ingress entry 0)".
func RuleName(m *simulate.Model, id uint32) string {
	if o, ok := m.Policy.Origin(id); ok {
		return fmt.Sprintf("rule %08x (%s, %s entry %d)", id, o.Policy, o.Direction, o.Index)
	}
	return fmt.Sprintf("rule %08x", id)
}
