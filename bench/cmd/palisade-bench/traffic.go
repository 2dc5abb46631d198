package main

import (
	"errors"
	"time"

	"github.com/palisade-net/palisade/bench/result"
	"github.com/palisade-net/palisade/bench/traffic"
	"github.com/palisade-net/palisade/dataplane"
)

// trafficRules is the size of the "realistic policy" of issue #5.
const trafficRules = 100

func runTraffic(mode string, r *result.Run) (err error) {
	// Many short rounds: on a loaded machine the median of many paired
	// ratios moves less than a few long ones.
	cfg := traffic.Config{Rounds: 7, ThroughputTime: time.Second, Exchanges: 3000, MessageBytes: 64}
	if mode == "full" {
		cfg.Rounds, cfg.ThroughputTime, cfg.Exchanges = 15, 2*time.Second, 10000
	}
	pods, err := traffic.NewPods("pbtr")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pods.Close()) }()
	d, err := dataplane.Open(dataplane.Config{PinPath: pinPath("traffic"), ConntrackSize: 65536})
	if err != nil {
		return err
	}
	outcome, err := traffic.Measure(pods, cfg, traffic.PalisadeAttach(d, trafficRules))
	err = errors.Join(err, d.Purge())
	if err != nil {
		return err
	}
	for _, m := range traffic.Measurements(outcome, cfg, trafficRules) {
		if err := r.Add(m); err != nil {
			return err
		}
	}
	return nil
}
