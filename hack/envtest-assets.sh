#!/usr/bin/env bash
# Provide kube-apiserver, etcd, kubectl and helm for the real-control-plane tests.
#
# Order of preference, per binary (the envtest convention):
#   1. TEST_ASSET_KUBE_APISERVER / TEST_ASSET_ETCD / TEST_ASSET_KUBECTL / TEST_ASSET_HELM
#      name one binary each;
#   2. KUBEBUILDER_ASSETS, if set, names a folder that already holds the binaries (what
#      `setup-envtest use -p path` gives users with internet access). Nothing is built for
#      it, except helm when neither that folder nor PATH has one (setup-envtest ships none);
#      kubectl may also come from PATH;
#   3. otherwise pinned versions are built from the Go module proxy into a versioned cache
#      folder outside the repository (ACNS_CACHE_DIR, default ~/.cache/acns-operator), with
#      GOMODCACHE and GOCACHE beside it so later runs and CI on the same machine reuse them.
# When every binary comes from one folder, that folder is printed; when they are mixed,
# a folder of symlinks to the chosen binaries is made in the cache and printed.
#
# Idempotent: a second run finds the binaries and builds nothing; concurrent runs wait
# for each other (flock) instead of building the same thing twice. Progress goes to
# stderr; the last line on stdout is the assets folder, so that
#   export KUBEBUILDER_ASSETS=$(make -s envtest | tail -1)
# works. Measured cold build (empty Go caches, 2 cores): ~6.5 minutes for
# kube-apiserver + etcd + helm and ~1 more for kubectl on idle cores; 13.6 minutes for
# all four on a machine busy with other jobs. The Go caches take ~4.5 GB.
set -euo pipefail

K8S_VERSION="${ACNS_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ACNS_ETCD_VERSION:-v3.5.35}"
HELM_VERSION="${ACNS_HELM_VERSION:-v3.19.0}"
GO_MIN_MINOR=24 # Kubernetes 1.34's go.mod requires go 1.24
# Bump when the build recipe changes (flags, stamping), so caches built by an older
# recipe are not reused: 2 = kubectl built to match, helm version-stamped.
RECIPE=2

log() { printf '[envtest-assets] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

cache_root="${ACNS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/acns-operator}"
built="${cache_root}/envtest/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-helm-${HELM_VERSION}-r${RECIPE}"
mkdir -p "${built}"

# --- building -------------------------------------------------------------------------

go_ready=""
require_go() {
  [[ -n "${go_ready}" ]] && return
  command -v go >/dev/null 2>&1 ||
    die "go is not on PATH: install Go >= 1.${GO_MIN_MINOR} to build the control-plane binaries, or set KUBEBUILDER_ASSETS (see README)"
  local version minor
  version="$(go env GOVERSION)" # e.g. go1.26.8
  minor="$(sed -n 's/^go1\.\([0-9]*\).*/\1/p' <<<"${version}")"
  [[ -n "${minor}" && "${minor}" -ge "${GO_MIN_MINOR}" ]] ||
    die "${version} is too old: Kubernetes ${K8S_VERSION} needs Go >= 1.${GO_MIN_MINOR}"
  export GOMODCACHE="${cache_root}/go/mod"
  export GOCACHE="${cache_root}/go/build"
  export GOFLAGS="-mod=mod"
  export CGO_ENABLED=0
  export GOTOOLCHAIN=local
  export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
  # Two engineers (or CI and a developer) on one machine share the cache: the second
  # run waits here, then finds the binaries built.
  exec 9>"${cache_root}/envtest.lock"
  if ! flock -n 9; then
    log "another envtest-assets run is building; waiting for it"
    flock 9
  fi
  go_ready=1
}

# run_with_heartbeat WHAT CMD...: go build is silent for minutes; say it is alive.
run_with_heartbeat() {
  local what="$1" start=${SECONDS}
  shift
  (
    while sleep 60; do log "${what}: still building ($((SECONDS - start)) s)"; done
  ) &
  local beat=$!
  local rc=0
  "$@" || rc=$?
  kill "${beat}" 2>/dev/null || true
  wait "${beat}" 2>/dev/null || true
  return "${rc}"
}

# install_atomically SRC DEST: an interrupted build never leaves a half-written asset.
install_atomically() {
  mv -f "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"
}

# The kubernetes wrapper module: k8s.io/kubernetes requires its staging modules at
# v0.0.0 with local replaces; a wrapper module replaces each with its published tag
# v0.X.Y (kubernetes#79384). Built once per run, shared by kube-apiserver and kubectl.
k8s_module=""
trap '[[ -z "${k8s_module}" ]] || rm -rf "${k8s_module}"' EXIT
prepare_k8s_module() {
  [[ -n "${k8s_module}" ]] && return
  k8s_module="$(mktemp -d)"
  local staging_tag="v0.${K8S_VERSION#v1.}"
  log "kubernetes ${K8S_VERSION}: resolving the staging modules (${staging_tag})"
  go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" >"${k8s_module}/k8s.json"
  local gomod staging
  gomod="$(sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p' "${k8s_module}/k8s.json")"
  staging="$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "${gomod}")"
  [[ -n "${staging}" ]] || die "found no staging modules in ${gomod}"
  {
    echo "module acns.local/envtest"
    echo
    echo "go 1.${GO_MIN_MINOR}"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "replace ("
    for m in ${staging}; do echo "	${m} => ${m} ${staging_tag}"; done
    echo ")"
  } >"${k8s_module}/go.mod"
  cat >"${k8s_module}/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "${k8s_module}" && go mod tidy -e)
}

build_k8s_command() {
  local name="$1" dest="${built}/$1"
  prepare_k8s_module
  log "${name} ${K8S_VERSION}: building from the Go module proxy"
  local ver="k8s.io/component-base/version" minor="${K8S_VERSION#v1.}"
  # Without these the binary reports v0.0.0-master, and kubectl warns about skew.
  local ldflags="-s -w -X ${ver}.gitVersion=${K8S_VERSION} -X ${ver}.gitMajor=1"
  ldflags+=" -X ${ver}.gitMinor=${minor%%.*} -X ${ver}.gitTreeState=clean"
  (cd "${k8s_module}" && run_with_heartbeat "${name}" \
    go build -o "${k8s_module}/${name}" -ldflags "${ldflags}" "k8s.io/kubernetes/cmd/${name}")
  install_atomically "${k8s_module}/${name}" "${dest}"
}

build_etcd() {
  local dest="${built}/etcd" work
  log "etcd ${ETCD_VERSION}: building from the Go module proxy"
  work="$(mktemp -d)"
  # go install fails on etcd's replace directives; a wrapper module builds the server
  # package, whose root is etcd's main.
  cat >"${work}/go.mod" <<MOD
module acns.local/etcd

go 1.${GO_MIN_MINOR}

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
MOD
  cat >"${work}/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "${work}" && go mod tidy -e)
  (cd "${work}" && run_with_heartbeat etcd \
    go build -o "${work}/etcd" -ldflags "-s -w" go.etcd.io/etcd/server/v3)
  install_atomically "${work}/etcd" "${dest}"
  rm -rf "${work}"
}

build_helm() {
  local dest="${built}/helm" gobin gomod client_go
  log "helm ${HELM_VERSION}: building from the Go module proxy"
  # helm's Makefile stamps its version and the Kubernetes version it was built against
  # (from its client-go); without them `helm version` says v3.19 and `helm template`
  # renders .Capabilities.KubeVersion as v1.20.
  gomod="$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')"
  client_go="$(sed -n 's#^\s*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "${gomod}")"
  [[ -n "${client_go}" ]] || die "found no k8s.io/client-go requirement in ${gomod}"
  local v="helm.sh/helm/v3"
  local ldflags="-s -w -X ${v}/internal/version.version=${HELM_VERSION}"
  ldflags+=" -X ${v}/internal/version.gitTreeState=clean"
  ldflags+=" -X ${v}/pkg/lint/rules.k8sVersionMajor=1 -X ${v}/pkg/lint/rules.k8sVersionMinor=${client_go}"
  ldflags+=" -X ${v}/pkg/chartutil.k8sVersionMajor=1 -X ${v}/pkg/chartutil.k8sVersionMinor=${client_go}"
  gobin="$(mktemp -d)"
  GOBIN="${gobin}" run_with_heartbeat helm \
    go install -ldflags "${ldflags}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  install_atomically "${gobin}/helm" "${dest}"
  rm -rf "${gobin}"
}

# is_built NAME: a regular executable file in the versioned folder.
is_built() { [[ -f "${built}/$1" && ! -L "${built}/$1" && -x "${built}/$1" ]]; }

ensure_built() {
  local name="$1" start=${SECONDS}
  if is_built "${name}"; then
    log "${name}: cached in ${built}"
    return
  fi
  require_go
  if is_built "${name}"; then # another run built it while we waited for the lock
    log "${name}: cached in ${built}"
    return
  fi
  rm -f "${built:?}/${name}"
  case "${name}" in
  kube-apiserver | kubectl) build_k8s_command "${name}" ;;
  etcd) build_etcd ;;
  helm) build_helm ;;
  esac
  log "${name}: built in $((SECONDS - start)) s"
}

# --- choosing -------------------------------------------------------------------------

override_var() {
  case "$1" in
  kube-apiserver) echo TEST_ASSET_KUBE_APISERVER ;;
  etcd) echo TEST_ASSET_ETCD ;;
  kubectl) echo TEST_ASSET_KUBECTL ;;
  helm) echo TEST_ASSET_HELM ;;
  esac
}

# choose NAME: set `choice` to the path of the binary to use, building it if needed.
# (A variable, not stdout: a $(...) subshell would lose the build state and the lock.)
choose() {
  local name="$1" var override
  var="$(override_var "${name}")"
  override="${!var:-}"
  if [[ -n "${override}" ]]; then
    [[ -x "${override}" ]] || die "${var}=${override} is not an executable file"
    log "${name}: ${var}=${override}"
    choice="${override}"
    return
  fi
  if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    if [[ -x "${KUBEBUILDER_ASSETS}/${name}" ]]; then
      choice="${KUBEBUILDER_ASSETS}/${name}"
      return
    fi
    case "${name}" in
    kube-apiserver | etcd)
      die "KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS} has no executable ${name} (set ${var}, or unset KUBEBUILDER_ASSETS to build one)"
      ;;
    esac
    # setup-envtest folders hold no helm (and older ones no kubectl): use PATH, else build.
    local found
    found="$(command -v "${name}" || true)"
    if [[ -n "${found}" ]]; then
      log "${name}: not in KUBEBUILDER_ASSETS, using ${found}"
      choice="${found}"
      return
    fi
  fi
  ensure_built "${name}"
  choice="${built}/${name}"
}

base="${KUBEBUILDER_ASSETS:-${built}}"
log "assets: kube-apiserver ${K8S_VERSION}, etcd ${ETCD_VERSION}, helm ${HELM_VERSION} (base ${base})"
declare -A chosen
choice=""
mixed=""
for name in etcd kube-apiserver kubectl helm; do
  choose "${name}" >&2 # go's own output is progress, never the result line
  chosen[${name}]="${choice}"
  [[ "${chosen[${name}]}" == "${base}/${name}" ]] || mixed=1
done

assets="${base}"
if [[ -n "${mixed}" ]]; then
  # One folder must hold all four for KUBEBUILDER_ASSETS: link the chosen binaries into
  # a folder named after their paths, so different choices never share one.
  key="$(for name in etcd kube-apiserver kubectl helm; do echo "${chosen[${name}]}"; done | sha1sum | cut -c1-12)"
  assets="${cache_root}/envtest/mixed-${key}"
  mkdir -p "${assets}"
  for name in etcd kube-apiserver kubectl helm; do ln -sfn "${chosen[${name}]}" "${assets}/${name}"; done
fi
log "assets ready: ${assets}"
echo "${assets}"
