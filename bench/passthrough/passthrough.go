// Package passthrough makes the empty TC program every dataplane cost is
// measured against: it returns TC_ACT_OK for every packet and reads
// nothing.
package passthrough

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// New loads the pass-through program. The caller closes it.
func New() (*ebpf.Program, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "passthrough",
		Type: ebpf.SchedCLS,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0), // TC_ACT_OK, also TCX_PASS
			asm.Return(),
		},
		License: "Apache-2.0",
	})
	if err != nil {
		return nil, fmt.Errorf("passthrough: load: %w", err)
	}
	return prog, nil
}

// AttachBothWays attaches prog to ifindex on TCX ingress and egress and
// returns a function that detaches both.
func AttachBothWays(prog *ebpf.Program, ifindex int) (detach func() error, err error) {
	var links []link.Link
	detach = func() error {
		var first error
		for _, l := range links {
			if err := l.Close(); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	for _, attach := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: attach})
		if err != nil {
			detach()
			return nil, fmt.Errorf("passthrough: attach %v to ifindex %d: %w", attach, ifindex, err)
		}
		links = append(links, l)
	}
	return detach, nil
}
