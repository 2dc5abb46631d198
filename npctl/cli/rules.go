package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/palisade-net/palisade/dataplane/compile"
	"github.com/palisade-net/palisade/npctl/explain"
	"github.com/palisade-net/palisade/npctl/node"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
	"github.com/palisade-net/palisade/policy"
)

func newRules(streams IO) *cobra.Command {
	var files []string
	var kubeconfig, kubeContext string
	var compiled bool
	cmd := &cobra.Command{
		Use:   "rules NS/POD... [-f MANIFEST...]",
		Short: "Print the rules a pod's agent programs, in words",
		Long: `rules prints, for each pod, the policies applied to it and, per direction,
whether it is isolated and each rule (its ID as in flow logs, the policy
and entry it comes from, the peers and ports it allows). With --compiled it
adds the longest-prefix-match tables the dataplane writes for them.

With -f it works offline from manifests; without, from the live cluster's
PolicyEndpoints.`,
		Example: `  npctl rules -f cluster.yaml y/b
  kubectl npctl rules shop/api`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var pods []probe.Pod
			for _, a := range args {
				p, err := probe.ParsePod(a)
				if err != nil {
					return err
				}
				pods = append(pods, p)
			}
			model, err := offlineOrLive(cmd, files, kubeconfig, kubeContext, streams)
			if err != nil {
				return err
			}
			for i, p := range pods {
				if !model.HasPod(p) {
					return fmt.Errorf("no pod %s with an IP", p)
				}
				if i > 0 {
					fmt.Fprintln(streams.Out)
				}
				fmt.Fprint(streams.Out, explain.Endpoint(model, p))
				if compiled {
					if err := writeCompiled(streams.Out, model, p); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "manifest file, - for stdin (repeatable); without it, read the live cluster")
	cmd.Flags().BoolVar(&compiled, "compiled", false, "also print the lookup tables the dataplane compiles the rules into")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig for the live cluster (default: $KUBECONFIG, ~/.kube/config)")
	cmd.Flags().StringVar(&kubeContext, "context", "", "kubeconfig context for the live cluster")
	return cmd
}

func writeCompiled(w io.Writer, m *simulate.Model, pod probe.Pod) error {
	ep := m.Endpoint(pod)
	if ep == nil {
		return nil
	}
	for _, dir := range []policy.Dir{policy.Ingress, policy.Egress} {
		d := ep.Of(dir)
		if !d.Isolated {
			continue
		}
		c, err := compile.Compile(d)
		if err != nil {
			return fmt.Errorf("%s of %s: the dataplane cannot compile the rules (it enforces the direction closed): %w", dir, pod, err)
		}
		fmt.Fprintf(w, "%s, compiled:\n", dir)
		if err := node.WriteCompiled(w, c, func(id uint32) string { return explain.RuleName(m, id) }); err != nil {
			return err
		}
	}
	return nil
}
