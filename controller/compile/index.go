// Package compile turns Kubernetes NetworkPolicies, with the Namespaces,
// Pods, Services and EndpointSlices they refer to, into PolicyEndpoint
// objects. It holds no client: callers feed an Index with object changes and
// compile the policies each change reports as affected.
package compile

import (
	"errors"
	"net/netip"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

// namespaceNameLabel is set by the apiserver on every namespace; offline
// inputs may lack it, so the index adds it.
const namespaceNameLabel = "kubernetes.io/metadata.name"

type namedPortKey struct {
	name     string
	protocol corev1.Protocol
}

// podRecord keeps what compilation reads of a pod.
type podRecord struct {
	key      types.NamespacedName
	labels   labels.Set
	nodeName string
	hostIP   string
	ips      []netip.Addr
	addrs    []v1alpha1.NetworkAddress // ips as host prefixes
	ports    map[namedPortKey]int32
	// peer: the pod can be a policy peer (has IPs, not hostNetwork, not terminated).
	peer bool
}

// target reports whether policies apply to the pod now.
func (p *podRecord) target() bool { return p.peer && p.nodeName != "" }

func (p *podRecord) equal(o *podRecord) bool {
	return p.key == o.key && labels.Equals(p.labels, o.labels) && p.nodeName == o.nodeName &&
		p.hostIP == o.hostIP && slices.Equal(p.ips, o.ips) && p.peer == o.peer && mapsEqual(p.ports, o.ports)
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func newPodRecord(pod *corev1.Pod) *podRecord {
	rec := &podRecord{
		key:      types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name},
		labels:   labels.Set(maps(pod.Labels)),
		nodeName: pod.Spec.NodeName,
		hostIP:   pod.Status.HostIP,
		ports:    map[namedPortKey]int32{},
	}
	for _, ip := range pod.Status.PodIPs {
		if addr, err := netip.ParseAddr(ip.IP); err == nil {
			rec.ips = append(rec.ips, addr.Unmap())
		}
	}
	if len(rec.ips) == 0 && pod.Status.PodIP != "" {
		if addr, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
			rec.ips = append(rec.ips, addr.Unmap())
		}
	}
	slices.SortFunc(rec.ips, func(a, b netip.Addr) int { return a.Compare(b) })
	rec.ips = slices.Compact(rec.ips)
	for _, ip := range rec.ips {
		rec.addrs = append(rec.addrs, hostAddress(ip))
	}
	// As the EndpointSlice controller finds a named port: the first
	// container that defines it, among the regular containers, then the
	// sidecars (init containers that keep running).
	addPorts := func(c corev1.Container) {
		for _, p := range c.Ports {
			key := namedPortKey{p.Name, protocolOrTCP(p.Protocol)}
			if _, taken := rec.ports[key]; p.Name != "" && !taken {
				rec.ports[key] = p.ContainerPort
			}
		}
	}
	for _, c := range pod.Spec.Containers {
		addPorts(c)
	}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			addPorts(c)
		}
	}
	terminated := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	rec.peer = !pod.Spec.HostNetwork && !terminated && len(rec.ips) > 0
	return rec
}

func maps(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func protocolOrTCP(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// sliceRecord keeps what compilation reads of an EndpointSlice.
type sliceRecord struct {
	key       types.NamespacedName
	service   types.NamespacedName
	ports     []discoveryv1.EndpointPort
	ipv6      bool
	endpoints []sliceEndpoint
}

// sliceEndpoint is one endpoint address. Which pod it leads to is looked up
// by address when needed, never taken from the slice's targetRef: traffic
// goes to the address, whoever holds it now.
type sliceEndpoint struct {
	addr netip.Addr
}

// endpointPods returns the pods that hold the endpoints' addresses now.
func (x *Index) endpointPods(eps []sliceEndpoint) []types.NamespacedName {
	out := make([]types.NamespacedName, 0, len(eps))
	for _, ep := range eps {
		if pod, ok := x.podByIP[ep.addr]; ok {
			out = append(out, pod)
		}
	}
	return out
}

// policyRecord is a NetworkPolicy with its selectors parsed once.
type policyRecord struct {
	policy      *networkingv1.NetworkPolicy
	podSelector labels.Selector
	selectorErr error
	ingress     []parsedRule
	egress      []parsedRule
	// egressReachesAddresses: an egress rule allows all peers or an
	// ipBlock, so any Service may be reachable through it.
	egressReachesAddresses bool
}

type parsedRule struct {
	ports []networkingv1.NetworkPolicyPort
	// allPeers: the rule lists no peers, so every address matches.
	allPeers bool
	peers    []parsedPeer
}

type parsedPeer struct {
	// pod peers: namespaceSelector nil means the policy's namespace.
	podSelector       labels.Selector
	namespaceSelector labels.Selector
	// selectorKey identifies the selectors, for memoizing their selection.
	selectorKey string
	ipBlock     *networkingv1.IPBlock
	err         error
}

var errEmptyPeer = errors.New("peer has neither podSelector, namespaceSelector nor ipBlock")

func parseSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(s)
}

func newPolicyRecord(np *networkingv1.NetworkPolicy) *policyRecord {
	rec := &policyRecord{policy: np}
	rec.podSelector, rec.selectorErr = metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	parsePeers := func(peers []networkingv1.NetworkPolicyPeer) []parsedPeer {
		var out []parsedPeer
		for _, p := range peers {
			var pp parsedPeer
			switch {
			case p.IPBlock != nil:
				pp.ipBlock = p.IPBlock
			case p.PodSelector == nil && p.NamespaceSelector == nil:
				pp.err = errEmptyPeer
			default:
				var err1, err2 error
				pp.podSelector, err1 = parseSelector(p.PodSelector)
				if p.NamespaceSelector != nil {
					pp.namespaceSelector, err2 = parseSelector(p.NamespaceSelector)
				}
				pp.selectorKey = pp.podSelector.String() + "\x00"
				if pp.namespaceSelector != nil {
					pp.selectorKey += pp.namespaceSelector.String()
				}
				if err1 != nil {
					pp.err = err1
				} else if err2 != nil {
					pp.err = err2
				}
			}
			out = append(out, pp)
		}
		return out
	}
	for _, r := range np.Spec.Ingress {
		rec.ingress = append(rec.ingress, parsedRule{ports: r.Ports, allPeers: len(r.From) == 0, peers: parsePeers(r.From)})
	}
	for _, r := range np.Spec.Egress {
		rule := parsedRule{ports: r.Ports, allPeers: len(r.To) == 0, peers: parsePeers(r.To)}
		rec.egress = append(rec.egress, rule)
		for _, peer := range rule.peers {
			rec.egressReachesAddresses = rec.egressReachesAddresses || peer.ipBlock != nil
		}
		rec.egressReachesAddresses = rec.egressReachesAddresses || rule.allPeers
	}
	return rec
}

// isolates returns the directions the policy isolates, defaulting
// policyTypes as the API does: Ingress always, Egress when rules exist.
func (p *policyRecord) isolates() (ingress, egress bool) {
	types := p.policy.Spec.PolicyTypes
	if len(types) == 0 {
		return true, len(p.policy.Spec.Egress) > 0
	}
	return slices.Contains(types, networkingv1.PolicyTypeIngress), slices.Contains(types, networkingv1.PolicyTypeEgress)
}

// Index is the in-memory state compilation reads. It is not safe for
// concurrent use; the caller serializes access.
type Index struct {
	namespaces  map[string]labels.Set
	pods        map[types.NamespacedName]*podRecord
	podsByNS    map[string]map[string]*podRecord
	podByIP     map[netip.Addr]types.NamespacedName
	services    map[types.NamespacedName]*corev1.Service
	slices      map[types.NamespacedName]*sliceRecord
	slicesBySvc map[types.NamespacedName]map[types.NamespacedName]*sliceRecord
	servicesAt  map[netip.Addr]map[types.NamespacedName]int // endpoint address -> services (count of slice references)
	// clusterIPs are every Service's cluster IPs, sorted; nil after a
	// Service change until allClusterIPs sorts them again.
	clusterIPs   []netip.Addr
	policies     map[types.NamespacedName]*policyRecord
	policiesByNS map[string]map[string]*policyRecord
	// peerMemo caches peer selections; any pod or namespace change clears it.
	peerMemo map[string]*peerSelection
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{
		namespaces:   map[string]labels.Set{},
		pods:         map[types.NamespacedName]*podRecord{},
		podsByNS:     map[string]map[string]*podRecord{},
		podByIP:      map[netip.Addr]types.NamespacedName{},
		services:     map[types.NamespacedName]*corev1.Service{},
		slices:       map[types.NamespacedName]*sliceRecord{},
		slicesBySvc:  map[types.NamespacedName]map[types.NamespacedName]*sliceRecord{},
		servicesAt:   map[netip.Addr]map[types.NamespacedName]int{},
		policies:     map[types.NamespacedName]*policyRecord{},
		policiesByNS: map[string]map[string]*policyRecord{},
		peerMemo:     map[string]*peerSelection{},
	}
}

// PolicyKeys is a set of NetworkPolicy names.
type PolicyKeys map[types.NamespacedName]struct{}

// Sorted returns the keys in a stable order.
func (k PolicyKeys) Sorted() []types.NamespacedName {
	out := make([]types.NamespacedName, 0, len(k))
	for key := range k {
		out = append(out, key)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Policies returns the names of every indexed policy.
func (x *Index) Policies() PolicyKeys {
	out := PolicyKeys{}
	for k := range x.policies {
		out[k] = struct{}{}
	}
	return out
}

// UpsertPolicy records a NetworkPolicy; it affects itself.
func (x *Index) UpsertPolicy(np *networkingv1.NetworkPolicy) PolicyKeys {
	key := types.NamespacedName{Namespace: np.Namespace, Name: np.Name}
	rec := newPolicyRecord(np.DeepCopy())
	x.policies[key] = rec
	if x.policiesByNS[np.Namespace] == nil {
		x.policiesByNS[np.Namespace] = map[string]*policyRecord{}
	}
	x.policiesByNS[np.Namespace][np.Name] = rec
	return PolicyKeys{key: {}}
}

// DeletePolicy forgets a NetworkPolicy; compiling it then yields nothing.
func (x *Index) DeletePolicy(key types.NamespacedName) PolicyKeys {
	delete(x.policies, key)
	delete(x.policiesByNS[key.Namespace], key.Name)
	return PolicyKeys{key: {}}
}

// UpsertNamespace records a namespace's labels and returns the policies
// whose namespace selectors match its old or new labels.
func (x *Index) UpsertNamespace(ns *corev1.Namespace) PolicyKeys {
	newLabels := labels.Set(maps(ns.Labels))
	if _, ok := newLabels[namespaceNameLabel]; !ok {
		newLabels[namespaceNameLabel] = ns.Name
	}
	old, existed := x.namespaces[ns.Name]
	if existed && labels.Equals(old, newLabels) {
		return PolicyKeys{}
	}
	if !existed {
		old = labels.Set{namespaceNameLabel: ns.Name}
	}
	x.namespaces[ns.Name] = newLabels
	clear(x.peerMemo)
	affected := PolicyKeys{}
	x.addNamespaceSelecting(affected, old, newLabels, ns.Name)
	return affected
}

// DeleteNamespace forgets a namespace.
func (x *Index) DeleteNamespace(name string) PolicyKeys {
	old, existed := x.namespaces[name]
	if !existed {
		return PolicyKeys{}
	}
	delete(x.namespaces, name)
	clear(x.peerMemo)
	affected := PolicyKeys{}
	x.addNamespaceSelecting(affected, old, labels.Set{namespaceNameLabel: name}, name)
	return affected
}

// addNamespaceSelecting adds the policies with a namespace selector that
// matches exactly one of before and after.
func (x *Index) addNamespaceSelecting(affected PolicyKeys, before, after labels.Set, nsName string) {
	if len(x.podsByNS[nsName]) == 0 {
		return // no pod there: its labels change no peer set
	}
	for key, p := range x.policies {
		for _, rules := range [][]parsedRule{p.ingress, p.egress} {
			for _, r := range rules {
				for _, peer := range r.peers {
					if peer.namespaceSelector != nil && peer.namespaceSelector.Matches(before) != peer.namespaceSelector.Matches(after) {
						affected[key] = struct{}{}
					}
				}
			}
		}
	}
}

func (x *Index) namespaceLabels(name string) labels.Set {
	if l, ok := x.namespaces[name]; ok {
		return l
	}
	return labels.Set{namespaceNameLabel: name}
}

// UpsertPod records a pod and returns the policies it affected (as a target
// or as a peer, before or after the change). A change to nothing the
// compilation reads affects nothing.
func (x *Index) UpsertPod(pod *corev1.Pod) PolicyKeys {
	rec := newPodRecord(pod)
	old := x.pods[rec.key]
	if old != nil && old.equal(rec) {
		return PolicyKeys{}
	}
	x.removePod(old)
	x.pods[rec.key] = rec
	if x.podsByNS[rec.key.Namespace] == nil {
		x.podsByNS[rec.key.Namespace] = map[string]*podRecord{}
	}
	x.podsByNS[rec.key.Namespace][rec.key.Name] = rec
	if rec.peer {
		for _, ip := range rec.ips {
			x.podByIP[ip] = rec.key
		}
	}
	x.updatePeerMemo(old, rec)
	affected := PolicyKeys{}
	x.addPolicesConcerning(affected, old)
	x.addPolicesConcerning(affected, rec)
	return affected
}

// updatePeerMemo moves one pod in or out of the memoized peer selections,
// copying (never modifying) a selection the pod enters or leaves.
func (x *Index) updatePeerMemo(old, updated *podRecord) {
	var nsLabels labels.Set
	if updated != nil {
		nsLabels = x.namespaceLabels(updated.key.Namespace)
	}
	for memoKey, sel := range x.peerMemo {
		inOld := false
		if old != nil {
			_, inOld = sel.pods[old.key]
		}
		inNew := updated != nil && updated.peer && sel.peer.matchesPod(sel.policyNamespace, updated, nsLabels)
		if !inOld && !inNew {
			continue
		}
		next := &peerSelection{pods: make(map[types.NamespacedName]*podRecord, len(sel.pods)+1), peer: sel.peer, policyNamespace: sel.policyNamespace}
		for k, p := range sel.pods {
			next.pods[k] = p
		}
		next.addrs = make([]v1alpha1.NetworkAddress, 0, len(sel.addrs)+2)
		if inOld {
			delete(next.pods, old.key)
			for _, a := range sel.addrs {
				if !slices.Contains(old.addrs, a) {
					next.addrs = append(next.addrs, a)
				}
			}
			// An address another selected pod also holds stays.
			for _, a := range old.addrs {
				for _, p := range next.pods {
					if slices.Contains(p.addrs, a) {
						next.addrs = append(next.addrs, a)
						break
					}
				}
			}
			slices.Sort(next.addrs)
		} else {
			next.addrs = append(next.addrs, sel.addrs...)
		}
		if inNew {
			next.pods[updated.key] = updated
			next.addrs = append(next.addrs, updated.addrs...)
			slices.Sort(next.addrs)
		}
		x.peerMemo[memoKey] = next
	}
}

// DeletePod forgets a pod.
func (x *Index) DeletePod(key types.NamespacedName) PolicyKeys {
	old := x.pods[key]
	if old == nil {
		return PolicyKeys{}
	}
	x.removePod(old)
	x.updatePeerMemo(old, nil)
	affected := PolicyKeys{}
	x.addPolicesConcerning(affected, old)
	return affected
}

func (x *Index) removePod(old *podRecord) {
	if old == nil {
		return
	}
	delete(x.pods, old.key)
	delete(x.podsByNS[old.key.Namespace], old.key.Name)
	for _, ip := range old.ips {
		if x.podByIP[ip] == old.key {
			delete(x.podByIP, ip)
		}
	}
}

// addPolicesConcerning adds the policies that select pod as a target or
// as a peer.
func (x *Index) addPolicesConcerning(affected PolicyKeys, pod *podRecord) {
	if pod == nil || !pod.peer {
		return
	}
	nsLabels := x.namespaceLabels(pod.key.Namespace)
	for key, p := range x.policies {
		if _, done := affected[key]; done {
			continue
		}
		if key.Namespace == pod.key.Namespace && p.selectorErr == nil && p.podSelector.Matches(pod.labels) {
			affected[key] = struct{}{}
			continue
		}
		if p.anyPeerMatches(key.Namespace, pod, nsLabels) {
			affected[key] = struct{}{}
		}
	}
}

func (p *policyRecord) anyPeerMatches(policyNS string, pod *podRecord, nsLabels labels.Set) bool {
	for _, rules := range [][]parsedRule{p.ingress, p.egress} {
		for _, r := range rules {
			for i := range r.peers {
				if r.peers[i].matchesPod(policyNS, pod, nsLabels) {
					return true
				}
			}
		}
	}
	return false
}

func (p *policyRecord) anyEgressPeerMatches(policyNS string, pod *podRecord, nsLabels labels.Set) bool {
	for _, r := range p.egress {
		for i := range r.peers {
			if r.peers[i].matchesPod(policyNS, pod, nsLabels) {
				return true
			}
		}
	}
	return false
}

func (peer *parsedPeer) matchesPod(policyNS string, pod *podRecord, nsLabels labels.Set) bool {
	if peer.err != nil || peer.podSelector == nil {
		return false
	}
	if peer.namespaceSelector == nil {
		if pod.key.Namespace != policyNS {
			return false
		}
	} else if !peer.namespaceSelector.Matches(nsLabels) {
		return false
	}
	return peer.podSelector.Matches(pod.labels)
}

// UpsertService records a Service and returns the policies that allow
// egress to some of its backends.
func (x *Index) UpsertService(svc *corev1.Service) PolicyKeys {
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	old := x.services[key]
	if old != nil && slices.Equal(old.Spec.ClusterIPs, svc.Spec.ClusterIPs) && old.Spec.ClusterIP == svc.Spec.ClusterIP &&
		servicePortsEqual(old.Spec.Ports, svc.Spec.Ports) {
		return PolicyKeys{}
	}
	x.services[key] = svc.DeepCopy()
	x.clusterIPs = nil
	return x.policiesReachingService(key)
}

// allClusterIPs returns the cluster IPs of every Service, sorted.
func (x *Index) allClusterIPs() []netip.Addr {
	if x.clusterIPs == nil {
		x.clusterIPs = []netip.Addr{}
		for _, svc := range x.services {
			x.clusterIPs = append(x.clusterIPs, clusterIPs(svc)...)
		}
		slices.SortFunc(x.clusterIPs, netip.Addr.Compare)
		x.clusterIPs = slices.Compact(x.clusterIPs)
	}
	return x.clusterIPs
}

func servicePortsEqual(a, b []corev1.ServicePort) bool {
	return slices.EqualFunc(a, b, func(p, q corev1.ServicePort) bool {
		return p.Name == q.Name && p.Port == q.Port && p.Protocol == q.Protocol && p.TargetPort == q.TargetPort
	})
}

// DeleteService forgets a Service.
func (x *Index) DeleteService(key types.NamespacedName) PolicyKeys {
	if _, ok := x.services[key]; !ok {
		return PolicyKeys{}
	}
	affected := x.policiesReachingService(key)
	delete(x.services, key)
	x.clusterIPs = nil
	return affected
}

// policiesReachingService returns the policies that allow egress to one of
// the Service's endpoints, and those with ipBlock or peer-less egress
// rules, which leave out its cluster IPs.
func (x *Index) policiesReachingService(svc types.NamespacedName) PolicyKeys {
	affected := PolicyKeys{}
	x.addPoliciesReachingPods(affected, nil)
	for _, s := range x.slicesBySvc[svc] {
		x.addPoliciesReachingPods(affected, x.endpointPods(s.endpoints))
	}
	return affected
}

func (x *Index) addPoliciesReachingPods(affected PolicyKeys, pods []types.NamespacedName) {
	for key, p := range x.policies {
		if p.egressReachesAddresses {
			affected[key] = struct{}{}
		}
	}
	for _, podKey := range pods {
		pod := x.pods[podKey]
		if pod == nil || !pod.peer {
			continue
		}
		nsLabels := x.namespaceLabels(pod.key.Namespace)
		for key, p := range x.policies {
			if _, done := affected[key]; done {
				continue
			}
			if p.anyEgressPeerMatches(key.Namespace, pod, nsLabels) {
				affected[key] = struct{}{}
			}
		}
	}
}

// UpsertEndpointSlice records an EndpointSlice and returns the policies that
// allow egress to one of its old or new endpoints.
func (x *Index) UpsertEndpointSlice(es *discoveryv1.EndpointSlice) PolicyKeys {
	rec := &sliceRecord{
		key:     types.NamespacedName{Namespace: es.Namespace, Name: es.Name},
		service: types.NamespacedName{Namespace: es.Namespace, Name: es.Labels[discoveryv1.LabelServiceName]},
		ports:   es.Ports,
		ipv6:    es.AddressType == discoveryv1.AddressTypeIPv6,
	}
	for _, ep := range es.Endpoints {
		if len(ep.Addresses) == 0 {
			continue
		}
		var entry sliceEndpoint
		if addr, err := netip.ParseAddr(ep.Addresses[0]); err == nil {
			entry.addr = addr.Unmap()
		}
		rec.endpoints = append(rec.endpoints, entry)
	}
	old := x.slices[rec.key]
	x.removeSlice(old)
	x.slices[rec.key] = rec
	if x.slicesBySvc[rec.service] == nil {
		x.slicesBySvc[rec.service] = map[types.NamespacedName]*sliceRecord{}
	}
	x.slicesBySvc[rec.service][rec.key] = rec
	for _, ep := range rec.endpoints {
		if x.servicesAt[ep.addr] == nil {
			x.servicesAt[ep.addr] = map[types.NamespacedName]int{}
		}
		x.servicesAt[ep.addr][rec.service]++
	}
	affected := PolicyKeys{}
	if old != nil {
		x.addPoliciesReachingPods(affected, x.endpointPods(old.endpoints))
	}
	x.addPoliciesReachingPods(affected, x.endpointPods(rec.endpoints))
	return affected
}

// DeleteEndpointSlice forgets an EndpointSlice.
func (x *Index) DeleteEndpointSlice(key types.NamespacedName) PolicyKeys {
	old := x.slices[key]
	if old == nil {
		return PolicyKeys{}
	}
	x.removeSlice(old)
	affected := PolicyKeys{}
	x.addPoliciesReachingPods(affected, x.endpointPods(old.endpoints))
	return affected
}

func (x *Index) removeSlice(old *sliceRecord) {
	if old == nil {
		return
	}
	delete(x.slices, old.key)
	delete(x.slicesBySvc[old.service], old.key)
	for _, ep := range old.endpoints {
		if m := x.servicesAt[ep.addr]; m != nil {
			m[old.service]--
			if m[old.service] <= 0 {
				delete(m, old.service)
			}
			if len(m) == 0 {
				delete(x.servicesAt, ep.addr)
			}
		}
	}
}

// Counts returns how many objects of each kind the index holds.
func (x *Index) Counts() map[string]int {
	return map[string]int{
		"namespace": len(x.namespaces), "pod": len(x.pods), "service": len(x.services),
		"endpointslice": len(x.slices), "networkpolicy": len(x.policies),
	}
}

// HasPolicy reports whether the index holds the policy.
func (x *Index) HasPolicy(key types.NamespacedName) bool {
	_, ok := x.policies[key]
	return ok
}
