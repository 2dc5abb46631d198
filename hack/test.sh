#!/usr/bin/env bash
# The whole test suite: static checks, generated files in sync, then every
# package's tests (BPF, network namespaces, real kube-apiserver). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "make test needs root (BPF programs, network namespaces)" >&2
	exit 1
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

echo "== go vet, gofmt"
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "not gofmt-formatted:" >&2
	echo "$unformatted" >&2
	exit 1
fi

if command -v clang-19 >/dev/null; then
	echo "== generated files are in sync with their sources"
	make --no-print-directory generate >/dev/null
	if ! git diff --exit-code --stat -- dataplane api deploy/crd; then
		echo "generated files differ from a fresh 'make generate': regenerate and commit them" >&2
		exit 1
	fi
else
	echo "== clang-19 missing: skipping the generated-files check (hack/deps.sh installs it)"
fi

echo "== go test"
# -p 1: the privileged tests share the host network namespace and bpffs.
go test -count=1 -p 1 -timeout 25m ./... 2>&1 | tee /tmp/palisade-test.log
