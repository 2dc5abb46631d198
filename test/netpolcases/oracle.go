package netpolcases

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/palisade-net/palisade/test/reachability"
)

// Oracle evaluates NetworkPolicy semantics over a model of the test
// cluster, independently of the controller, to cross-check the hand-written
// expectations (and to predict matrices for the demo).
type Oracle struct {
	namespaceLabels map[string]map[string]string
	podLabels       map[string]map[string]string
	podIPs          map[string]netip.Addr
	policies        map[string]*networkingv1.NetworkPolicy
	portNames       map[string]corev1.ContainerPort
}

// NewOracle models pods ("ns/name") with their IPs, each namespace and pod
// with its initial labels, and no policy.
// Every pod serves the upstream named ports.
func NewOracle(podIPs map[string]netip.Addr) *Oracle {
	podLabels := map[string]map[string]string{}
	namespaceLabels := map[string]map[string]string{}
	for pod := range podIPs {
		podLabels[pod] = PodLabels(pod)
		namespaceLabels[reachability.Namespace(pod)] = NamespaceLabels(reachability.Namespace(pod))
	}
	var ports []corev1.ContainerPort
	for _, protocol := range Protocols {
		for _, port := range Ports {
			ports = append(ports, corev1.ContainerPort{Name: ContainerPortName(port, protocol), ContainerPort: port, Protocol: protocol})
		}
	}
	return NewOracleWithLabels(podIPs, podLabels, namespaceLabels, ports)
}

// NewOracleWithLabels models pods with the given labels (namespaces get
// kubernetes.io/metadata.name added), every pod declaring ports.
func NewOracleWithLabels(podIPs map[string]netip.Addr, podLabels, namespaceLabels map[string]map[string]string, ports []corev1.ContainerPort) *Oracle {
	o := &Oracle{
		namespaceLabels: map[string]map[string]string{},
		podLabels:       map[string]map[string]string{},
		podIPs:          podIPs,
		policies:        map[string]*networkingv1.NetworkPolicy{},
		portNames:       map[string]corev1.ContainerPort{},
	}
	for pod := range podIPs {
		o.podLabels[pod] = maps.Clone(podLabels[pod])
		if o.podLabels[pod] == nil {
			o.podLabels[pod] = map[string]string{}
		}
		ns := reachability.Namespace(pod)
		o.namespaceLabels[ns] = maps.Clone(namespaceLabels[ns])
		if o.namespaceLabels[ns] == nil {
			o.namespaceLabels[ns] = map[string]string{}
		}
		o.namespaceLabels[ns][corev1.LabelMetadataName] = ns
	}
	for _, p := range ports {
		if p.Name != "" {
			o.portNames[p.Name] = p
		}
	}
	return o
}

// Apply performs an action on the model.
func (o *Oracle) Apply(a Action) error {
	switch {
	case a.CreatePolicy != nil:
		key := a.CreatePolicy.Namespace + "/" + a.CreatePolicy.Name
		if _, exists := o.policies[key]; exists {
			return fmt.Errorf("policy %s already exists", key)
		}
		o.policies[key] = a.CreatePolicy
	case a.UpdatePolicy != nil:
		key := a.UpdatePolicy.Namespace + "/" + a.UpdatePolicy.Name
		if _, exists := o.policies[key]; !exists {
			return fmt.Errorf("policy %s does not exist", key)
		}
		o.policies[key] = a.UpdatePolicy
	case a.DeleteAllPolicies:
		clear(o.policies)
	case a.NamespaceLabel != nil:
		l := a.NamespaceLabel
		if o.namespaceLabels[l.Namespace] == nil {
			return fmt.Errorf("no namespace %s", l.Namespace)
		}
		o.namespaceLabels[l.Namespace][l.Key] = l.Value
	case a.PodLabels != nil:
		current := o.podLabels[a.PodLabels.Pod]
		if current == nil {
			return fmt.Errorf("no pod %s", a.PodLabels.Pod)
		}
		for k, v := range a.PodLabels.Labels {
			current[k] = v
		}
	default:
		return fmt.Errorf("empty action")
	}
	return nil
}

// Matrix predicts reachability between pods on port/protocol.
func (o *Oracle) Matrix(pods []string, port int32, protocol corev1.Protocol) (*reachability.Matrix, error) {
	m := reachability.New(pods, true)
	for _, from := range pods {
		for _, to := range pods {
			allowed, err := o.Allowed(from, to, port, protocol)
			if err != nil {
				return nil, err
			}
			m.Set(from, to, allowed)
		}
	}
	return m, nil
}

// Allowed says whether from may open a connection to to's port/protocol:
// egress of from and ingress of to must both allow it.
func (o *Oracle) Allowed(from, to string, port int32, protocol corev1.Protocol) (bool, error) {
	egress, err := o.directionAllows(from, to, networkingv1.PolicyTypeEgress, port, protocol)
	if err != nil || !egress {
		return false, err
	}
	return o.directionAllows(to, from, networkingv1.PolicyTypeIngress, port, protocol)
}

// directionAllows decides for the selected pod target, talking with peer,
// in one direction.
func (o *Oracle) directionAllows(target, peer string, direction networkingv1.PolicyType, port int32, protocol corev1.Protocol) (bool, error) {
	isolated := false
	for _, p := range o.policies {
		if p.Namespace != reachability.Namespace(target) || !slices.Contains(policyTypes(p), direction) {
			continue
		}
		selected, err := matches(&p.Spec.PodSelector, o.podLabels[target])
		if err != nil || !selected {
			if err != nil {
				return false, err
			}
			continue
		}
		isolated = true
		if direction == networkingv1.PolicyTypeIngress {
			for _, rule := range p.Spec.Ingress {
				if ok, err := o.ruleAllows(p.Namespace, rule.From, rule.Ports, peer, port, protocol); err != nil || ok {
					return ok, err
				}
			}
		} else {
			for _, rule := range p.Spec.Egress {
				if ok, err := o.ruleAllows(p.Namespace, rule.To, rule.Ports, peer, port, protocol); err != nil || ok {
					return ok, err
				}
			}
		}
	}
	return !isolated, nil
}

func (o *Oracle) ruleAllows(policyNamespace string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, peer string, port int32, protocol corev1.Protocol) (bool, error) {
	if !o.portsAllow(ports, port, protocol) {
		return false, nil
	}
	if len(peers) == 0 {
		return true, nil
	}
	for _, candidate := range peers {
		ok, err := o.peerMatches(policyNamespace, candidate, peer)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func (o *Oracle) peerMatches(policyNamespace string, candidate networkingv1.NetworkPolicyPeer, peer string) (bool, error) {
	if block := candidate.IPBlock; block != nil {
		cidr, err := netip.ParsePrefix(block.CIDR)
		if err != nil {
			return false, err
		}
		ip := o.podIPs[peer]
		if !cidr.Contains(ip) {
			return false, nil
		}
		for _, except := range block.Except {
			e, err := netip.ParsePrefix(except)
			if err != nil {
				return false, err
			}
			if e.Contains(ip) {
				return false, nil
			}
		}
		return true, nil
	}
	ns := reachability.Namespace(peer)
	if candidate.NamespaceSelector == nil {
		if ns != policyNamespace {
			return false, nil
		}
	} else if ok, err := matches(candidate.NamespaceSelector, o.namespaceLabels[ns]); err != nil || !ok {
		return false, err
	}
	if candidate.PodSelector == nil {
		return true, nil
	}
	return matches(candidate.PodSelector, o.podLabels[peer])
}

// portsAllow resolves named ports with the ports every pod declares.
func (o *Oracle) portsAllow(ports []networkingv1.NetworkPolicyPort, port int32, protocol corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		want := corev1.ProtocolTCP
		if p.Protocol != nil {
			want = *p.Protocol
		}
		if want != protocol {
			continue
		}
		if p.Port == nil {
			return true
		}
		if p.Port.StrVal != "" {
			if named, ok := o.portNames[p.Port.StrVal]; ok && named.ContainerPort == port && named.Protocol == protocol {
				return true
			}
			continue
		}
		end := p.Port.IntVal
		if p.EndPort != nil {
			end = *p.EndPort
		}
		if port >= p.Port.IntVal && port <= end {
			return true
		}
	}
	return false
}

// policyTypes defaults spec.policyTypes the way the apiserver does.
func policyTypes(p *networkingv1.NetworkPolicy) []networkingv1.PolicyType {
	if len(p.Spec.PolicyTypes) > 0 {
		return p.Spec.PolicyTypes
	}
	types := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	if len(p.Spec.Egress) > 0 {
		types = append(types, networkingv1.PolicyTypeEgress)
	}
	return types
}

func matches(selector *metav1.LabelSelector, set map[string]string) (bool, error) {
	s, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return false, err
	}
	return s.Matches(labels.Set(set)), nil
}
