package cli

import (
	"context"
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"

	"github.com/palisade-net/palisade/agent/policyset"
	"github.com/palisade-net/palisade/npctl/bpfengine"
	"github.com/palisade-net/palisade/npctl/manifest"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/report"
	"github.com/palisade-net/palisade/npctl/simulate"
)

type probeFlags struct {
	from, to, ports, protocols []string
	family                     int
}

func (f *probeFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&f.from, "from", nil, "source pods: namespace/name or namespace (repeatable; default all)")
	cmd.Flags().StringSliceVar(&f.to, "to", nil, "destination pods: namespace/name or namespace (repeatable; default all)")
	cmd.Flags().StringSliceVar(&f.ports, "port", nil, "probe these ports on every pair, e.g. 80, 53/UDP (default: the destination's container ports)")
	cmd.Flags().StringSliceVar(&f.protocols, "protocol", nil, "keep only these protocols: TCP, UDP, SCTP")
	cmd.Flags().IntVar(&f.family, "family", 0, "IP family to probe, 4 or 6 (default: the first the two pods share)")
}

func (f *probeFlags) options() (probe.Options, error) {
	opts := probe.Options{From: f.from, To: f.to, Family: f.family}
	for _, s := range f.ports {
		p, err := probe.ParsePort(s)
		if err != nil {
			return opts, fmt.Errorf("--port: %w", err)
		}
		opts.Ports = append(opts.Ports, p)
	}
	for _, s := range f.protocols {
		p, err := probe.ParseProtocol(s)
		if err != nil {
			return opts, fmt.Errorf("--protocol: %w", err)
		}
		opts.Protocols = append(opts.Protocols, p)
	}
	return opts, nil
}

func newSimulate(streams IO) *cobra.Command {
	var files []string
	var output, engineName string
	var toServices bool
	var pf probeFlags
	cmd := &cobra.Command{
		Use:   "simulate -f MANIFEST [-f MANIFEST...]",
		Short: "Print the connectivity matrix of manifests, offline",
		Long: `simulate reads Namespaces, Pods (with labels, status.podIP and container
ports), Services, EndpointSlices and NetworkPolicies, compiles the policies
with the Palisade controller's compiler, assembles each pod's policy as the
node agent does, and judges the first packet of every probe with the eBPF
programs (BPF_PROG_TEST_RUN, as root) or the reference evaluator.

A probe from A to B on port P is allowed iff A's egress and B's ingress
both allow it. By default every pod probes every other pod on each
container port the destination declares.`,
		Example: `  npctl simulate -f cluster.yaml -f policies.yaml
  cat *.yaml | npctl simulate -f - -o json
  npctl simulate -f all.yaml --from x --to y/b --port 80 --port 53/UDP`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "matrix" && output != "json" {
				return fmt.Errorf("--output %q: want matrix or json", output)
			}
			opts, err := pf.options()
			if err != nil {
				return err
			}
			model, err := loadModel(files, streams)
			if err != nil {
				return err
			}
			if toServices {
				return simulateServices(cmd, model, opts, engineName, output, streams)
			}
			probes, err := probe.Plan(model.Objects, opts)
			if err != nil {
				return err
			}
			outcomes, err := judgeAll(cmd.Context(), engineName, streams.Err, probes, model.Judge)
			if err != nil {
				return err
			}
			if output == "json" {
				return report.JSON(streams.Out, outcomes)
			}
			return report.Matrix(streams.Out, outcomes)
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "manifest file, - for stdin (repeatable)")
	cmd.Flags().StringVarP(&output, "output", "o", "matrix", "matrix or json")
	cmd.Flags().StringVar(&engineName, "engine", EngineAuto, "auto (eBPF as root, else reference), bpf or reference")
	cmd.Flags().BoolVar(&toServices, "to-service", false, "probe Services' ClusterIPs (through each ready backend) instead of pods; --to then selects Services")
	pf.register(cmd)
	return cmd
}

// judgeAll opens the engine, judges every probe with judge and closes it.
func judgeAll[P, O any](ctx context.Context, engineName string, warnings io.Writer, probes []P, judge func(simulate.Engine, P) (O, error)) ([]O, error) {
	engine, err := openEngine(engineName, warnings)
	if err != nil {
		return nil, err
	}
	defer closeEngine(engine, warnings)
	outcomes := make([]O, 0, len(probes))
	for _, p := range probes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		o, err := judge(engine, p)
		if err != nil {
			return nil, err
		}
		outcomes = append(outcomes, o)
	}
	return outcomes, nil
}

func closeEngine(engine simulate.Engine, w io.Writer) {
	if err := engine.Close(); err != nil {
		fmt.Fprintf(w, "warning: cleaning up the eBPF engine: %v\n", err)
	}
}

func simulateServices(cmd *cobra.Command, model *simulate.Model, opts probe.Options, engineName, output string, streams IO) error {
	probes, err := model.PlanServices(opts)
	if err != nil {
		return err
	}
	outcomes, err := judgeAll(cmd.Context(), engineName, streams.Err, probes, model.JudgeService)
	if err != nil {
		return err
	}
	if output == "json" {
		return report.ServiceJSON(streams.Out, outcomes)
	}
	return report.ServiceMatrix(streams.Out, outcomes)
}

// loadModel reads the manifests and compiles them, warning on stderr
// about what the controller would report.
func loadModel(files []string, streams IO) (*simulate.Model, error) {
	objs, err := manifest.LoadFiles(files, streams.In)
	if err != nil {
		return nil, err
	}
	model, err := simulate.Build(objs)
	if err != nil {
		return nil, err
	}
	warn(streams.Err, model)
	return model, nil
}

func warn(w io.Writer, m *simulate.Model) {
	for _, p := range m.Problems {
		where := ""
		if src := m.Objects.SourceOf("NetworkPolicy", p.Policy.Namespace, p.Policy.Name); src != "" {
			where = src + ": "
		}
		fmt.Fprintf(w, "warning: %sNetworkPolicy %s: %s: %s\n", where, p.Policy, p.Reason, p.Message)
	}
	keys := make([]policyset.SetKey, 0, len(m.Policy.Errors))
	for k := range m.Policy.Errors {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, k := range keys {
		fmt.Fprintf(w, "warning: policy %s enforced closed: %v\n", k.Policy, m.Policy.Errors[k])
	}
}

// Engine names for --engine.
const (
	EngineAuto      = "auto"
	EngineBPF       = "bpf"
	EngineReference = "reference"
)

// openEngine returns the engine asked for and says on w which one judges.
func openEngine(name string, w io.Writer) (simulate.Engine, error) {
	var engine simulate.Engine
	switch name {
	case EngineReference:
		engine = simulate.Reference{}
	case EngineBPF, EngineAuto:
		bpf, err := bpfengine.Open()
		if err == nil {
			engine = bpf
			break
		}
		if name == EngineBPF {
			return nil, fmt.Errorf("--engine bpf: %w", err)
		}
		fmt.Fprintf(w, "eBPF engine unavailable (%v)\n", err)
		engine = simulate.Reference{}
	default:
		return nil, fmt.Errorf("--engine %q: want auto, bpf or reference", name)
	}
	fmt.Fprintf(w, "verdicts by: %s\n", engine.Name())
	return engine, nil
}
