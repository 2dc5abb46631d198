// Command npctl simulates, explains and inspects Palisade NetworkPolicy
// enforcement. Installed as kubectl-npctl it is a kubectl plugin.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/palisade-net/palisade/npctl/cli"
)

func main() {
	// On a signal, commands stop and clean up (the eBPF engine's pinned
	// objects and namespace) before exiting.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.RunContext(ctx, os.Args[0], os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	stop()
	os.Exit(code)
}
