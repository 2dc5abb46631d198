package policyset

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/policy"
)

// RuleOrigin is where a policy.Rule came from: the policy and chunk set,
// the direction and the position of the EndpointInfo among the set's rules
// of that direction (chunks concatenated in index order).
type RuleOrigin struct {
	Policy    PolicyKey
	Set       string
	Direction policy.Dir
	Index     int
}

// RuleID is the stable identifier of the rule at origin: the same policy,
// direction and index always get the same ID, across agent restarts, so
// that reprogramming identical content is recognised as such. It is never 0.
func RuleID(o RuleOrigin) uint32 {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%d", o.Policy.Namespace, o.Policy.Name, o.Set, o.Direction, o.Index)
	if id := h.Sum32(); id != 0 {
		return id
	}
	return 1
}

// ParseAddress parses a NetworkAddress: a CIDR, or a bare IP meaning /32 or
// /128. Host bits set in a CIDR are cleared.
func ParseAddress(a v1alpha1.NetworkAddress) (netip.Prefix, error) {
	s := string(a)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: %w", s, err)
		}
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid IP address %q: %w", s, err)
	}
	if ip.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid IP address %q: zones are not allowed", s)
	}
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// ConvertPorts converts PolicyEndpoint ports: no protocol means TCP, no
// port means every port of the protocol.
func ConvertPorts(ports []v1alpha1.Port) ([]policy.PortRange, error) {
	var out []policy.PortRange
	for _, p := range ports {
		r := policy.PortRange{Protocol: policy.TCP}
		if p.Protocol != nil {
			switch *p.Protocol {
			case corev1.ProtocolTCP:
			case corev1.ProtocolUDP:
				r.Protocol = policy.UDP
			case corev1.ProtocolSCTP:
				r.Protocol = policy.SCTP
			default:
				return nil, fmt.Errorf("unsupported protocol %q", *p.Protocol)
			}
		}
		if p.Port != nil {
			if *p.Port < 1 || *p.Port > 65535 {
				return nil, fmt.Errorf("port %d out of range 1-65535", *p.Port)
			}
			r.Port = uint16(*p.Port)
		}
		if p.EndPort != nil {
			switch {
			case p.Port == nil:
				return nil, fmt.Errorf("endPort %d without port", *p.EndPort)
			case *p.EndPort < *p.Port || *p.EndPort > 65535:
				return nil, fmt.Errorf("endPort %d must be between port %d and 65535", *p.EndPort, *p.Port)
			case *p.EndPort > *p.Port:
				r.EndPort = uint16(*p.EndPort)
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// ConvertRule converts one EndpointInfo into a policy.Rule with the given ID.
func ConvertRule(info v1alpha1.EndpointInfo, id uint32) (policy.Rule, error) {
	cidr, err := ParseAddress(info.CIDR)
	if err != nil {
		return policy.Rule{}, err
	}
	r := policy.Rule{ID: id, CIDR: cidr}
	for _, e := range info.Except {
		ex, err := ParseAddress(e)
		if err != nil {
			return policy.Rule{}, fmt.Errorf("except of %s: %w", cidr, err)
		}
		if ex.Addr().Is4() != cidr.Addr().Is4() {
			return policy.Rule{}, fmt.Errorf("except %s is not of the address family of %s", ex, cidr)
		}
		r.Except = append(r.Except, ex)
	}
	if r.Ports, err = ConvertPorts(info.Ports); err != nil {
		return policy.Rule{}, fmt.Errorf("rule for %s: %w", cidr, err)
	}
	return r, nil
}

// ConvertRules converts the rules of one direction of a chunk set,
// numbering them from index 0 in the order given. It stops at the first
// error.
func ConvertRules(set SetKey, dir policy.Dir, infos []v1alpha1.EndpointInfo) ([]policy.Rule, error) {
	rules := make([]policy.Rule, 0, len(infos))
	for i, info := range infos {
		r, err := ConvertRule(info, RuleID(RuleOrigin{Policy: set.Policy, Set: set.Set, Direction: dir, Index: i}))
		if err != nil {
			return nil, fmt.Errorf("%s rule %d: %w", dir, i, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}
