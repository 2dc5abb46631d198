// Package cli holds the npctl commands. It is the whole program but for
// main, so tests run commands in-process.
package cli

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// IO are the streams a command uses.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
}

// NewRoot returns the npctl command. program is how it was invoked
// (os.Args[0]): installed as kubectl-npctl it presents itself as
// "kubectl npctl".
func NewRoot(program string, streams IO) *cobra.Command {
	root := &cobra.Command{
		Use:   "npctl",
		Short: "Simulate, explain and inspect Palisade NetworkPolicy enforcement",
		Long: `npctl works with Palisade, the eBPF NetworkPolicy dataplane.

  simulate  connectivity matrix of manifests, before they are applied
  explain   why one connection is allowed or denied, from manifests or a live cluster
  node      endpoints, revisions, counters and compiled rules programmed on this node

Installed on the PATH as kubectl-npctl, it also runs as "kubectl npctl".`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	if strings.HasPrefix(filepath.Base(program), "kubectl-") {
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl npctl"}
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.Err)
	root.AddCommand(newSimulate(streams), newExplain(streams), newRules(streams), newNode(streams))
	return root
}

// Run executes the command line args and returns the process exit code,
// printing any error to streams.Err.
func Run(program string, args []string, streams IO) int {
	return RunContext(context.Background(), program, args, streams)
}

// RunContext is Run stopping early, cleanly, when ctx is done.
func RunContext(ctx context.Context, program string, args []string, streams IO) int {
	root := NewRoot(program, streams)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(streams.Err, "error: %v\n", err)
		return 1
	}
	return 0
}
