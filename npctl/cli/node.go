package cli

import (
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/dataplane"
	"github.com/palisade-net/palisade/npctl/live"
	"github.com/palisade-net/palisade/npctl/node"
	"github.com/palisade-net/palisade/policy"
)

func newNode(streams IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Inspect what the dataplane enforces on this node",
	}
	var pinPath, kubeconfig, kubeContext, nodeName string
	var withPods bool
	endpoints := &cobra.Command{
		Use:   "endpoints",
		Short: "List the endpoints programmed on this node, their policy revision and counters",
		Long: `endpoints reads the dataplane's pinned maps, read-only (it loads no
program and changes nothing), and lists every programmed endpoint: its
host interface, the policy revision enforced, which directions are
isolated, and the packets allowed and denied each way. Run it on the node,
as root.

With --pods it also lists the node's pods from the cluster and names the
pod behind each interface, by the host's route to the pod's IP.`,
		Example: `  npctl node endpoints
  kubectl npctl node endpoints --pods --node $(hostname)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := node.Read(pinPath)
			if err != nil {
				return err
			}
			var pods map[int]string
			if withPods {
				c, err := live.NewClient(kubeconfig, kubeContext)
				if err != nil {
					return err
				}
				var podList corev1.PodList
				if err := c.List(cmd.Context(), &podList, client.MatchingFields{"spec.nodeName": nodeName}); err != nil {
					return err
				}
				pods = node.PodsByIfindex(podList.Items)
			}
			return node.WriteEndpoints(streams.Out, list, pods)
		},
	}
	hostname, _ := os.Hostname()
	endpoints.Flags().StringVar(&pinPath, "pin-path", dataplane.DefaultPinPath, "bpffs directory of the dataplane's pinned maps (the agent's --pin-path)")
	endpoints.Flags().BoolVar(&withPods, "pods", false, "name the pod behind each interface (reads the node's pods from the cluster)")
	endpoints.Flags().StringVar(&nodeName, "node", hostname, "this node's name in the cluster, for --pods")
	endpoints.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig, for --pods")
	endpoints.Flags().StringVar(&kubeContext, "context", "", "kubeconfig context, for --pods")
	rules := &cobra.Command{
		Use:   "rules IFINDEX|INTERFACE",
		Short: "Dump the rule tables programmed for one endpoint",
		Long: `rules reads, from the pinned maps and read-only, the longest-prefix-match
tables programmed for the endpoint behind a host interface: per isolated
direction the peer prefixes and the port sets they lead to, with the rule
IDs that allow (as in npctl rules and the agent's flow logs).`,
		Example: `  npctl node rules 12
  npctl node rules veth3f2a1b`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ifindex, err := strconv.Atoi(args[0])
			if err != nil {
				link, lerr := netlink.LinkByName(args[0])
				if lerr != nil {
					return fmt.Errorf("%s is neither an ifindex nor an interface: %w", args[0], lerr)
				}
				ifindex = link.Attrs().Index
			}
			tables, err := node.Rules(pinPath, ifindex)
			if err != nil {
				return err
			}
			ruleName := func(id uint32) string { return fmt.Sprintf("rule %08x", id) }
			for dir, d := range tables {
				if d == nil {
					fmt.Fprintf(streams.Out, "%s: not isolated, all allowed\n", policy.Dir(dir))
					continue
				}
				fmt.Fprintf(streams.Out, "%s: isolated\n", policy.Dir(dir))
				if err := node.WriteCompiled(streams.Out, d, ruleName); err != nil {
					return err
				}
			}
			return nil
		},
	}
	rules.Flags().StringVar(&pinPath, "pin-path", dataplane.DefaultPinPath, "bpffs directory of the dataplane's pinned maps (the agent's --pin-path)")
	cmd.AddCommand(endpoints, rules)
	return cmd
}
