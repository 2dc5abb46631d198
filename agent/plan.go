package agent

import (
	"net/netip"
	"time"

	"github.com/palisade-net/palisade/agent/podlink"
	"github.com/palisade-net/palisade/agent/policyset"
	"github.com/palisade-net/palisade/policy"
)

// Mode chooses what the agent does with interfaces whose pod's policy
// state it does not know yet.
type Mode string

const (
	// Standard isolates a new interface, before its pod is identified, in
	// the directions some policy isolates a not-yet-placed pod of the node,
	// and leaves it open otherwise. Before the first sync, new interfaces
	// are left alone.
	Standard Mode = "standard"
	// Strict denies everything on an interface until its pod is identified
	// and the agent has synced, then applies the pod's policy.
	Strict Mode = "strict"
)

// podInfo is what the agent keeps of a pod of its node.
type podInfo struct {
	Key         policyset.PodKey
	Labels      map[string]string
	IPs         []netip.Addr
	HostNetwork bool
	Finished    bool // phase Succeeded or Failed: no interface any more
	Terminating bool // deletion requested
	Created     time.Time
}

// holdsRatherThan tells which of two pods routed to one interface (an IP
// passed from a terminating pod to a new one) the interface belongs to:
// one not being deleted, else the newer.
func (p podInfo) holdsRatherThan(q podInfo) bool {
	if p.Terminating != q.Terminating {
		return !p.Terminating
	}
	return p.Created.After(q.Created)
}

// linkInfo is a pod-like interface of the host.
type linkInfo struct {
	Index     int
	Name      string
	FirstSeen time.Time
}

// target is what one interface should enforce.
type target struct {
	Pod      *policyset.PodKey // nil while the interface's pod is unknown
	Endpoint *policy.Endpoint  // nil: not policed
	Attach   bool              // programs attached (pods, and held unknown interfaces)
	Settled  bool              // the pod's policy state is fully known
	Keep     bool              // leave the interface as it is
}

var denyAll = &policy.Endpoint{Ingress: policy.Direction{Isolated: true}, Egress: policy.Direction{Isolated: true}}

// mapLinks pairs pods with interfaces: by the route to the pod's IPs
// (resolve), and for pods whose IPs are not known yet or not routed, by
// the VPC CNI interface name.
func mapLinks(pods []podInfo, links map[int]linkInfo, resolve func([]netip.Addr) (int, bool)) map[int]policyset.PodKey {
	byName := make(map[string]int, len(links))
	for _, l := range links {
		byName[l.Name] = l.Index
	}
	mapping := map[int]policyset.PodKey{}
	routed := map[int]podInfo{}
	for _, p := range pods {
		if p.HostNetwork || p.Finished {
			continue
		}
		if len(p.IPs) > 0 {
			if index, ok := resolve(p.IPs); ok {
				if _, isLink := links[index]; isLink {
					if q, taken := routed[index]; !taken || p.holdsRatherThan(q) {
						mapping[index], routed[index] = p.Key, p
					}
					continue
				}
			}
		}
		if index, ok := byName[podlink.VPCCNIName(p.Key.Namespace, p.Key.Name)]; ok {
			if _, taken := mapping[index]; !taken {
				mapping[index] = p.Key
			}
		}
	}
	return mapping
}

// planInput is the agent's view at one moment.
type planInput struct {
	Mode    Mode
	Synced  bool // pods, NetworkPolicies and PolicyEndpoints listed at least once
	Now     time.Time
	Started time.Time     // interfaces seen before are not held as unknown pods'
	Grace   time.Duration // how long an unidentified interface is held as a pod's
	// HeldAtStart: interfaces an earlier agent enforced (pinned state);
	// Placed: interfaces a pod was placed on, whatever became of it.
	HeldAtStart, Placed map[int]bool
	Pods                []podInfo
	Links               map[int]linkInfo
	Mapping             map[int]policyset.PodKey
	Result              policyset.Result
}

// plan decides what every pod-like interface enforces. An interface absent
// from the result is not the agent's concern (before sync in standard
// mode, or an unidentified interface past its grace period).
func plan(in planInput) map[int]target {
	targets := map[int]target{}
	placed := map[policyset.PodKey]bool{}
	for index, pk := range in.Mapping {
		placed[pk] = true
		if !in.Synced {
			if in.Mode == Strict {
				targets[index] = target{Pod: &pk, Endpoint: denyAll, Attach: true}
			}
			continue
		}
		pk := pk
		t := target{Pod: &pk, Attach: true, Settled: true}
		if ep, ok := in.Result.Endpoints[pk]; ok {
			t.Endpoint, t.Settled = ep, in.Result.Settled[pk]
		}
		targets[index] = t
	}

	// Interfaces no pod is placed on yet: a pod of the node not placed
	// anywhere may be behind them.
	var pending policy.Endpoint
	for _, p := range in.Pods {
		if p.HostNetwork || p.Finished || placed[p.Key] {
			continue
		}
		if ep, ok := in.Result.Endpoints[p.Key]; ok {
			pending.Ingress.Isolated = pending.Ingress.Isolated || ep.Ingress.Isolated
			pending.Egress.Isolated = pending.Egress.Isolated || ep.Egress.Isolated
		}
	}
	for index, l := range in.Links {
		if _, mapped := in.Mapping[index]; mapped {
			continue
		}
		// A pod's interface that outlives the pod's object (deleted with
		// no grace period while it runs): its last policy stands, denied
		// in strict mode, until the interface goes away.
		if in.Placed[index] {
			if in.Mode == Strict {
				targets[index] = target{Endpoint: denyAll, Attach: true}
			} else {
				targets[index] = target{Keep: true}
			}
			continue
		}
		// Only new interfaces can be a pod the CNI is wiring right now, and
		// those an earlier agent held, as if they were new when this one
		// started; others existed before and are not pods.
		since := l.FirstSeen
		if in.HeldAtStart[index] && !since.After(in.Started) {
			since = in.Started.Add(time.Nanosecond)
		}
		if !since.After(in.Started) || (in.Grace > 0 && in.Now.Sub(since) > in.Grace) {
			continue
		}
		switch {
		case in.Mode == Strict:
			targets[index] = target{Endpoint: denyAll, Attach: true}
		case !in.Synced:
		case pending.Ingress.Isolated || pending.Egress.Isolated:
			ep := pending
			targets[index] = target{Endpoint: &ep, Attach: true}
		}
	}
	return targets
}
