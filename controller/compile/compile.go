package compile

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

// DefaultMaxEntriesPerObject bounds pods + ingress + egress entries in one
// PolicyEndpoint (an entry is at most a few hundred bytes of JSON, so an
// object stays far below etcd's 1.5 MiB request limit).
const DefaultMaxEntriesPerObject = 1000

// Options tune compilation.
type Options struct {
	// MaxEntriesPerObject: above it an object is split into chunks. 0 means
	// DefaultMaxEntriesPerObject.
	MaxEntriesPerObject int
}

// Problem is something wrong in a policy that compilation worked around
// with a closed (narrower) result. Reason is a CamelCase event reason.
type Problem struct {
	Policy  types.NamespacedName
	Reason  string
	Message string
}

const (
	ReasonInvalidIPBlock      = "InvalidIPBlock"
	ReasonInvalidSelector     = "InvalidSelector"
	ReasonInvalidPeer         = "InvalidPeer"
	ReasonInvalidPort         = "InvalidPort"
	ReasonUnresolvedNamedPort = "UnresolvedNamedPort"
	ReasonNamedPortOnIPBlock  = "NamedPortOnIPBlock"
)

// Result is the compiled form of one policy.
type Result struct {
	// Objects are the desired PolicyEndpoints, ordered by chunk set name,
	// then chunk index.
	Objects  []v1alpha1.PolicyEndpoint
	Problems []Problem
}

var (
	allIPv4 = netip.MustParsePrefix("0.0.0.0/0")
	allIPv6 = netip.MustParsePrefix("::/0")
)

// compilation carries the state of compiling one policy.
type compilation struct {
	x        *Index
	key      types.NamespacedName
	policy   *policyRecord
	problems map[Problem]struct{}
	// ingressPeers caches each ingress rule's peers across target groups.
	ingressPeers map[int]rulePeers
	// ingressSize is the largest ingress list built so far, to size the next.
	ingressSize int
}

type rulePeers struct {
	pods   *peerSelection
	blocks []v1alpha1.EndpointInfo
}

func (c *compilation) problem(reason, format string, args ...any) {
	c.problems[Problem{Policy: c.key, Reason: reason, Message: fmt.Sprintf(format, args...)}] = struct{}{}
}

// Compile returns the PolicyEndpoints of one policy: one chunk set per
// (node, group of target pods resolving the ingress named ports alike). A
// policy that is absent or selects no pods yields no objects.
func (x *Index) Compile(key types.NamespacedName, opts Options) Result {
	rec := x.policies[key]
	if rec == nil {
		return Result{}
	}
	c := &compilation{x: x, key: key, policy: rec, problems: map[Problem]struct{}{}, ingressPeers: map[int]rulePeers{}}
	targets := c.targets()
	if len(targets) == 0 {
		return Result{Problems: c.sortedProblems()}
	}
	isolateIngress, isolateEgress := rec.isolates()
	var isolation []networkingv1.PolicyType
	if isolateIngress {
		isolation = append(isolation, networkingv1.PolicyTypeIngress)
	}
	if isolateEgress {
		isolation = append(isolation, networkingv1.PolicyTypeEgress)
	}

	var egress []v1alpha1.EndpointInfo
	if isolateEgress {
		egress = c.egress()
	}

	type setKey struct{ node, group string }
	sets := map[setKey][]*podRecord{}
	named := c.ingressNamedPorts()
	for _, pod := range targets {
		k := setKey{pod.nodeName, namedPortSignature(pod, named)}
		sets[k] = append(sets[k], pod)
	}
	type digested struct {
		entries []v1alpha1.EndpointInfo
		digest  uint64
	}
	c.checkIngressNamedPorts(named)
	ingressByGroup := map[string]digested{}
	egressDigest := entriesDigest(egress)
	policyDigest := newDigest()
	policyDigest.str(metav1.FormatLabelSelector(&rec.policy.Spec.PodSelector))
	policyDigest.str(key.String())
	for _, t := range isolation {
		policyDigest.str(string(t))
	}
	maxEntries := min(cmp.Or(max(opts.MaxEntriesPerObject, 0), DefaultMaxEntriesPerObject), v1alpha1.MaxListItems)
	keys := make([]setKey, 0, len(sets))
	names := make(map[setKey]string, len(sets))
	for k := range sets {
		keys = append(keys, k)
		names[k] = setName(key.Name, k.node, k.group)
	}
	slices.SortFunc(keys, func(a, b setKey) int { return strings.Compare(names[a], names[b]) })
	var objects []v1alpha1.PolicyEndpoint
	for _, k := range keys {
		pods := sets[k]
		ingress, done := ingressByGroup[k.group]
		if !done {
			if isolateIngress {
				ingress.entries = c.ingress(pods[0])
			}
			ingress.digest = entriesDigest(ingress.entries)
			ingressByGroup[k.group] = ingress
		}
		endpoints := podEndpoints(pods)
		revision := newDigest()
		revision.u64(policyDigest.sum())
		revision.u64(ingress.digest)
		revision.u64(egressDigest)
		revision.str(k.node)
		revision.u64(uint64(maxEntries)) // where the chunks split: a revision names one layout
		for _, e := range endpoints {
			revision.str(e.Name)
			revision.str(string(e.PodIP))
			revision.str(string(e.HostIP))
		}
		spec := v1alpha1.PolicyEndpointSpec{
			PodSelector:          rec.policy.Spec.PodSelector.DeepCopy(),
			PolicyRef:            v1alpha1.PolicyReference{Name: key.Name, Namespace: key.Namespace},
			PodIsolation:         isolation,
			PodSelectorEndpoints: endpoints,
			Ingress:              ingress.entries,
			Egress:               egress,
			NodeName:             k.node,
		}
		objects = append(objects, chunk(rec.policy, spec, names[k], revision.hex(), maxEntries)...)
	}
	return Result{Objects: objects, Problems: c.sortedProblems()}
}

func (c *compilation) sortedProblems() []Problem {
	out := make([]Problem, 0, len(c.problems))
	for p := range c.problems {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Problem) int {
		return cmp.Or(strings.Compare(a.Reason, b.Reason), strings.Compare(a.Message, b.Message))
	})
	return out
}

// targets returns the pods the policy applies to. An unparsable pod
// selector selects every pod of the namespace: they are isolated rather
// than left open.
func (c *compilation) targets() []*podRecord {
	var out []*podRecord
	if c.policy.selectorErr != nil {
		c.problem(ReasonInvalidSelector, "podSelector: %v; isolating every pod of the namespace", c.policy.selectorErr)
	}
	for _, pod := range c.x.podsByNS[c.key.Namespace] {
		if pod.target() && (c.policy.selectorErr != nil || c.policy.podSelector.Matches(pod.labels)) {
			out = append(out, pod)
		}
	}
	return out
}

// peerSelection is the pods one pod peer selects; shared, read-only.
type peerSelection struct {
	pods  map[types.NamespacedName]*podRecord
	addrs []v1alpha1.NetworkAddress // sorted
	// peer and policyNamespace let the index update a memoized selection.
	peer            *parsedPeer
	policyNamespace string
}

// peerPods returns the pods a pod peer selects, memoized in the index until
// the next pod or namespace change.
func (c *compilation) peerPods(peer *parsedPeer) *peerSelection {
	memoKey := peer.selectorKey
	if peer.namespaceSelector == nil {
		memoKey += "\x00" + c.key.Namespace
	}
	if sel, ok := c.x.peerMemo[memoKey]; ok {
		return sel
	}
	sel := &peerSelection{pods: map[types.NamespacedName]*podRecord{}, peer: peer, policyNamespace: c.key.Namespace}
	add := func(pods map[string]*podRecord) {
		for _, pod := range pods {
			if pod.peer && peer.podSelector.Matches(pod.labels) {
				sel.pods[pod.key] = pod
				sel.addrs = append(sel.addrs, pod.addrs...)
			}
		}
	}
	if peer.namespaceSelector == nil {
		add(c.x.podsByNS[c.key.Namespace])
	} else {
		for ns, pods := range c.x.podsByNS {
			if peer.namespaceSelector.Matches(c.x.namespaceLabels(ns)) {
				add(pods)
			}
		}
	}
	slices.Sort(sel.addrs)
	c.x.peerMemo[memoKey] = sel
	return sel
}

// rulePeers splits a rule's peers into selected pods and address blocks,
// dropping invalid peers (with a problem) so they allow nothing. The
// selection may be shared: callers must not modify it.
func (c *compilation) rulePeers(dir string, ruleIndex int, r *parsedRule) (*peerSelection, []v1alpha1.EndpointInfo) {
	if r.allPeers {
		return &peerSelection{}, []v1alpha1.EndpointInfo{{CIDR: v1alpha1.NetworkAddress(allIPv4.String())}, {CIDR: v1alpha1.NetworkAddress(allIPv6.String())}}
	}
	var blocks []v1alpha1.EndpointInfo
	var selections []*peerSelection
	for i := range r.peers {
		peer := &r.peers[i]
		switch {
		case peer.err != nil:
			c.problem(ReasonInvalidPeer, "%s rule %d peer %d: %v; the peer allows nothing", dir, ruleIndex, i, peer.err)
		case peer.ipBlock != nil:
			block, err := parseIPBlock(peer.ipBlock)
			if err != nil {
				c.problem(ReasonInvalidIPBlock, "%s rule %d peer %d: %v; the peer allows nothing", dir, ruleIndex, i, err)
				continue
			}
			blocks = append(blocks, block...)
		default:
			selections = append(selections, c.peerPods(peer))
		}
	}
	switch len(selections) {
	case 0:
		return &peerSelection{}, blocks
	case 1:
		return selections[0], blocks
	}
	union := &peerSelection{pods: map[types.NamespacedName]*podRecord{}}
	for _, sel := range selections {
		for k, pod := range sel.pods {
			if _, dup := union.pods[k]; !dup {
				union.pods[k] = pod
				union.addrs = append(union.addrs, pod.addrs...)
			}
		}
	}
	slices.Sort(union.addrs)
	return union, blocks
}

// parseIPBlock returns the entries of an ipBlock: one, or, when it has
// more excepts than an entry holds, pieces of the block that each hold few
// enough.
func parseIPBlock(b *networkingv1.IPBlock) ([]v1alpha1.EndpointInfo, error) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return nil, fmt.Errorf("ipBlock cidr %q: %w", b.CIDR, err)
	}
	cidr = canonicalPrefix(cidr)
	var excepts []netip.Prefix
	for _, e := range b.Except {
		except, err := netip.ParsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("ipBlock except %q: %w", e, err)
		}
		except = canonicalPrefix(except)
		if except.Addr().Is4() != cidr.Addr().Is4() {
			return nil, fmt.Errorf("ipBlock except %q is not in the family of cidr %q", e, b.CIDR)
		}
		excepts = append(excepts, except)
	}
	var out []v1alpha1.EndpointInfo
	carve(cidr, excepts, nil, &out)
	return out, nil
}

// canonicalPrefix masks p and writes an IPv4-mapped IPv6 prefix of /96 or
// longer as the IPv4 prefix it is. A shorter one (::ffff:10.0.0.0/8) is
// the IPv6 prefix Go's net.ParseCIDR reads (::/8), as upstream consumers
// of the field read it.
func canonicalPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

// portResolver gives the number of a named port, or false.
type portResolver func(namedPortKey) (int32, bool)

func podResolver(pod *podRecord) portResolver {
	return func(k namedPortKey) (int32, bool) {
		n, ok := pod.ports[k]
		return n, ok
	}
}

// resolvePorts turns a rule's ports into PolicyEndpoint ports. all reports
// that the rule has no ports (every port allowed); otherwise only the
// returned ports are allowed, and none means the rule allows nothing.
func (c *compilation) resolvePorts(dir string, ruleIndex int, ports []networkingv1.NetworkPolicyPort, resolve portResolver, named bool) (out []v1alpha1.Port, all bool) {
	if len(ports) == 0 {
		return nil, true
	}
	for i, p := range ports {
		protocol := corev1.ProtocolTCP
		if p.Protocol != nil {
			protocol = *p.Protocol
		}
		switch protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			c.problem(ReasonInvalidPort, "%s rule %d port %d: protocol %q; the entry allows nothing", dir, ruleIndex, i, protocol)
			continue
		}
		entry := v1alpha1.Port{Protocol: &protocol}
		switch {
		case p.Port == nil:
			if p.EndPort != nil {
				c.problem(ReasonInvalidPort, "%s rule %d port %d: endPort without port; the entry allows nothing", dir, ruleIndex, i)
				continue
			}
		case p.Port.Type == intstr.String:
			if !named {
				continue
			}
			if p.EndPort != nil {
				c.problem(ReasonInvalidPort, "%s rule %d port %d: endPort with named port %q; the entry allows nothing", dir, ruleIndex, i, p.Port.StrVal)
				continue
			}
			n, ok := resolve(namedPortKey{p.Port.StrVal, protocol})
			if !ok {
				continue
			}
			entry.Port = &n
		default:
			n := p.Port.IntVal
			if n < 1 || n > 65535 {
				c.problem(ReasonInvalidPort, "%s rule %d port %d: port %d out of range; the entry allows nothing", dir, ruleIndex, i, n)
				continue
			}
			entry.Port = &n
			if p.EndPort != nil {
				end := *p.EndPort
				if end < n || end > 65535 {
					c.problem(ReasonInvalidPort, "%s rule %d port %d: endPort %d not in [%d, 65535]; the entry allows nothing", dir, ruleIndex, i, end, n)
					continue
				}
				if end != n {
					entry.EndPort = &end
				}
			}
		}
		out = append(out, entry)
	}
	return out, false
}

func hasNamedPort(ports []networkingv1.NetworkPolicyPort) bool {
	for _, p := range ports {
		if p.Port != nil && p.Port.Type == intstr.String {
			return true
		}
	}
	return false
}

// ingressNamedPorts lists the named ports ingress rules refer to; target
// pods resolving them alike share objects.
func (c *compilation) ingressNamedPorts() []namedPortKey {
	var out []namedPortKey
	for _, r := range c.policy.ingress {
		for _, p := range r.ports {
			if p.Port != nil && p.Port.Type == intstr.String {
				protocol := corev1.ProtocolTCP
				if p.Protocol != nil {
					protocol = *p.Protocol
				}
				out = append(out, namedPortKey{p.Port.StrVal, protocol})
			}
		}
	}
	slices.SortFunc(out, func(a, b namedPortKey) int {
		return cmp.Or(strings.Compare(a.name, b.name), strings.Compare(string(a.protocol), string(b.protocol)))
	})
	return slices.Compact(out)
}

func namedPortSignature(pod *podRecord, named []namedPortKey) string {
	if len(named) == 0 {
		return ""
	}
	var b strings.Builder
	for _, k := range named {
		b.WriteString(strconv.Itoa(int(pod.ports[k])))
		b.WriteByte(',')
	}
	return b.String()
}

// ingress compiles the ingress rules for target pods that resolve named
// ports like representative.
func (c *compilation) ingress(representative *podRecord) []v1alpha1.EndpointInfo {
	out := make([]v1alpha1.EndpointInfo, 0, c.ingressSize)
	for i := range c.policy.ingress {
		r := &c.policy.ingress[i]
		ports, all := c.resolvePorts("ingress", i, r.ports, podResolver(representative), true)
		if !all && len(ports) == 0 {
			continue
		}
		peers, done := c.ingressPeers[i]
		if !done {
			peers.pods, peers.blocks = c.rulePeers("ingress", i, r)
			c.ingressPeers[i] = peers
		}
		for _, b := range peers.blocks {
			b.Ports = ports
			out = append(out, b)
		}
		for _, addr := range peers.pods.addrs {
			out = append(out, v1alpha1.EndpointInfo{CIDR: addr, Ports: ports})
		}
	}
	c.ingressSize = max(c.ingressSize, len(out))
	return mergeEntries(out)
}

// checkIngressNamedPorts reports named ports no target pod defines.
func (c *compilation) checkIngressNamedPorts(named []namedPortKey) {
	for _, k := range named {
		found := false
		for _, pod := range c.x.podsByNS[c.key.Namespace] {
			if pod.target() && (c.policy.selectorErr != nil || c.policy.podSelector.Matches(pod.labels)) {
				if _, ok := pod.ports[k]; ok {
					found = true
					break
				}
			}
		}
		if !found {
			c.problem(ReasonUnresolvedNamedPort, "ingress named port %s/%s is defined by no selected pod; it allows nothing", k.protocol, k.name)
		}
	}
}

func hostAddress(ip netip.Addr) v1alpha1.NetworkAddress {
	return v1alpha1.NetworkAddress(netip.PrefixFrom(ip, ip.BitLen()).String())
}

// egress compiles the egress rules: named ports resolve per peer pod, and
// Services whose backends the rules allow get their cluster IPs allowed.
func (c *compilation) egress() []v1alpha1.EndpointInfo {
	var out []v1alpha1.EndpointInfo
	allowances := make([]egressAllowance, 0, len(c.policy.egress))
	for i := range c.policy.egress {
		r := &c.policy.egress[i]
		numeric, all := c.resolvePorts("egress", i, r.ports, nil, false)
		named := hasNamedPort(r.ports)
		selection, blocks := c.rulePeers("egress", i, r)
		pods := selection.pods
		if r.allPeers && named {
			// Named ports can only be resolved on pods: every pod is a peer.
			pods = map[types.NamespacedName]*podRecord{}
			for _, pod := range c.x.pods {
				if pod.peer {
					pods[pod.key] = pod
				}
			}
		}
		allowances = append(allowances, egressAllowance{rule: i, pods: pods, blocks: blocks, allPeers: r.allPeers})
		if all || len(numeric) > 0 {
			for _, b := range blocks {
				for _, piece := range c.withoutClusterIPs(b) {
					piece.Ports = numeric
					out = append(out, piece)
				}
			}
		}
		if named && len(blocks) > 0 && !r.allPeers {
			c.problem(ReasonNamedPortOnIPBlock, "egress rule %d: named ports cannot apply to ipBlock peers; they allow nothing there", i)
		}
		if !named {
			if all || len(numeric) > 0 {
				for _, addr := range selection.addrs {
					out = append(out, v1alpha1.EndpointInfo{CIDR: addr, Ports: numeric})
				}
			}
			continue
		}
		resolvedAny := false
		for _, pod := range pods {
			ports, _ := c.resolvePorts("egress", i, r.ports, podResolver(pod), true)
			if len(ports) > len(numeric) {
				resolvedAny = true
			}
			if len(ports) == 0 {
				continue
			}
			for _, addr := range pod.addrs {
				out = append(out, v1alpha1.EndpointInfo{CIDR: addr, Ports: ports})
			}
		}
		if !resolvedAny && len(pods) > 0 {
			c.problem(ReasonUnresolvedNamedPort, "egress rule %d: its named ports are defined by no peer pod; they allow nothing", i)
		}
	}
	out = append(out, c.services(allowances)...)
	return mergeEntries(out)
}

// egressAllowance is what one egress rule allows, for Service resolution.
type egressAllowance struct {
	rule     int
	pods     map[types.NamespacedName]*podRecord
	blocks   []v1alpha1.EndpointInfo
	allPeers bool
}

// allows reports whether some rule allows the endpoint (pod, addr) on
// protocol/port, as the packet would be judged after kube-proxy's DNAT.
func (c *compilation) allows(allowances []egressAllowance, podKey types.NamespacedName, addr netip.Addr, protocol corev1.Protocol, port int32) bool {
	pod := c.x.pods[podKey]
	for _, a := range allowances {
		asPod := pod != nil && a.allPeers
		if pod != nil && !asPod {
			_, asPod = a.pods[podKey]
		}
		if !asPod && !a.allPeers && !blocksContain(a.blocks, addr) {
			continue
		}
		r := &c.policy.egress[a.rule]
		if len(r.ports) == 0 {
			return true
		}
		// Named ports are the destination pod's; an ipBlock has none.
		var resolve portResolver = func(namedPortKey) (int32, bool) { return 0, false }
		if asPod {
			resolve = podResolver(pod)
		}
		ports, _ := c.resolvePorts("egress", a.rule, r.ports, resolve, true)
		for _, p := range ports {
			if *p.Protocol != protocol {
				continue
			}
			if p.Port == nil || *p.Port == port || (p.EndPort != nil && *p.Port <= port && port <= *p.EndPort) {
				return true
			}
		}
	}
	return false
}

func blocksContain(blocks []v1alpha1.EndpointInfo, addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	for _, b := range blocks {
		cidr, err := netip.ParsePrefix(string(b.CIDR))
		if err != nil || !cidr.Contains(addr) {
			continue
		}
		excluded := false
		for _, e := range b.Except {
			if ex, err := netip.ParsePrefix(string(e)); err == nil && ex.Contains(addr) {
				excluded = true
				break
			}
		}
		if !excluded {
			return true
		}
	}
	return false
}

// services allows ClusterIP:servicePort of a Service when every endpoint
// behind that port, in the ClusterIP's family, is allowed on its target
// port by this policy (and there is at least one). Allowing the ClusterIP
// lets traffic reach whichever backend kube-proxy picks, so all of them
// must be allowed: a Service with one backend outside the policy's peers
// stays reachable only through its pods' own addresses.
func (c *compilation) services(allowances []egressAllowance) []v1alpha1.EndpointInfo {
	candidates := map[types.NamespacedName]struct{}{}
	everyService := false
	var blocks []netip.Prefix
	for _, a := range allowances {
		everyService = everyService || a.allPeers
		for _, b := range a.blocks {
			if p, err := netip.ParsePrefix(string(b.CIDR)); err == nil {
				blocks = append(blocks, p)
			}
		}
		for _, pod := range a.pods {
			for _, ip := range pod.ips {
				for svc := range c.x.servicesAt[ip] {
					candidates[svc] = struct{}{}
				}
			}
		}
	}
	switch {
	case everyService:
		for svc := range c.x.slicesBySvc {
			candidates[svc] = struct{}{}
		}
	case len(blocks) > 0:
		// Services with an endpoint inside a block (excepts aside).
		for _, s := range c.x.slices {
			if _, done := candidates[s.service]; done {
				continue
			}
			for _, ep := range s.endpoints {
				if slices.ContainsFunc(blocks, func(p netip.Prefix) bool { return p.Contains(ep.addr) }) {
					candidates[s.service] = struct{}{}
					break
				}
			}
		}
	}
	var out []v1alpha1.EndpointInfo
	for svcKey := range candidates {
		svc := c.x.services[svcKey]
		if svc == nil {
			continue
		}
		for _, cip := range clusterIPs(svc) {
			var ports []v1alpha1.Port
			for _, sp := range svc.Spec.Ports {
				protocol := protocolOrTCP(sp.Protocol)
				if c.serviceTargetsAllowed(allowances, svcKey, sp.Name, protocol, cip.Is6()) {
					port := sp.Port
					ports = append(ports, v1alpha1.Port{Protocol: &protocol, Port: &port})
				}
			}
			if len(ports) > 0 {
				out = append(out, v1alpha1.EndpointInfo{CIDR: hostAddress(cip), Ports: ports})
			}
		}
	}
	return out
}

// withoutClusterIPs returns block b with every Service's cluster IP left
// out. Egress is judged before kube-proxy's DNAT, so a block that holds a
// cluster IP would allow whichever backend the Service picks; services()
// allows a cluster IP only when the policy allows its backends. Each cluster
// IP becomes an except; a block that would hold more than a PolicyEndpoint
// entry's excepts is split in halves until the pieces hold few enough.
func (c *compilation) withoutClusterIPs(b v1alpha1.EndpointInfo) []v1alpha1.EndpointInfo {
	cidr, err := netip.ParsePrefix(string(b.CIDR))
	if err != nil {
		return []v1alpha1.EndpointInfo{b}
	}
	excepts := make([]netip.Prefix, 0, len(b.Except))
	for _, e := range b.Except {
		if p, err := netip.ParsePrefix(string(e)); err == nil {
			excepts = append(excepts, p)
		}
	}
	all := c.x.allClusterIPs()
	first, _ := slices.BinarySearchFunc(all, cidr.Masked().Addr(), netip.Addr.Compare)
	var holes []netip.Addr
	for _, ip := range all[first:] {
		if !cidr.Contains(ip) {
			break
		}
		holes = append(holes, ip)
	}
	if len(holes) == 0 {
		return []v1alpha1.EndpointInfo{b}
	}
	var out []v1alpha1.EndpointInfo
	carve(cidr, excepts, holes, &out)
	return out
}

// carve appends to out the pieces of p outside excepts and holes, each an
// entry of at most MaxExcepts excepts.
func carve(p netip.Prefix, excepts []netip.Prefix, holes []netip.Addr, out *[]v1alpha1.EndpointInfo) {
	var inside []netip.Prefix
	for _, e := range excepts {
		if e.Bits() <= p.Bits() && e.Contains(p.Addr()) {
			return // all of p is excepted
		}
		if p.Overlaps(e) {
			inside = append(inside, e)
		}
	}
	var left []netip.Addr
	for _, h := range holes {
		if p.Contains(h) && !slices.ContainsFunc(inside, func(e netip.Prefix) bool { return e.Contains(h) }) {
			left = append(left, h)
		}
	}
	if len(inside)+len(left) <= v1alpha1.MaxExcepts {
		entry := v1alpha1.EndpointInfo{CIDR: v1alpha1.NetworkAddress(p.String())}
		for _, e := range inside {
			entry.Except = append(entry.Except, v1alpha1.NetworkAddress(e.String()))
		}
		for _, h := range left {
			entry.Except = append(entry.Except, hostAddress(h))
		}
		*out = append(*out, entry)
		return
	}
	lower := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	upperAddr := p.Addr().AsSlice()
	upperAddr[p.Bits()/8] |= 0x80 >> (p.Bits() % 8)
	upper, _ := netip.AddrFromSlice(upperAddr)
	carve(lower, inside, left, out)
	carve(netip.PrefixFrom(upper, p.Bits()+1), inside, left, out)
}

func clusterIPs(svc *corev1.Service) []netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, s := range ips {
		if addr, err := netip.ParseAddr(s); err == nil {
			out = append(out, addr.Unmap())
		}
	}
	return out
}

func (c *compilation) serviceTargetsAllowed(allowances []egressAllowance, svc types.NamespacedName, portName string, protocol corev1.Protocol, ipv6 bool) bool {
	endpoints := 0
	for _, s := range c.x.slicesBySvc[svc] {
		if s.ipv6 != ipv6 {
			continue
		}
		var target *int32
		for _, p := range s.ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			if name == portName && protocolOrTCP(ptrOr(p.Protocol)) == protocol {
				target = p.Port
			}
		}
		if len(s.endpoints) == 0 {
			continue
		}
		if target == nil {
			return false
		}
		for _, ep := range s.endpoints {
			if !c.allows(allowances, c.x.podByIP[ep.addr], ep.addr, protocol, *target) {
				return false
			}
			endpoints++
		}
	}
	return endpoints > 0
}

func ptrOr[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// mergeEntries joins entries for the same CIDR and excepts (the union of
// their ports; no ports wins) and sorts them.
func mergeEntries(in []v1alpha1.EndpointInfo) []v1alpha1.EndpointInfo {
	if sortedDistinct(in) {
		return in
	}
	type key struct{ cidr, except string }
	byKey := map[key]int{}
	var out []v1alpha1.EndpointInfo
	for _, e := range in {
		var exc []string
		for _, x := range e.Except {
			exc = append(exc, string(x))
		}
		sort.Strings(exc)
		k := key{string(e.CIDR), strings.Join(exc, ",")}
		i, seen := byKey[k]
		if !seen {
			byKey[k] = len(out)
			e.Ports = slices.Clone(e.Ports)
			out = append(out, e)
			continue
		}
		if out[i].Ports == nil || e.Ports == nil {
			out[i].Ports = nil
			continue
		}
		out[i].Ports = append(out[i].Ports, e.Ports...)
	}
	for i := range out {
		out[i].Ports = sortPorts(out[i].Ports)
	}
	slices.SortStableFunc(out, func(a, b v1alpha1.EndpointInfo) int {
		return cmp.Or(strings.Compare(string(a.CIDR), string(b.CIDR)), slices.Compare(a.Except, b.Except))
	})
	return splitLongPortLists(out)
}

// splitLongPortLists splits entries with more ports than an entry holds
// into several entries for the same addresses (allows are a union).
func splitLongPortLists(in []v1alpha1.EndpointInfo) []v1alpha1.EndpointInfo {
	if !slices.ContainsFunc(in, func(e v1alpha1.EndpointInfo) bool { return len(e.Ports) > v1alpha1.MaxPorts }) {
		return in
	}
	var out []v1alpha1.EndpointInfo
	for _, e := range in {
		for len(e.Ports) > v1alpha1.MaxPorts {
			part := e
			part.Ports = e.Ports[:v1alpha1.MaxPorts:v1alpha1.MaxPorts]
			out = append(out, part)
			e.Ports = e.Ports[v1alpha1.MaxPorts:]
		}
		out = append(out, e)
	}
	return out
}

// sortedDistinct reports whether entries are in order, without excepts or
// repeated CIDRs, and with sorted ports: nothing for mergeEntries to do.
func sortedDistinct(entries []v1alpha1.EndpointInfo) bool {
	for i, e := range entries {
		if len(e.Except) > 0 || len(e.Ports) > v1alpha1.MaxPorts || (i > 0 && entries[i-1].CIDR >= e.CIDR) || !portsSorted(e.Ports) {
			return false
		}
	}
	return true
}

func portsSorted(ports []v1alpha1.Port) bool {
	return len(ports) < 2 || slices.Equal(ports, sortPorts(slices.Clone(ports)))
}

func sortPorts(ports []v1alpha1.Port) []v1alpha1.Port {
	if ports == nil {
		return nil
	}
	key := func(p v1alpha1.Port) [3]int32 {
		return [3]int32{protocolRank(*p.Protocol), ptrOr(p.Port), ptrOr(p.EndPort)}
	}
	slices.SortFunc(ports, func(a, b v1alpha1.Port) int {
		ka, kb := key(a), key(b)
		return slices.Compare(ka[:], kb[:])
	})
	return slices.CompactFunc(ports, func(a, b v1alpha1.Port) bool { return key(a) == key(b) })
}

func protocolRank(p corev1.Protocol) int32 {
	switch p {
	case corev1.ProtocolTCP:
		return 0
	case corev1.ProtocolUDP:
		return 1
	default:
		return 2
	}
}

func podEndpoints(pods []*podRecord) []v1alpha1.PodEndpoint {
	var out []v1alpha1.PodEndpoint
	for _, pod := range pods {
		for _, ip := range pod.ips {
			out = append(out, v1alpha1.PodEndpoint{
				HostIP:    v1alpha1.NetworkAddress(pod.hostIP),
				PodIP:     v1alpha1.NetworkAddress(ip.String()),
				Name:      pod.key.Name,
				Namespace: pod.key.Namespace,
			})
		}
	}
	slices.SortFunc(out, func(a, b v1alpha1.PodEndpoint) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(string(a.PodIP), string(b.PodIP)))
	})
	return out
}

// setName is the name of chunk 0 of a chunk set; chunk i > 0 appends "-i".
// A policy name cut to fit is hashed whole, so that two policies sharing
// the kept part do not share objects.
func setName(policy, node, group string) string {
	hashed := node + "\x00" + group
	const maxPrefix = 253 - 1 - 10 - 1 - 6
	if len(policy) > maxPrefix {
		hashed += "\x00" + policy
		policy = strings.TrimRight(policy[:maxPrefix], "-.")
	}
	sum := sha256.Sum256([]byte(hashed))
	return policy + "-" + hex.EncodeToString(sum[:5])
}

// maxObjectBytes bounds the JSON size of one chunk's entries, below
// etcd's default request limit (1.5 MiB) with room for the rest.
const maxObjectBytes = 1 << 20

// chunk splits a logical spec into objects of at most maxEntries entries
// and maxObjectBytes of them, all carrying the same set and revision.
func chunk(np *networkingv1.NetworkPolicy, spec v1alpha1.PolicyEndpointSpec, set, revision string, maxEntries int) []v1alpha1.PolicyEndpoint {
	pods, ingress, egress := spec.PodSelectorEndpoints, spec.Ingress, spec.Egress
	// Entry k of pods, then ingress, then egress; starts[i] is chunk i's first.
	entryBytes := func(k int) int {
		switch {
		case k < len(pods):
			p := pods[k]
			return 64 + len(p.Name) + len(p.Namespace) + len(p.PodIP) + len(p.HostIP)
		case k < len(pods)+len(ingress):
			return infoBytes(ingress[k-len(pods)])
		default:
			return infoBytes(egress[k-len(pods)-len(ingress)])
		}
	}
	entries := len(pods) + len(ingress) + len(egress)
	starts := []int{0}
	for k, count, size := 0, 0, 0; k < entries; k++ {
		n := entryBytes(k)
		if count > 0 && (count == maxEntries || size+n > maxObjectBytes) {
			starts = append(starts, k)
			count, size = 0, 0
		}
		count++
		size += n
	}
	total := len(starts)
	within := func(lo, hi, from, length int) (int, int) {
		return min(max(lo-from, 0), length), min(max(hi-from, 0), length)
	}
	objects := make([]v1alpha1.PolicyEndpoint, 0, total)
	for i, lo := range starts {
		hi := entries
		if i+1 < total {
			hi = starts[i+1]
		}
		part := spec
		part.PodSelector = spec.PodSelector.DeepCopy()
		a, b := within(lo, hi, 0, len(pods))
		part.PodSelectorEndpoints = pods[a:b:b]
		a, b = within(lo, hi, len(pods), len(ingress))
		part.Ingress = ingress[a:b:b]
		a, b = within(lo, hi, len(pods)+len(ingress), len(egress))
		part.Egress = egress[a:b:b]
		part.Chunk = &v1alpha1.Chunk{Set: set, Index: int32(i), Total: int32(total), Revision: revision}
		name := set
		if i > 0 {
			name = set + "-" + strconv.Itoa(i)
		}
		objects = append(objects, v1alpha1.PolicyEndpoint{
			TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "PolicyEndpoint"},
			ObjectMeta: metav1.ObjectMeta{
				Name:      name,
				Namespace: np.Namespace,
				Labels:    map[string]string{v1alpha1.NodeLabel: v1alpha1.LabelValue(spec.NodeName), v1alpha1.PolicyNameLabel: v1alpha1.LabelValue(np.Name)},
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: networkingv1.SchemeGroupVersion.String(),
					Kind:       "NetworkPolicy",
					Name:       np.Name,
					UID:        np.UID,
					Controller: ptrTo(true),
				}},
			},
			Spec: nilEmpty(part),
		})
	}
	return objects
}

// infoBytes is a generous estimate of an entry's JSON size.
func infoBytes(e v1alpha1.EndpointInfo) int {
	n := 32 + len(e.CIDR) + 48*len(e.Ports)
	for _, x := range e.Except {
		n += 4 + len(x)
	}
	return n
}

// nilEmpty makes empty lists nil so that objects read back from the
// apiserver (which drops them) compare equal.
func nilEmpty(s v1alpha1.PolicyEndpointSpec) v1alpha1.PolicyEndpointSpec {
	if len(s.PodSelectorEndpoints) == 0 {
		s.PodSelectorEndpoints = nil
	}
	if len(s.Ingress) == 0 {
		s.Ingress = nil
	}
	if len(s.Egress) == 0 {
		s.Egress = nil
	}
	return s
}

// PolicyLabelValue is the palisade.io/policy label value for a policy name.
func PolicyLabelValue(name string) string { return v1alpha1.LabelValue(name) }

func ptrTo[T any](v T) *T { return &v }
