package node

import (
	"fmt"
	"io"
	"net"
	"text/tabwriter"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
)

// WriteEndpoints prints one line per endpoint: where it is, the revision
// programmed, which directions are isolated and its packet counters.
// pods names the pod behind an ifindex, when known.
func WriteEndpoints(w io.Writer, endpoints []Endpoint, pods map[int]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IFINDEX\tINTERFACE\tPOD\tENDPOINT\tREVISION\tINGRESS\tEGRESS\tIN ALLOWED\tIN DENIED\tOUT ALLOWED\tOUT DENIED")
	for _, e := range endpoints {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%s\t%d\t%d\t%d\t%d\n", e.Ifindex, orDash(e.Interface), orDash(pods[e.Ifindex]),
			e.EndpointID, e.Revision, isolation(e.Isolated[0]), isolation(e.Isolated[1]),
			e.Counters.Ingress.AllowPackets, e.Counters.Ingress.DenyPackets, e.Counters.Egress.AllowPackets, e.Counters.Egress.DenyPackets)
	}
	if len(endpoints) == 0 {
		fmt.Fprintln(tw, "(no endpoint programmed)")
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func isolation(isolated bool) string {
	if isolated {
		return "isolated"
	}
	return "open"
}

// PodsByIfindex finds the host interface of each pod as the agent does: the
// device of the host's route to the pod's IP.
func PodsByIfindex(pods []corev1.Pod) map[int]string {
	out := map[int]string{}
	for _, p := range pods {
		if p.Spec.HostNetwork {
			continue
		}
		for _, ip := range p.Status.PodIPs {
			addr := net.ParseIP(ip.IP)
			if addr == nil {
				continue
			}
			routes, err := netlink.RouteGet(addr)
			if err != nil || len(routes) == 0 || routes[0].LinkIndex <= 0 {
				continue
			}
			out[routes[0].LinkIndex] = p.Namespace + "/" + p.Name
			break
		}
	}
	return out
}
