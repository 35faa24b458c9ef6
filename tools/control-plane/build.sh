#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and etcd from the pinned Go modules beside this
# script into a cache outside the checkout, keyed by a hash of the pins. Prints the directory
# that holds the binaries on its last line. A cold build takes several minutes on 2 cores; later
# calls with the same pins return at once.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v go >/dev/null 2>&1 || {
  echo "error: the Go toolchain is not on PATH; install Go 1.26+ and run $0 again" >&2
  exit 1
}

key=$(cat "$here"/kubernetes/go.mod "$here"/kubernetes/go.sum "$here"/etcd/go.mod "$here"/etcd/go.sum \
  | sha256sum | cut -c1-16)
cache_root=${BONNY_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bonny-rs/control-plane}
out="$cache_root/$key"

if [[ -x $out/kube-apiserver && -x $out/etcd && -x $out/kube-controller-manager ]]; then
  echo "control plane binaries are up to date" >&2
  echo "$out"
  exit 0
fi

mkdir -p "$out.partial"
export CGO_ENABLED=0 GOFLAGS=-trimpath
start=$(date +%s)
echo "building etcd (go.etcd.io/etcd/server/v3) into $out ..." >&2
(cd "$here/etcd" && go build -o "$out.partial/etcd" go.etcd.io/etcd/server/v3)
echo "  etcd done after $(($(date +%s) - start)) s" >&2
echo "building kube-apiserver (k8s.io/kubernetes); the first build takes several minutes on 2 cores ..." >&2
(cd "$here/kubernetes" && go build -o "$out.partial/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
echo "  kube-apiserver done after $(($(date +%s) - start)) s" >&2
echo "building kube-controller-manager ..." >&2
(cd "$here/kubernetes" && go build -o "$out.partial/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager)
echo "  kube-controller-manager done after $(($(date +%s) - start)) s" >&2

rm -rf "$out"
mv "$out.partial" "$out"
echo "control plane built in $(($(date +%s) - start)) s" >&2
echo "$out"
