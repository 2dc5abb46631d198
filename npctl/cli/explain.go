package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/palisade-net/palisade/npctl/explain"
	"github.com/palisade-net/palisade/npctl/live"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
)

func newExplain(streams IO) *cobra.Command {
	var files []string
	var from, to, port, kubeconfig, kubeContext string
	var family int
	cmd := &cobra.Command{
		Use:   "explain --from NS/POD --to NS/POD --port PORT[/PROTOCOL] [-f MANIFEST...]",
		Short: "Say why one connection is allowed or denied, and which policies and rules decided",
		Long: `explain judges the first packet from one pod to another on one port with
the reference evaluator, and says in words, for the source's egress and
the destination's ingress, which policies isolate the pod and which rule
admits the packet, or why each rule does not.

With -f it works offline from manifests, compiling them as simulate does.
Without -f it reads the cluster of the current kubeconfig context: the
pods, namespaces and NetworkPolicies, and the PolicyEndpoints the Palisade
controller wrote (what the agents enforce).`,
		Example: `  npctl explain -f cluster.yaml --from x/a --to y/b --port 80
  kubectl npctl explain --from x/a --to y/b --port 53/UDP`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" || port == "" {
				return errors.New("--from, --to and --port are required")
			}
			src, err := probe.ParsePod(from)
			if err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			dst, err := probe.ParsePod(to)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			p, err := probe.ParsePort(port)
			if err != nil {
				return fmt.Errorf("--port: %w", err)
			}
			opts := probe.Options{From: []string{src.String()}, To: []string{dst.String()}, Ports: []probe.Port{p}, Family: family}
			model, err := offlineOrLive(cmd, files, kubeconfig, kubeContext, streams)
			if err != nil {
				return err
			}
			probes, err := probe.Plan(model.Objects, opts)
			if err != nil {
				return err
			}
			if len(probes) != 1 {
				return fmt.Errorf("cannot probe %s -> %s: the same pod, or no IP family in common", src, dst)
			}
			outcome, err := model.Judge(simulate.Reference{}, probes[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(streams.Out, explain.Outcome(model, outcome))
			return err
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "manifest file, - for stdin (repeatable); without it, read the live cluster")
	cmd.Flags().StringVar(&from, "from", "", "source pod, namespace/name")
	cmd.Flags().StringVar(&to, "to", "", "destination pod, namespace/name")
	cmd.Flags().StringVar(&port, "port", "", "destination port, e.g. 80 or 53/UDP")
	cmd.Flags().IntVar(&family, "family", 0, "IP family, 4 or 6 (default: the first the two pods share)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig for the live cluster (default: $KUBECONFIG, ~/.kube/config)")
	cmd.Flags().StringVar(&kubeContext, "context", "", "kubeconfig context for the live cluster")
	return cmd
}

// offlineOrLive models the manifests, or the live cluster when there are none.
func offlineOrLive(cmd *cobra.Command, files []string, kubeconfig, kubeContext string, streams IO) (*simulate.Model, error) {
	if len(files) > 0 {
		return loadModel(files, streams)
	}
	return liveModel(cmd.Context(), kubeconfig, kubeContext, streams)
}

// liveModel reads the cluster and models what its agents enforce.
func liveModel(ctx context.Context, kubeconfig, kubeContext string, streams IO) (*simulate.Model, error) {
	c, err := live.NewClient(kubeconfig, kubeContext)
	if err != nil {
		return nil, err
	}
	objs, pes, err := live.Read(ctx, c)
	if err != nil {
		return nil, err
	}
	model, err := simulate.Assemble(objs, pes, nil)
	if err != nil {
		return nil, err
	}
	warn(streams.Err, model)
	for _, w := range model.Waiting {
		fmt.Fprintf(streams.Err, "warning: %s\n", w)
	}
	return model, nil
}
