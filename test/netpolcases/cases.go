package netpolcases

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/palisade-net/palisade/test/reachability"
)

// SCTPCoverage says where SCTP policy is covered, since this kernel has no
// SCTP sockets for real probes.
const SCTPCoverage = "no SCTP sockets on this kernel: SCTP verdicts are covered by dataplane/differential_test.go, which runs generated SCTP (and TCP, UDP, ...) packets through the eBPF programs and compares with policy.Evaluate; SCTP rules must also never admit TCP, which cases 38 and 39 check here with real TCP"

// All returns the 48 upstream cases in upstream order.
func All() []Case {
	const in, notIn = metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn
	expect := reachability.New
	podA := matchLabels("pod", "a")
	var cases []Case
	add := func(c Case) {
		c.Number = len(cases) + 1
		if c.Context == "" {
			c.Context = "TCP"
		}
		cases = append(cases, c)
	}
	steps := func(s ...Step) func(func(string) netip.Addr) []Step {
		return func(func(string) netip.Addr) []Step { return s }
	}

	// 1
	{
		pods := []string{"x/a", "x/b", "y/a", "y/b"}
		m := expect(pods, true)
		m.SetPeers(everyone, inNamespace("x"), false)
		add(Case{Name: "should support a 'default-deny-ingress' policy", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "deny-ingress", selectAll(), ingress()))},
			Checks:  []Check{check(80, tcp, m)},
		})})
	}
	// 2
	{
		pods := []string{"x/a", "x/b", "y/a"}
		m := expect(pods, true)
		m.SetPeers(everyone, inNamespace("x"), false)
		m.SetPeers(inNamespace("x"), everyone, false)
		add(Case{Name: "should support a 'default-deny-all' policy", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "deny-all", selectAll(), ingress(), egress()))},
			Checks:  []Check{check(80, tcp, m)},
		})})
	}
	// 3
	{
		pods := []string{"x/a", "x/b", "x/c", "y/a"}
		m := expect(pods, true)
		m.SetAllIngress("x/a", false)
		m.Set("x/b", "x/a", true)
		add(Case{Name: "should enforce policy to allow traffic from pods within server namespace based on PodSelector", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "x-a-allows-x-b", podA, ingress(from(podPeer(matchLabels("pod", "b"))))))},
			Checks:  []Check{check(80, tcp, m)},
		})})
	}
	// 4
	{
		pods := []string{"x/a", "x/b", "y/a"}
		m := expect(pods, true)
		m.SetAllIngress("x/a", true)
		m.SetAllIngress("x/b", false)
		add(Case{Name: "should enforce policy to allow ingress traffic for a target", Pods: pods, Steps: steps(Step{
			Actions: []Action{
				create(newPolicy("x", "deny-all", selectAll(), ingress())),
				create(newPolicy("x", "allow-all-to-a", podA, ingress(from(podInNamespacePeer(selectAll(), selectAll()))))),
			},
			Checks: []Check{check(80, tcp, m)},
		})})
	}
	// 5
	{
		pods := []string{"x/a", "x/b", "y/a", "z/a"}
		add(Case{Name: "should enforce policy to allow ingress traffic from pods in all namespaces", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-from-another-ns", podA, ingress(from(namespacePeer(matchLabels())))))},
			Checks:  []Check{check(80, tcp, expect(pods, true))},
		})})
	}
	// 6
	{
		pods := []string{"x/a", "x/b", "y/a", "z/a"}
		m := expect(pods, true)
		m.SetPeers(inNamespace("x"), pod("x", "a"), false)
		m.SetPeers(inNamespace("z"), pod("x", "a"), false)
		add(Case{Name: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-client-a-via-ns-selector", podA, ingress(from(namespacePeer(matchLabels(namespaceNameLabel, "y"))))))},
			Checks:  []Check{check(80, tcp, m)},
		})})
	}
	// 7
	{
		pods := []string{"x/a", "x/b", "y/a"}
		m := expect(pods, true)
		m.SetAllIngress("x/a", false)
		m.Set("x/b", "x/a", true)
		add(Case{Name: "should enforce policy based on PodSelector with MatchExpressions", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "x-a-allows-x-b", podA, ingress(from(podPeer(matchExpression("pod", in, "b"))))))},
			Checks:  []Check{check(80, tcp, m)},
		})})
	}
	// 8
	{
		pods := []string{"x/a", "x/b", "y/a", "z/a"}
		m := expect(pods, true)
		m.SetPeers(inNamespace("x"), pod("x", "a"), false)
		m.SetPeers(inNamespace("z"), pod("x", "a"), false)
		add(Case{Name: "should enforce policy based on NamespaceSelector with MatchExpressions", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-ns-y-match-selector", podA, ingress(from(namespacePeer(matchExpression(namespaceNameLabel, in, "y"))))))},
			Checks:  []Check{check(80, tcp, m)},
		})})
	}
	// 9
	{
		pods := []string{"x/a", "x/b", "x/c", "y/a"}
		m := expect(pods, true)
		m.Set("x/a", "x/a", false)
		m.Set("x/c", "x/a", false)
		add(Case{Name: "should enforce policy based on PodSelector or NamespaceSelector", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-ns-y-match-selector", podA, ingress(from(
				namespacePeer(matchExpression(namespaceNameLabel, notIn, "x")),
				podPeer(matchLabels("pod", "b")),
			))))},
			Checks: []Check{check(80, tcp, m)},
		})})
	}
	// 10
	{
		pods := []string{"x/a", "x/b", "y/a", "y/b", "z/b"}
		m := expect(pods, true)
		m.SetAllIngress("x/a", false)
		m.Set("y/b", "x/a", true)
		m.Set("z/b", "x/a", true)
		add(Case{Name: "should enforce policy based on PodSelector and NamespaceSelector", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-ns-y-podselector-and-nsselector", podA, ingress(from(
				podInNamespacePeer(matchExpression(namespaceNameLabel, notIn, "x"), matchLabels("pod", "b")),
			))))},
			Checks: []Check{check(80, tcp, m)},
		})})
	}
	// 11
	{
		pods := []string{"x/a", "x/b", "y/a", "y/b", "y/c"}
		m := expect(pods, true)
		m.SetPeers(inNamespace("x"), pod("x", "a"), false)
		m.Set("y/a", "x/a", false)
		add(Case{Name: "should enforce policy based on Multiple PodSelectors and NamespaceSelectors", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-ns-y-z-pod-b-c", podA, ingress(from(
				podInNamespacePeer(matchExpression(namespaceNameLabel, notIn, "x"), matchExpression("pod", in, "b", "c")),
			))))},
			Checks: []Check{check(80, tcp, m)},
		})})
	}
	// 12
	{
		pods := []string{"x/a", "x/b", "x/c"}
		m := expect(pods, true)
		m.SetAllIngress("x/a", false)
		m.Set("x/b", "x/a", true)
		m.Set("x/c", "x/a", true)
		add(Case{Name: "should enforce policy based on any PodSelectors", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-ns-x-pod-b-c", podA, ingress(from(
				podPeer(matchLabels("pod", "b")), podPeer(matchLabels("pod", "c")),
			))))},
			Checks: []Check{check(80, tcp, m)},
		})})
	}
	// 13
	{
		pods := []string{"x/a", "x/b", "y/a", "y/b", "z/a"}
		m := expect(pods, true)
		m.SetAllIngress("x/a", false)
		m.Set("y/a", "x/a", true)
		add(Case{Name: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", podA, ingress(from(
				podInNamespacePeer(matchLabels(namespaceNameLabel, "y"), matchLabels("pod", "a")),
			))))},
			Checks: []Check{check(80, tcp, m)},
		})})
	}
	// 14
	{
		pods := []string{"x/a", "x/b", "y/a", "y/b", "z/a"}
		m := expect(pods, true)
		m.SetPeers(inNamespace("x"), pod("x", "a"), false)
		m.SetPeers(inNamespace("y"), pod("x", "a"), true)
		m.SetPeers(inNamespace("z"), pod("x", "a"), false)
		rule := from(namespacePeer(matchLabels(namespaceNameLabel, "y")))
		rule.Ports = append(rule.Ports, numberedPort(&tcp, 81))
		add(Case{Name: "should enforce policy based on Ports", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-client-a-via-ns-selector", podA, ingress(rule)))},
			Checks:  []Check{check(81, tcp, m)},
		})})
	}
	// 15
	{
		pods := []string{"x/a", "x/b", "y/a", "y/b", "z/a"}
		allowFromY := expect(pods, true)
		allowFromY.SetPeers(inNamespace("x"), pod("x", "a"), false)
		allowFromY.SetPeers(inNamespace("y"), pod("x", "a"), true)
		allowFromY.SetPeers(inNamespace("z"), pod("x", "a"), false)
		denied := expect(pods, true)
		denied.SetAllIngress("x/a", false)
		on81 := from(namespacePeer(matchLabels(namespaceNameLabel, "y")))
		on81.Ports = append(on81.Ports, numberedPort(&tcp, 81))
		on80 := from(namespacePeer(matchLabels(namespaceNameLabel, "y")))
		on80.Ports = append(on80.Ports, numberedPort(&tcp, 80))
		add(Case{Name: "should enforce multiple, stacked policies with overlapping podSelectors", Pods: pods, Steps: steps(
			Step{
				Actions: []Action{create(newPolicy("x", "allow-client-a-via-ns-selector", podA, ingress(on81)))},
				Checks:  []Check{check(81, tcp, allowFromY), check(80, tcp, denied)},
			},
			Step{
				Actions: []Action{create(newPolicy("x", "allow-client-a-via-ns-selector-80", podA, ingress(on80)))},
				Checks:  []Check{check(80, tcp, allowFromY)},
			},
		)})
	}
	// 16
	{
		pods := []string{"x/a", "x/b", "y/a"}
		add(Case{Name: "should support allow-all policy", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-all", matchLabels(), ingress(from())))},
			Checks:  []Check{check(80, tcp, expect(pods, true)), check(81, tcp, expect(pods, true))},
		})})
	}
	// 17
	{
		pods := []string{"x/a", "x/b", "y/a"}
		denied80 := expect(pods, true)
		denied80.SetPeers(everyone, inNamespace("x"), false)
		add(Case{Name: "should allow ingress access on one named port", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-all", matchLabels(), ingress(ingressOnPorts(namedPort(nil, "serve-81-tcp")))))},
			Checks:  []Check{check(81, tcp, expect(pods, true)), check(80, tcp, denied80)},
		})})
	}
	// 18
	{
		pods := []string{"x/a", "x/b", "y/a", "z/a"}
		m80 := expect(pods, true)
		m80.SetPeers(inNamespace("x"), pod("x", "a"), false)
		m80.SetPeers(inNamespace("z"), pod("x", "a"), false)
		m81 := expect(pods, true)
		m81.SetAllIngress("x/a", false)
		rule := from(namespacePeer(matchLabels(namespaceNameLabel, "y")))
		rule.Ports = append(rule.Ports, namedPort(&tcp, "serve-80-tcp"))
		add(Case{Name: "should allow ingress access from namespace on one named port", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-client-a-via-ns-selector-80", podA, ingress(rule)))},
			Checks:  []Check{check(80, tcp, m80), check(81, tcp, m81)},
		})})
	}
	// 19
	{
		pods := []string{"x/a", "y/a"}
		m81 := expect(pods, true)
		m81.SetPeers(inNamespace("x"), everyone, false)
		add(Case{Name: "should allow egress access on one named port", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-egress", matchLabels(), egress(egressOnPorts(namedPort(nil, "serve-80-tcp")))))},
			Checks:  []Check{check(80, tcp, expect(pods, true)), check(81, tcp, m81)},
		})})
	}
	// 20
	{
		pods := []string{"x/a", "y/a"}
		allowAll := newPolicy("x", "allow-all-mutate-to-deny-all", matchLabels(), ingress(from()))
		denyAll := allowAll.DeepCopy()
		denyAll.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{}
		denied := expect(pods, true)
		denied.SetPeers(everyone, inNamespace("x"), false)
		add(Case{Name: "should enforce updated policy", Pods: pods, Steps: steps(
			Step{Actions: []Action{create(allowAll)}, Checks: []Check{check(81, tcp, expect(pods, true))}},
			Step{Actions: []Action{update(denyAll)}, Checks: []Check{check(81, tcp, denied)}},
		)})
	}
	// 21
	{
		pods := []string{"x/a", "y/a"}
		before := expect(pods, true)
		before.SetAllIngress("x/a", false)
		after := before.Clone()
		after.SetPeers(inNamespace("y"), everyone, true)
		add(Case{Name: "should allow ingress access from updated namespace", Pods: pods, Steps: steps(
			Step{
				Actions: []Action{create(newPolicy("x", "allow-client-a-via-ns-selector", podA, ingress(from(namespacePeer(matchLabels("ns2", "updated"))))))},
				Checks:  []Check{check(80, tcp, before)},
			},
			Step{
				Actions: []Action{{NamespaceLabel: &NamespaceLabel{Namespace: "y", Key: "ns2", Value: "updated"}}},
				Checks:  []Check{check(80, tcp, after)},
			},
		)})
	}
	// 22
	{
		pods := []string{"x/a", "x/b"}
		before := expect(pods, true)
		before.SetAllIngress("x/a", false)
		after := before.Clone()
		after.Set("x/b", "x/a", true)
		updated := map[string]string{"pod": "b", "pod2": "updated"}
		add(Case{Name: "should allow ingress access from updated pod", Pods: pods, Steps: steps(
			Step{
				Actions: []Action{create(newPolicy("x", "allow-client-a-via-pod-selector", podA, ingress(from(podPeer(metav1.LabelSelector{MatchLabels: updated})))))},
				Checks:  []Check{check(80, tcp, before)},
			},
			Step{
				Actions: []Action{{PodLabels: &PodLabelChange{Pod: "x/b", Labels: updated}}},
				Checks:  []Check{check(80, tcp, after)},
			},
		)})
	}
	// 23
	{
		pods := []string{"x/a", "x/b", "y/a", "z/a"}
		m := expect(pods, true)
		m.SetPeers(inNamespace("y"), inNamespace("x"), false)
		m.SetPeers(inNamespace("z"), inNamespace("x"), false)
		add(Case{Name: "should deny ingress from pods on other namespaces", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "deny-empty-policy", selectAll(), ingress(from(podPeer(matchLabels())))))},
			Checks:  []Check{check(80, tcp, m)},
		})})
	}
	// 24
	{
		pods := []string{"x/a", "y/a"}
		after := expect(pods, true)
		after.SetAllIngress("x/a", false)
		add(Case{Name: "should deny ingress access to updated pod", Pods: pods, Steps: steps(
			Step{
				Actions: []Action{create(newPolicy("x", "deny-ingress-via-label-selector", matchLabels("target", "isolated"), ingress()))},
				Checks:  []Check{check(80, tcp, expect(pods, true))},
			},
			Step{
				Actions: []Action{{PodLabels: &PodLabelChange{Pod: "x/a", Labels: map[string]string{"target": "isolated"}}}},
				Checks:  []Check{check(80, tcp, after)},
			},
		)})
	}
	// 25
	{
		pods := []string{"x/a", "x/b", "y/a"}
		m := expect(pods, true)
		m.SetAllEgress("x/a", false)
		add(Case{Name: "should deny egress from pods based on PodSelector", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "deny-egress-pod-a", podA, egress()))},
			Checks:  []Check{check(80, tcp, m)},
		})})
	}
	// 26
	{
		pods := []string{"x/a", "x/b", "y/a"}
		m := expect(pods, true)
		m.SetPeers(inNamespace("x"), everyone, false)
		add(Case{Name: "should deny egress from all pods in a namespace", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "deny-egress-ns-x", selectAll(), egress()))},
			Checks:  []Check{check(80, tcp, m)},
		})})
	}
	// 27
	{
		pods := []string{"x/a", "x/b", "x/c", "y/a"}
		m80 := expect(pods, true)
		m80.SetAllIngress("x/a", false)
		m80.Set("x/b", "x/a", true)
		m81 := expect(pods, true)
		m81.SetAllIngress("x/a", false)
		m81.SetAllEgress("x/a", false)
		m81.Set("x/b", "x/a", true)
		p := newPolicy("x", "allow-client-a-via-pod-selector", podA, ingress(from(podPeer(matchLabels("pod", "b")))))
		p.Spec.Egress = append(p.Spec.Egress, egressOnPorts(numberedPort(nil, 80)))
		p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress}
		add(Case{Name: "should work with Ingress, Egress specified together", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(p)},
			Checks:  []Check{check(80, tcp, m80), check(81, tcp, m81)},
		})})
	}
	// 28
	{
		pods := []string{"x/a", "y/a", "y/b"}
		m := expect(pods, true)
		m.SetPeers(pod("x", "a"), everyone, false)
		m.SetPeers(everyone, pod("y", "a"), false)
		m.SetPeers(pod("x", "a"), pod("y", "a"), true)
		m.SetPeers(everyone, pod("y", "b"), false)
		fromXA := from(podInNamespacePeer(matchLabels(namespaceNameLabel, "x"), matchLabels("pod", "a")))
		add(Case{Name: "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)", Pods: pods, Steps: steps(Step{
			Actions: []Action{
				create(newPolicy("x", "allow-to-ns-y-pod-a", podA, egress(to(podInNamespacePeer(matchLabels(namespaceNameLabel, "y"), matchLabels("pod", "a")))))),
				create(newPolicy("y", "allow-from-xa-on-ya-match-selector", podA, ingress(fromXA))),
				create(newPolicy("y", "allow-from-xa-on-yb-match-selector", matchLabels("pod", "b"), ingress(fromXA))),
			},
			Checks: []Check{check(80, tcp, m)},
		})})
	}
	// 29
	{
		pods := []string{"x/a", "y/a", "y/b"}
		m := expect(pods, true)
		m.SetAllEgress("x/a", false)
		m.Set("x/a", "y/a", true)
		add(Case{Name: "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-to-ns-y-pod-a", podA, egress(to(podInNamespacePeer(matchLabels(namespaceNameLabel, "y"), matchLabels("pod", "a"))))))},
			Checks:  []Check{check(80, tcp, m)},
		})})
	}
	// 30
	{
		pods := []string{"x/a", "y/a"}
		mUDP := expect(pods, true)
		mUDP.SetPeers(everyone, pod("x", "a"), false)
		add(Case{Name: "should enforce ingress policy allowing any port traffic to a server on a specific protocol", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-ingress-by-proto", podA, ingress(ingressOnPorts(protocolOnly(tcp)))))},
			Checks:  []Check{check(80, tcp, expect(pods, true)), check(80, udp, mUDP)},
		})})
	}
	// 31
	{
		pods := []string{"x/a", "y/a"}
		denied := expect(pods, true)
		denied.SetPeers(everyone, inNamespace("x"), false)
		add(Case{Name: "should enforce multiple ingress policies with ingress allow-all policy taking precedence", Pods: pods, Steps: steps(
			Step{
				Actions: []Action{create(newPolicy("x", "allow-ingress-port-80", matchLabels(), ingress(ingressOnPorts(numberedPort(nil, 80)))))},
				Checks:  []Check{check(81, tcp, denied)},
			},
			Step{
				Actions: []Action{create(newPolicy("x", "allow-ingress", matchLabels(), ingress(from())))},
				Checks:  []Check{check(81, tcp, expect(pods, true))},
			},
		)})
	}
	// 32
	{
		pods := []string{"x/a", "y/a"}
		denied := expect(pods, true)
		denied.SetPeers(inNamespace("x"), everyone, false)
		add(Case{Name: "should enforce multiple egress policies with egress allow-all policy taking precedence", Pods: pods, Steps: steps(
			Step{
				Actions: []Action{create(newPolicy("x", "allow-egress-port-80", matchLabels(), egress(egressOnPorts(numberedPort(nil, 80)))))},
				Checks:  []Check{check(81, tcp, denied)},
			},
			Step{
				Actions: []Action{create(newPolicy("x", "allow-egress", matchLabels(), egress(to())))},
				Checks:  []Check{check(81, tcp, expect(pods, true))},
			},
		)})
	}
	// 33
	{
		pods := []string{"x/a", "y/a"}
		denied := expect(pods, true)
		denied.SetPeers(inNamespace("x"), everyone, false)
		denied.SetPeers(everyone, inNamespace("x"), false)
		add(Case{Name: "should stop enforcing policies after they are deleted", Pods: pods, Steps: steps(
			Step{
				Actions: []Action{create(newPolicy("x", "deny-all", selectAll(), ingress(), egress()))},
				Checks:  []Check{check(80, tcp, denied)},
			},
			Step{
				Actions: []Action{{DeleteAllPolicies: true}},
				Checks:  []Check{check(80, tcp, expect(pods, true))},
			},
		)})
	}
	// 34
	{
		pods := []string{"x/a", "y/a", "y/b"}
		m := expect(pods, true)
		m.SetAllEgress("x/a", false)
		m.Set("x/a", "y/b", true)
		add(Case{Name: "should allow egress access to server in CIDR block", Pods: pods, Steps: func(ip func(string) netip.Addr) []Step {
			return []Step{{
				Actions: []Action{create(newPolicy("x", "allow-client-a-via-cidr-egress-rule", podA, egress(to(ipBlockPeer(hostPrefix(ip("y/b")))))))},
				Checks:  []Check{check(80, tcp, m)},
			}}
		}})
	}
	// 35
	{
		pods := []string{"x/a", "x/b", "x/c"}
		m := expect(pods, true)
		m.Set("x/a", "x/b", false)
		add(Case{Name: "should enforce except clause while egress access to server in CIDR block", Pods: pods, Steps: func(ip func(string) netip.Addr) []Step {
			b := ip("x/b")
			return []Step{{
				Actions: []Action{create(newPolicy("x", "allow-client-a-via-cidr-egress-rule", podA, egress(to(ipBlockPeer(largePrefixAround(b), hostPrefix(b))))))},
				Checks:  []Check{check(80, tcp, m)},
			}}
		}})
	}
	// 36
	{
		pods := []string{"x/a", "x/b", "x/c"}
		before := expect(pods, true)
		before.Set("x/a", "x/b", false)
		after := expect(pods, true)
		after.SetAllEgress("x/a", false)
		after.Set("x/a", "x/b", true)
		add(Case{Name: "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed", Pods: pods, Steps: func(ip func(string) netip.Addr) []Step {
			b := ip("x/b")
			return []Step{
				{
					Actions: []Action{create(newPolicy("x", "allow-client-a-via-cidr-egress-rule", podA, egress(to(ipBlockPeer(largePrefixAround(b), hostPrefix(b))))))},
					Checks:  []Check{check(80, tcp, before)},
				},
				{
					Actions: []Action{update(newPolicy("x", "allow-client-a-via-cidr-egress-rule", podA, egress(to(ipBlockPeer(hostPrefix(b))))))},
					Checks:  []Check{check(80, tcp, after)},
				},
			}
		}})
	}
	// 37
	{
		pods := []string{"x/a", "x/b", "y/a"}
		after := expect(pods, true)
		after.SetAllIngress("x/a", false)
		add(Case{Name: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector", Pods: pods, Steps: steps(
			Step{
				Actions: []Action{create(newPolicy("x", "allow-egress-for-target", podA, egress(to())))},
				Checks:  []Check{check(80, tcp, expect(pods, true))},
			},
			Step{
				Actions: []Action{create(newPolicy("x", "deny-ingress-via-label-selector", podA, ingress()))},
				Checks:  []Check{check(80, tcp, after)},
			},
		)})
	}
	// 38
	{
		pods := []string{"x/a", "y/a"}
		m := expect(pods, true)
		m.SetPeers(everyone, inNamespace("x"), false)
		add(Case{Name: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP", Pods: pods, Steps: steps(Step{
			Actions: []Action{
				create(newPolicy("x", "deny-ingress", selectAll(), ingress())),
				create(newPolicy("x", "allow-only-sctp-ingress-on-port-81", podA, ingress(ingressOnPorts(numberedPort(&sctp, 81))))),
			},
			Checks: []Check{check(81, tcp, m)},
		})})
	}
	// 39
	{
		pods := []string{"x/a", "y/a"}
		m := expect(pods, true)
		m.SetAllIngress("x/a", false)
		add(Case{Name: "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-only-sctp-ingress-on-port-80", podA, ingress(ingressOnPorts(numberedPort(&sctp, 80)))))},
			Checks:  []Check{check(81, tcp, m)},
		})})
	}
	// 40
	{
		pods := []string{"x/a", "y/a"}
		m := expect(pods, true)
		m.SetAllIngress("x/a", false)
		add(Case{Name: "should not allow access by TCP when a policy specifies only UDP", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-only-udp-ingress-on-port-81", podA, ingress(ingressOnPorts(numberedPort(&udp, 81)))))},
			Checks:  []Check{check(81, tcp, m)},
		})})
	}
	// 41
	{
		pods := []string{"x/a", "x/b", "y/a", "z/a"}
		m := expect(pods, true)
		m.SetPeers(inNamespace("x"), pod("x", "a"), false)
		m.SetPeers(inNamespace("z"), pod("x", "a"), false)
		add(Case{Name: "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", podA, ingress(from(namespacePeer(matchLabels(corev1.LabelMetadataName, "y"))))))},
			Checks:  []Check{check(80, tcp, m)},
		})})
	}
	// 42
	{
		pods := []string{"x/a", "x/b", "y/a", "z/a"}
		m := expect(pods, true)
		m.SetPeers(pod("x", "a"), inNamespace("y"), false)
		add(Case{Name: "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label", Pods: pods, Steps: steps(Step{
			Actions: []Action{create(newPolicy("x", "allow-ns-y-match-selector-for-immutable-ns-label", podA, egress(to(namespacePeer(matchExpression(corev1.LabelMetadataName, notIn, "y"))))))},
			Checks:  []Check{check(80, tcp, m)},
		})})
	}

	// 43-45: UDP, 46-48: SCTP: the same three scenarios on each protocol.
	for _, protocol := range []corev1.Protocol{udp, sctp} {
		context, skip := "UDP", ""
		if protocol == sctp {
			context, skip = "SCTP", SCTPCoverage
		}
		{
			pods := []string{"x/a", "x/b", "y/a", "y/b"}
			m := expect(pods, true)
			m.SetPeers(everyone, inNamespace("x"), false)
			add(Case{Context: context, SkipReason: skip, Name: "should support a 'default-deny-ingress' policy", Pods: pods, Steps: steps(Step{
				Actions: []Action{create(newPolicy("x", "deny-all", selectAll(), ingress()))},
				Checks:  []Check{check(80, protocol, m)},
			})})
		}
		{
			pods := []string{"x/a", "x/b", "y/a", "z/a"}
			m := expect(pods, true)
			m.SetPeers(inNamespace("x"), pod("x", "a"), false)
			m.SetPeers(inNamespace("z"), pod("x", "a"), false)
			rule := from(namespacePeer(matchLabels(namespaceNameLabel, "y")))
			rule.Ports = append(rule.Ports, numberedPort(&protocol, 81))
			add(Case{Context: context, SkipReason: skip, Name: "should enforce policy based on Ports", Pods: pods, Steps: steps(Step{
				Actions: []Action{create(newPolicy("x", "allow-ingress-on-port-81-ns-x", podA, ingress(rule)))},
				Checks:  []Check{check(81, protocol, m)},
			})})
		}
		{
			pods := []string{"x/a", "x/b", "y/a"}
			m := expect(pods, true)
			m.SetAllIngress("x/a", false)
			m.Set("y/a", "x/a", true)
			add(Case{Context: context, SkipReason: skip, Name: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", Pods: pods, Steps: steps(Step{
				Actions: []Action{create(newPolicy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", podA, ingress(from(
					podInNamespacePeer(matchLabels(namespaceNameLabel, "y"), matchLabels("pod", "a")),
				))))},
				Checks: []Check{check(80, protocol, m)},
			})})
		}
	}
	return cases
}
