#!/usr/bin/env bash
# Installs the Debian packages the tests and `make generate` need and mounts
# bpffs. Idempotent, and silent when everything is already there. Run as root.
set -euo pipefail

packages=(clang-19 llvm-19 libbpf-dev etcd-server iperf3 iproute2)

missing=()
for package in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$package")
	fi
done
if ((${#missing[@]} > 0)); then
	echo "deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! mountpoint -q /sys/fs/bpf; then
	mount -t bpf bpf /sys/fs/bpf
fi
