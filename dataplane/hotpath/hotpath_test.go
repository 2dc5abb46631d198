package hotpath

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/palisade-net/palisade/dataplane"
)

func TestMeasuresEveryCase(t *testing.T) {
	if _, err := os.Stat("/sys/fs/bpf"); err != nil {
		t.Skip("no bpffs")
	}
	for _, s := range []Scenario{{Endpoints: 2, CIDRs: 10, PortRanges: 5}, {Endpoints: 1, CIDRs: 10, IPv6: true}} {
		s.PinPath = filepath.Join("/sys/fs/bpf", "palisade-hotpath-test")
		b, err := Setup(s)
		if err != nil {
			t.Fatalf("%+v: %v", s, err)
		}
		// Every endpoint's rules are a table of their own.
		occupancy, err := b.dp.Occupancy()
		if err != nil {
			t.Fatal(err)
		}
		if used := occupancy["cidr_rules"].Used; used < s.Endpoints*s.CIDRs {
			t.Errorf("%+v: %d CIDR entries for %d endpoints of %d CIDRs each", s, used, s.Endpoints, s.CIDRs)
		}
		for _, c := range []Case{Empty, Established, Denied, EmptySingle, FirstPacket, EstablishedFullPath, DeniedFullPath, LRUInsert, Floor, FirstPacketNewPeer} {
			d, err := b.Run(c, 1000)
			if err != nil || d <= 0 || d > time.Millisecond {
				t.Errorf("%+v %v: %v per packet, %v", s, c, d, err)
			}
		}
		for _, f := range []*dataplane.Floor{b.lruInsert, b.floor} {
			key, value := make([]byte, f.LRU.KeySize()), make([]byte, 24)
			inserted := 0
			for entries := f.LRU.Iterate(); entries.Next(&key, &value); {
				inserted++
			}
			if inserted != 1000 {
				t.Errorf("%+v: a floor program left %d entries after 1000 new flows", s, inserted)
			}
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(s.PinPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin path left behind: %v", err)
		}
	}
	if _, err := Setup(Scenario{}); err == nil {
		t.Error("Setup accepted a scenario without endpoints")
	}
}
