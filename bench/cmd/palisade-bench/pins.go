package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

const pinDirectory = "/sys/fs/bpf"

// stalePin matches the pin directories pinPath makes, and only those:
// other tools' directories under bpffs are never touched.
var stalePin = regexp.MustCompile(`^palisade-bench-(?:hotpath[0-9]+|traffic|agent|agent-child)-([0-9]+)$`)

// pinPath is where one part of this process pins its dataplane: the
// process id at the end lets a later run tell a dead run's pins.
func pinPath(part string) string {
	return filepath.Join(pinDirectory, fmt.Sprintf("palisade-bench-%s-%d", part, os.Getpid()))
}

// sweepStalePins removes the pin directories of runs that died before
// purging. Their links were on veths that are gone or about to be swept,
// so unpinning detaches nothing that still carries traffic.
func sweepStalePins() error {
	entries, err := os.ReadDir(pinDirectory)
	if err != nil {
		return fmt.Errorf("list %s: %w", pinDirectory, err)
	}
	var errs []error
	for _, entry := range entries {
		name := entry.Name()
		match := stalePin.FindStringSubmatch(name)
		if match == nil {
			continue
		}
		pid, err := strconv.Atoi(match[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
			continue // a run still going
		}
		if err := os.RemoveAll(filepath.Join(pinDirectory, name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
