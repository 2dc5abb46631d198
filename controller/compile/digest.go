package compile

import (
	"encoding/binary"
	"strconv"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

// digest is a deterministic 64-bit fingerprint of compiled content, used
// for chunk revisions (stable across restarts, so a restarted controller
// rewrites nothing). It mixes 8 bytes at a time; strings are
// length-prefixed so that different contents cannot encode alike.
type digest uint64

const (
	digestSeed  digest = 14695981039346656037
	digestPrime digest = 0x9E3779B97F4A7C15
)

func newDigest() *digest { d := digestSeed; return &d }

func (d *digest) u64(v uint64) {
	h := (*d ^ digest(v)) * digestPrime
	*d = h ^ (h >> 31)
}

func (d *digest) str(s string) {
	d.u64(uint64(len(s)))
	for len(s) >= 8 {
		d.u64(binary.LittleEndian.Uint64([]byte(s[:8])))
		s = s[8:]
	}
	var tail uint64
	for i := 0; i < len(s); i++ {
		tail |= uint64(s[i]) << (8 * i)
	}
	d.u64(tail)
}

func (d *digest) sum() uint64 { return uint64(*d) }

func (d *digest) hex() string { return strconv.FormatUint(uint64(*d), 16) }

func entriesDigest(entries []v1alpha1.EndpointInfo) uint64 {
	d := newDigest()
	d.u64(uint64(len(entries)))
	for _, e := range entries {
		d.str(string(e.CIDR))
		d.u64(uint64(len(e.Except)))
		for _, x := range e.Except {
			d.str(string(x))
		}
		if e.Ports == nil {
			d.u64(1 << 40)
			continue
		}
		d.u64(uint64(len(e.Ports)))
		for _, p := range e.Ports {
			d.str(string(*p.Protocol))
			d.u64(uint64(ptrOr(p.Port))<<20 | uint64(ptrOr(p.EndPort)))
		}
	}
	return d.sum()
}
