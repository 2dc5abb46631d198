#!/usr/bin/env bash
# The local demo (`make demo`, which first runs `make testenv` and `make
# build`): a kube-apiserver and etcd on this machine, the Palisade
# controller and agent, pods as network namespaces, the example policies of
# deploy/examples applied and the connectivity matrix printed before and
# after. bin/palisade-demo does the work and removes everything it made,
# also on Ctrl-C or failure. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "make demo needs root (network namespaces, BPF programs)" >&2
	exit 1
fi
for bin in controller agent palisade-demo; do
	if [ ! -x "bin/$bin" ]; then
		echo "bin/$bin is missing: run 'make build' (make demo does)" >&2
		exit 1
	fi
done
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

# exec: the demo receives Ctrl-C itself and cleans up before exiting.
exec bin/palisade-demo --bin-dir bin --examples deploy/examples "$@"
