package dataplane

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/palisade-net/palisade/policy"
)

const bpffs = "/sys/fs/bpf"

func ensureBPFFS(t testing.TB) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(bpffs, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return
	}
	if err := unix.Mount("bpf", bpffs, "bpf", 0, ""); err != nil {
		t.Skipf("no bpffs at %s and cannot mount it: %v", bpffs, err)
	}
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// newDataplane opens a dataplane pinned in a directory of its own and
// purges it when the test ends.
func newDataplane(t testing.TB, cfg Config) *Dataplane {
	t.Helper()
	ensureBPFFS(t)
	if cfg.PinPath == "" {
		cfg.PinPath = filepath.Join(bpffs, randomName("palisade-test-"))
	}
	if cfg.ConntrackSize == 0 {
		cfg.ConntrackSize = 65536
	}
	if cfg.RuleCapacity == 0 {
		cfg.RuleCapacity = 1 << 18
	}
	d, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Purge(); err != nil {
			t.Errorf("Purge: %v", err)
		}
		if _, err := os.Stat(cfg.PinPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin path %s left behind", cfg.PinPath)
		}
	})
	return d
}

// flushNow frees everything retired, as the freeing goroutine would, under
// d's lock (that goroutine runs meanwhile).
func flushNow(t testing.TB, d *Dataplane) {
	t.Helper()
	d.mu.Lock()
	err := d.flush()
	d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
}

// reopen closes d and opens its pinned maps again, as a restarted agent
// does; newDataplane's cleanup purges them.
func reopen(t *testing.T, d *Dataplane) *Dataplane {
	t.Helper()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	reopened, err := Open(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reopened.Close() })
	return reopened
}

// dummyLink creates a veth pair, deleted when the test ends, and returns
// the ifindex of one end.
func dummyLink(t testing.TB) int {
	t.Helper()
	name := randomName("pt")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("find dummy link: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(l) })
	return l.Attrs().Index
}

// skbContext is struct __sk_buff up to ifindex, the only field set.
type skbContext [11]uint32

// runFrame runs the program of dir on frame as if it went through the veth
// ifindex and reports whether it passed.
func runFrame(t testing.TB, d *Dataplane, dir policy.Dir, ifindex int, frame []byte) bool {
	t.Helper()
	allowed, err := runFrameErr(d, dir, ifindex, frame)
	if err != nil {
		t.Fatalf("run %v program: %v", dir, err)
	}
	return allowed
}

func runFrameErr(d *Dataplane, dir policy.Dir, ifindex int, frame []byte) (bool, error) {
	prog := d.objs.TcPodIngress
	if dir == policy.Egress {
		prog = d.objs.TcPodEgress
	}
	var ctx skbContext
	ctx[10] = uint32(ifindex)
	ret, err := prog.Run(&ebpf.RunOptions{Data: frame, Context: ctx[:]})
	if err != nil {
		return false, err
	}
	switch int32(ret) {
	case -1:
		return true, nil
	case 2:
		return false, nil
	}
	return false, errors.New("unexpected return code")
}

// verdictStep is a frame sent in one direction and the verdict it must get.
type verdictStep struct {
	name  string
	dir   policy.Dir
	frame []byte
	want  bool
}

// runSteps sends the steps in order through ifindex's programs and reports
// every wrong verdict, its name after prefix.
func runSteps(t *testing.T, d *Dataplane, ifindex int, prefix string, steps []verdictStep) {
	t.Helper()
	for _, s := range steps {
		if got := runFrame(t, d, s.dir, ifindex, s.frame); got != s.want {
			t.Errorf("%s%s: allowed=%v, want %v", prefix, s.name, got, s.want)
		}
	}
}
