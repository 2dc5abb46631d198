#!/usr/bin/env bash
# The performance suite. `hack/bench.sh full` (make bench) measures the
# whole matrix; `hack/bench.sh short` (make bench-short, CI) a subset in
# under 5 minutes. Both write bench/results/ and fail only when a same-run
# ratio regresses beyond the tolerance of bench/baseline.json; a missed
# target is reported, not failed. Extra arguments go to palisade-bench, e.g.
# `hack/bench.sh short -update-baseline` or `-parts Traffic`. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-short}
shift || true
case "$mode" in
full | short) ;;
*)
	echo "usage: hack/bench.sh full|short [palisade-bench flags]" >&2
	exit 2
	;;
esac
if [ "$(id -u)" != 0 ]; then
	echo "make bench needs root (BPF programs, network namespaces)" >&2
	exit 1
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
command -v iperf3 >/dev/null || {
	echo "iperf3 is missing (apt-get install iperf3, or make deps)" >&2
	exit 1
}

mkdir -p bin
go build -o bin/palisade-bench ./bench/cmd/palisade-bench
run() { bin/palisade-bench -mode "$mode" -out bench/results -baseline bench/baseline.json "$@"; }
# A regression must show in two runs: one run on a shared machine can be
# disturbed by anything else it does.
if ! run "$@"; then
	echo "== a ratio regressed: measuring again to confirm" >&2
	run "$@"
fi
