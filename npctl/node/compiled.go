package node

import (
	"fmt"
	"io"
	"strings"

	"github.com/palisade-net/palisade/dataplane/compile"
	"github.com/palisade-net/palisade/policy"
)

// WriteCompiled prints the tables the dataplane holds for one direction:
// each peer prefix (the longest one containing the peer decides) with what
// it allows, then each port set (the longest matching port prefix decides).
// ruleName names a rule ID.
func WriteCompiled(w io.Writer, d *compile.Direction, ruleName func(uint32) string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "  %d peer prefixes (longest match decides):\n", len(d.CIDRs))
	for _, e := range d.CIDRs {
		var allows []string
		if e.Portset >= 0 {
			allows = append(allows, fmt.Sprintf("port set %d", e.Portset))
		}
		if e.AnyProtocol {
			allows = append(allows, "everything else by "+ruleName(e.AnyRule))
		}
		if len(allows) == 0 {
			allows = append(allows, "nothing (an except)")
		}
		fmt.Fprintf(&b, "    %-20s %s\n", e.Prefix, strings.Join(allows, "; "))
	}
	for i, set := range d.Portsets {
		fmt.Fprintf(&b, "  port set %d (longest match decides):\n", i)
		for _, e := range set.Entries {
			fmt.Fprintf(&b, "    %-20s %s\n", portPrefix(e), ruleName(e.Rule))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// portPrefix writes a port entry as the range of ports it covers.
func portPrefix(e compile.PortEntry) string {
	proto := protocolName(e.Protocol)
	if e.Bits == 0 {
		return proto + "/all"
	}
	size := uint32(1) << (16 - e.Bits)
	first := uint32(e.Port) &^ (size - 1)
	if size == 1 {
		return fmt.Sprintf("%s/%d", proto, first)
	}
	return fmt.Sprintf("%s/%d-%d", proto, first, first+size-1)
}

func protocolName(p policy.Protocol) string {
	switch p {
	case policy.TCP:
		return "TCP"
	case policy.UDP:
		return "UDP"
	case policy.SCTP:
		return "SCTP"
	}
	return fmt.Sprintf("protocol-%d", p)
}
