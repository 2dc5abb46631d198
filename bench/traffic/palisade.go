package traffic

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/palisade-net/palisade/bench/passthrough"
	"github.com/palisade-net/palisade/bench/workload"
	"github.com/palisade-net/palisade/dataplane"
	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/test/podnet"
)

// PolicyFor isolates both directions of both pods with rules filler rules
// each (and as many port ranges), the last rule of the client's egress and
// of the server's ingress allowing the measured ports. Replies pass by
// connection tracking only: nothing allows them otherwise.
func PolicyFor(client, server *podnet.Pod, rules int) (clientPolicy, serverPolicy *policy.Endpoint, err error) {
	direction := func(peer netip.Addr, seed uint64) (policy.Direction, error) {
		d, err := workload.Direction(workload.Spec{
			CIDRs: rules, PortRanges: rules, Allow: netip.PrefixFrom(peer, peer.BitLen()), AllowPort: iperfPort, Seed: seed,
		})
		if err != nil {
			return d, err
		}
		last := &d.Rules[len(d.Rules)-1]
		last.Ports = append(last.Ports, policy.PortRange{Protocol: policy.TCP, Port: echoPort})
		return d, nil
	}
	unrelated := netip.MustParseAddr("192.0.2.1") // TEST-NET-1: matches no pod
	clientEgress, err1 := direction(server.IPv4, 1)
	clientIngress, err2 := direction(unrelated, 2)
	serverIngress, err3 := direction(client.IPv4, 3)
	serverEgress, err4 := direction(unrelated, 4)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, nil, err
	}
	return &policy.Endpoint{Ingress: clientIngress, Egress: clientEgress},
		&policy.Endpoint{Ingress: serverIngress, Egress: serverEgress}, nil
}

// PalisadeAttach attaches the dataplane's programs to both pods and
// programs PolicyFor(rules); detaching removes the programs.
func PalisadeAttach(d *dataplane.Dataplane, rules int) Attach {
	return func(client, server *podnet.Pod) (func() error, error) {
		clientPolicy, serverPolicy, err := PolicyFor(client, server, rules)
		if err != nil {
			return nil, err
		}
		var attached []int
		detach := func() error {
			var errs []error
			for _, ifindex := range attached {
				errs = append(errs, d.Detach(ifindex))
			}
			return errors.Join(errs...)
		}
		for _, p := range []struct {
			pod *podnet.Pod
			ep  *policy.Endpoint
		}{{client, clientPolicy}, {server, serverPolicy}} {
			ifindex, err := ifindexOf(p.pod)
			if err != nil {
				return nil, errors.Join(err, detach())
			}
			if _, err := d.SetPolicy(ifindex, p.ep); err != nil {
				return nil, errors.Join(fmt.Errorf("set policy of %s: %w", p.pod.Name, err), detach())
			}
			if err := d.Attach(ifindex); err != nil {
				return nil, errors.Join(fmt.Errorf("attach to %s: %w", p.pod.HostVeth, err), detach())
			}
			attached = append(attached, ifindex)
		}
		return detach, nil
	}
}

// PassThroughAttach attaches the empty program on both hooks of both
// pods' veths: the cost of having any TC program at all.
func PassThroughAttach() (Attach, func() error, error) {
	prog, err := passthrough.New()
	if err != nil {
		return nil, nil, err
	}
	attach := func(client, server *podnet.Pod) (func() error, error) {
		var detaches []func() error
		detach := func() error {
			var errs []error
			for _, d := range detaches {
				errs = append(errs, d())
			}
			return errors.Join(errs...)
		}
		for _, pod := range []*podnet.Pod{client, server} {
			ifindex, err := ifindexOf(pod)
			if err != nil {
				return nil, errors.Join(err, detach())
			}
			d, err := passthrough.AttachBothWays(prog, ifindex)
			if err != nil {
				return nil, errors.Join(err, detach())
			}
			detaches = append(detaches, d)
		}
		return detach, nil
	}
	return attach, prog.Close, nil
}

func ifindexOf(pod *podnet.Pod) (int, error) {
	link, err := netlink.LinkByName(pod.HostVeth)
	if err != nil {
		return 0, fmt.Errorf("find %s: %w", pod.HostVeth, err)
	}
	return link.Attrs().Index, nil
}
