#!/usr/bin/env bash
# Builds the envtest assets (kube-apiserver from tools/apiserver, etcd from
# Debian's etcd-server) into $KUBEBUILDER_ASSETS, outside the clone.
# The build is keyed by the Kubernetes version and the tools/apiserver module
# files, so it runs once and again only when they change.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${PALISADE_CACHE:-$HOME/.cache/palisade}"
assets="${KUBEBUILDER_ASSETS:-$cache/assets}"
module="$root/tools/apiserver"

k8s_version="$(cd "$module" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
module_hash="$(cat "$module/go.mod" "$module/go.sum" | sha256sum | cut -c1-12)"
build_dir="$cache/apiserver/$k8s_version-$module_hash"
apiserver="$build_dir/kube-apiserver"

mkdir -p "$assets"

if [[ ! -x "$apiserver" ]]; then
	echo "testenv: building kube-apiserver $k8s_version (first time: several minutes)" >&2
	mkdir -p "$build_dir"
	minor="${k8s_version#v1.}"
	minor="${minor%%.*}"
	pkg=k8s.io/component-base/version
	ldflags="-s -w -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	(cd "$module" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
		-o "$apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
	mv "$apiserver.tmp" "$apiserver"
	# Superseded builds are about 100 MB each.
	find "$cache/apiserver" -mindepth 1 -maxdepth 1 -type d ! -path "$build_dir" -exec rm -rf {} +
fi
ln -sfn "$apiserver" "$assets/kube-apiserver"

if ! command -v etcd >/dev/null 2>&1; then
	echo "testenv: installing etcd-server" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
ln -sfn "$(command -v etcd)" "$assets/etcd"

"$assets/kube-apiserver" --version >/dev/null
"$assets/etcd" --version >/dev/null
