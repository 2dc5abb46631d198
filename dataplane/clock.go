package dataplane

import (
	"fmt"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// The programs stamp flows with bpf_jiffies64(), much cheaper than the
// nanosecond clocks. Go reads jiffies with two tiny test-run programs (low
// and high 32 bits) and measures HZ once per process.

type jiffyClock struct {
	low, high *ebpf.Program
	hz        uint64
}

var (
	clockOnce sync.Once
	clock     *jiffyClock
	clockErr  error
)

func sharedClock() (*jiffyClock, error) {
	clockOnce.Do(func() { clock, clockErr = newJiffyClock() })
	return clock, clockErr
}

func jiffiesProgram(shift bool) (*ebpf.Program, error) {
	insns := asm.Instructions{asm.FnJiffies64.Call()}
	if shift {
		insns = append(insns, asm.RSh.Imm(asm.R0, 32))
	}
	insns = append(insns, asm.Return())
	return ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, Instructions: insns, License: "Dual BSD/GPL"})
}

func newJiffyClock() (*jiffyClock, error) {
	low, err := jiffiesProgram(false)
	if err != nil {
		return nil, fmt.Errorf("load jiffies program: %w", err)
	}
	high, err := jiffiesProgram(true)
	if err != nil {
		low.Close()
		return nil, fmt.Errorf("load jiffies program: %w", err)
	}
	c := &jiffyClock{low: low, high: high}
	j0, err := c.now()
	if err != nil {
		return nil, err
	}
	t0 := monotonicNow()
	time.Sleep(100 * time.Millisecond)
	j1, err := c.now()
	if err != nil {
		return nil, err
	}
	measured := float64(j1-j0) / (monotonicNow() - t0).Seconds()
	for _, hz := range []uint64{100, 250, 300, 1000} {
		if measured > 0.8*float64(hz) && measured < 1.2*float64(hz) {
			c.hz = hz
			return c, nil
		}
	}
	return nil, fmt.Errorf("kernel HZ: measured %.0f jiffies per second, not one of 100, 250, 300, 1000", measured)
}

var minimalFrame = make([]byte, 14)

func (c *jiffyClock) now() (uint64, error) {
	for range 3 {
		hi1, _, err := c.high.Benchmark(minimalFrame, 1, nil)
		if err != nil {
			return 0, fmt.Errorf("read jiffies: %w", err)
		}
		lo, _, err := c.low.Benchmark(minimalFrame, 1, nil)
		if err != nil {
			return 0, fmt.Errorf("read jiffies: %w", err)
		}
		hi2, _, err := c.high.Benchmark(minimalFrame, 1, nil)
		if err != nil {
			return 0, fmt.Errorf("read jiffies: %w", err)
		}
		if hi1 == hi2 {
			return uint64(hi1)<<32 | uint64(lo), nil
		}
	}
	return 0, fmt.Errorf("read jiffies: high word kept changing")
}

// ticks converts d to jiffies, rounding up.
func (c *jiffyClock) ticks(d time.Duration) uint64 {
	return (uint64(d)*c.hz + uint64(time.Second) - 1) / uint64(time.Second)
}
