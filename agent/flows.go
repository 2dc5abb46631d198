package agent

import (
	"context"
	"strconv"
	"strings"

	"github.com/palisade-net/palisade/agent/flowlog"
	"github.com/palisade-net/palisade/dataplane"
	"github.com/palisade-net/palisade/policy"
)

// readEvents turns dataplane events into flow log records until ctx ends.
func (a *Agent) readEvents(ctx context.Context) {
	err := a.dp.ReadEvents(ctx, func(e dataplane.Event) {
		if _, err := a.cfg.FlowLog.Write(a.flowRecord(e)); err != nil {
			a.log.Error(err, "writing flow log")
		}
	})
	if err != nil && ctx.Err() == nil {
		a.log.Error(err, "reading dataplane events; flow logs stopped")
	}
}

func (a *Agent) flowRecord(e dataplane.Event) flowlog.Record {
	view := a.view.Load()
	r := flowlog.Record{
		Time:      e.Time,
		Verdict:   "deny",
		Direction: e.Direction.String(),
		Port:      e.DstPort,
		Protocol:  protocolName(e.Protocol),
		Reason:    e.Reason,
	}
	if e.Allowed {
		r.Verdict = "allow"
	}
	podIP, peer := e.Dst, e.Src
	if e.Direction == policy.Egress {
		podIP, peer = e.Src, e.Dst
	}
	r.Peer = peer.String()
	if podIP.IsValid() {
		r.PodIP = podIP.String()
	}
	pk, known := view.pods[e.Ifindex]
	if known {
		r.Namespace, r.Pod = pk.Namespace, pk.Name
	}
	switch origin, ok := view.result.Origin(e.RuleID); {
	case ok && e.RuleID != 0:
		r.Policy = origin.Policy.String()
	case !e.Allowed && known && view.result != nil:
		// A drop is decided by every policy isolating the pod.
		var names []string
		for _, p := range view.result.Policies[pk] {
			names = append(names, p.String())
		}
		r.Policy = strings.Join(names, ",")
	}
	return r
}

func protocolName(p policy.Protocol) string {
	switch p {
	case policy.TCP:
		return "TCP"
	case policy.UDP:
		return "UDP"
	case policy.SCTP:
		return "SCTP"
	case policy.ICMP:
		return "ICMP"
	case policy.ICMPv6:
		return "ICMPv6"
	}
	return strconv.Itoa(int(p))
}
