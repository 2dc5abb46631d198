package main

import (
	"fmt"

	"github.com/palisade-net/palisade/bench/hotpath"
	"github.com/palisade-net/palisade/bench/result"
)

// hotPathConfig: the core programs every endpoint with the measured
// policy and a peer of its own, each in a table of its own, so 250
// endpoints go up to 1,000 CIDRs (250 x 50,000 would be 12.5 million map
// entries).
func hotPathConfig(mode string) hotpath.Config {
	cfg := hotpath.Config{Families: []int{4, 6}, PinPath: func(i int) string { return pinPath(fmt.Sprintf("hotpath%d", i)) }}
	if mode == "full" {
		cfg.Sizes = []hotpath.Size{
			{CIDRs: 1, Endpoints: 1}, {CIDRs: 1000, Endpoints: 1}, {CIDRs: 50000, Endpoints: 1},
			{CIDRs: 1, PortRanges: 1000, Endpoints: 1},
			{CIDRs: 1, Endpoints: 250}, {CIDRs: 1000, Endpoints: 250},
			{CIDRs: 1, PortRanges: 1000, Endpoints: 250},
		}
		cfg.Repeat, cfg.Rounds, cfg.Flows, cfg.Passes = 100000, 3, 1000, 3
		return cfg
	}
	cfg.Sizes = []hotpath.Size{{CIDRs: 1, Endpoints: 1}, {CIDRs: 50000, Endpoints: 1}, {CIDRs: 1000, Endpoints: 250}}
	cfg.Repeat, cfg.Rounds, cfg.Flows, cfg.Passes = 20000, 2, 300, 2
	return cfg
}

func runHotPath(mode string, r *result.Run) error {
	ms, err := hotpath.Measure(hotPathConfig(mode))
	if err != nil {
		return err
	}
	for _, m := range ms {
		if err := r.Add(m); err != nil {
			return err
		}
	}
	return nil
}
