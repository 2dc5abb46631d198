package node

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/palisade-net/palisade/dataplane/compile"
	"github.com/palisade-net/palisade/policy"
)

func TestWriteCompiledShowsPortRangesAndExcepts(t *testing.T) {
	d := &policy.Direction{Isolated: true, Rules: []policy.Rule{
		{ID: 1, CIDR: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
			Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 8080, EndPort: 8083}, {Protocol: policy.UDP}}},
		{ID: 2, CIDR: netip.MustParsePrefix("10.2.0.0/16")},
	}}
	c, err := compile.Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := WriteCompiled(&b, c, func(id uint32) string { return map[uint32]string{1: "one", 2: "two"}[id] }); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"10.0.0.0/8           port set 0\n",
		"10.1.0.0/16          nothing (an except)\n",
		"10.2.0.0/16          port set 0; everything else by two\n",
		"TCP/8080-8083        one\n",
		"UDP/all              one\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestPortPrefix(t *testing.T) {
	for e, want := range map[compile.PortEntry]string{
		{Protocol: policy.TCP, Port: 80, Bits: 16}:    "TCP/80",
		{Protocol: policy.UDP, Port: 1024, Bits: 6}:   "UDP/1024-2047",
		{Protocol: policy.UDP, Port: 5, Bits: 6}:      "UDP/0-1023",
		{Protocol: policy.SCTP, Port: 8082, Bits: 14}: "SCTP/8080-8083",
		{Protocol: policy.TCP, Bits: 0}:               "TCP/all",
	} {
		if got := portPrefix(e); got != want {
			t.Errorf("portPrefix(%+v) = %s, want %s", e, got, want)
		}
	}
}
