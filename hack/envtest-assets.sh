#!/usr/bin/env bash
# Provide kube-apiserver, etcd, kubectl and helm for the real-control-plane tests.
#
# Order of preference (the envtest convention):
#   1. KUBEBUILDER_ASSETS, if set, names a folder that already holds the binaries
#      (what `setup-envtest use` gives users with internet access);
#      TEST_ASSET_KUBE_APISERVER / TEST_ASSET_ETCD / TEST_ASSET_KUBECTL / TEST_ASSET_HELM
#      override single binaries.
#   2. Otherwise build pinned versions from the Go module proxy into a versioned cache
#      folder outside the repository (ACNS_CACHE_DIR, default ~/.cache/acns-operator).
#
# Idempotent: a second run finds the binaries and does nothing. Progress goes to
# stderr; the last line on stdout is the assets folder, so that
#   export KUBEBUILDER_ASSETS=$(make -s envtest | tail -1)
# works.
set -euo pipefail

K8S_VERSION="${ACNS_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ACNS_ETCD_VERSION:-v3.5.35}"
HELM_VERSION="${ACNS_HELM_VERSION:-v3.19.0}"

log() { printf '[envtest-assets] %s\n' "$*" >&2; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for bin in kube-apiserver etcd; do
    if [[ ! -x "${KUBEBUILDER_ASSETS}/${bin}" ]]; then
      log "KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS} has no executable ${bin}"
      exit 1
    fi
  done
  log "using KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS}"
  echo "${KUBEBUILDER_ASSETS}"
  exit 0
fi

cache_root="${ACNS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/acns-operator}"
assets="${cache_root}/envtest/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-helm-${HELM_VERSION}"
mkdir -p "${assets}"

export GOMODCACHE="${cache_root}/go/mod"
export GOCACHE="${cache_root}/go/build"
export GOFLAGS="-mod=mod"
export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"

if ! command -v go >/dev/null 2>&1; then
  log "go is not on PATH: install Go >= 1.24 to build the control-plane binaries"
  exit 1
fi

# install_atomically SRC DEST: an interrupted build never leaves a half-written asset.
install_atomically() {
  mv -f "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"
}

build_kube_apiserver() {
  local dest="${assets}/kube-apiserver"
  [[ -x "${dest}" ]] && { log "kube-apiserver ${K8S_VERSION}: cached"; return; }
  log "kube-apiserver ${K8S_VERSION}: building from the Go module proxy (cold: ~15-20 min on 2 cores)"
  local work; work="$(mktemp -d)"
  trap 'rm -rf "${work}"' RETURN
  # k8s.io/kubernetes requires its staging modules at v0.0.0 with local replaces;
  # a wrapper module replaces each with its published tag v0.X.Y (kubernetes#79384).
  local minor="${K8S_VERSION#v1.}"; local staging_tag="v0.${minor}"
  (cd "${work}" && go mod init acns.local/envtest >/dev/null 2>&1)
  go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" > "${work}/k8s.json"
  local gomod; gomod="$(sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p' "${work}/k8s.json")"
  local staging
  staging="$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "${gomod}")"
  {
    echo "module acns.local/envtest"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "replace ("
    for m in ${staging}; do echo "	${m} => ${m} ${staging_tag}"; done
    echo ")"
  } > "${work}/go.mod"
  cat > "${work}/tools.go" <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
  (cd "${work}" && go mod tidy -e >/dev/null 2>&1 || true)
  local ver="k8s.io/component-base/version"
  local major=1 minor_num="${minor%%.*}"
  (cd "${work}" && go build -o "${work}/kube-apiserver" \
      -ldflags "-s -w -X ${ver}.gitVersion=${K8S_VERSION} -X ${ver}.gitMajor=${major} -X ${ver}.gitMinor=${minor_num} -X ${ver}.gitTreeState=clean" \
      k8s.io/kubernetes/cmd/kube-apiserver)
  install_atomically "${work}/kube-apiserver" "${dest}"
  log "kube-apiserver ${K8S_VERSION}: built"
}

build_etcd() {
  local dest="${assets}/etcd"
  [[ -x "${dest}" ]] && { log "etcd ${ETCD_VERSION}: cached"; return; }
  log "etcd ${ETCD_VERSION}: building from the Go module proxy"
  local work; work="$(mktemp -d)"
  trap 'rm -rf "${work}"' RETURN
  cat > "${work}/go.mod" <<MOD
module acns.local/etcd

go 1.24

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
MOD
  cat > "${work}/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "${work}" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "${work}" && go build -o "${work}/etcd" -ldflags "-s -w" go.etcd.io/etcd/server/v3)
  install_atomically "${work}/etcd" "${dest}"
  log "etcd ${ETCD_VERSION}: built"
}

build_helm() {
  local dest="${assets}/helm"
  if [[ -n "${TEST_ASSET_HELM:-}" ]]; then ln -sf "${TEST_ASSET_HELM}" "${dest}"; return; fi
  [[ -x "${dest}" ]] && { log "helm ${HELM_VERSION}: cached"; return; }
  log "helm ${HELM_VERSION}: building from the Go module proxy"
  local gobin; gobin="$(mktemp -d)"
  GOBIN="${gobin}" go install -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  install_atomically "${gobin}/helm" "${dest}"
  rm -rf "${gobin}"
  log "helm ${HELM_VERSION}: built"
}

link_kubectl() {
  local dest="${assets}/kubectl" src="${TEST_ASSET_KUBECTL:-}"
  [[ -z "${src}" ]] && src="$(command -v kubectl || true)"
  if [[ -z "${src}" ]]; then
    log "kubectl ${K8S_VERSION}: building from the Go module proxy"
    local gobin; gobin="$(mktemp -d)"
    GOBIN="${gobin}" go install -ldflags "-s -w" "k8s.io/kubectl@v0.${K8S_VERSION#v1.}" 2>/dev/null || {
      log "could not build kubectl; install kubectl >= 1.31 and re-run"; exit 1; }
    install_atomically "${gobin}/kubectl" "${dest}"
    return
  fi
  ln -sf "${src}" "${dest}"
}

if [[ -n "${TEST_ASSET_KUBE_APISERVER:-}" ]]; then ln -sf "${TEST_ASSET_KUBE_APISERVER}" "${assets}/kube-apiserver"; else build_kube_apiserver; fi
if [[ -n "${TEST_ASSET_ETCD:-}" ]]; then ln -sf "${TEST_ASSET_ETCD}" "${assets}/etcd"; else build_etcd; fi
build_helm
link_kubectl
log "assets ready"
echo "${assets}"
