#!/usr/bin/env bash
# `make kind-up`: a kind cluster running the whole lab from the chart, step by step, each step
# named when it fails. Idempotent: an existing cluster is reused, the release is upgraded.
# Environment (set by the Makefile): KIND HELM KUBECTL DOCKER IMAGE KCFG NS RELEASE
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=dnsrace

step() { echo "kind-up: $*"; }
fail() { echo "kind-up: step '$1' failed: $2" >&2; exit 1; }

# 1. Prerequisites: say exactly what is missing, all at once.
missing=()
if ! command -v "$DOCKER" >/dev/null 2>&1; then
  missing+=("docker: no '$DOCKER' on PATH; install Docker Engine (or Podman with a docker alias)")
elif ! "$DOCKER" info >/dev/null 2>&1; then
  missing+=("docker: '$DOCKER info' fails, so no engine is reachable; start it (systemctl start docker) or join the docker group")
fi
[[ -x "$KIND" ]] || missing+=("kind: '$KIND' is not executable; run 'make setup-tools' (builds sigs.k8s.io/kind with Go)")
[[ -x "$HELM" ]] || missing+=("helm: '$HELM' is not executable; run 'make setup-tools' (builds helm.sh/helm/v4 with Go)")
command -v "$KUBECTL" >/dev/null 2>&1 || missing+=("kubectl: '$KUBECTL' not found; run 'make setup' (builds it) or put kubectl on PATH")
if (( ${#missing[@]} )); then
  printf 'kind-up: missing prerequisite: %s\n' "${missing[@]}" >&2
  exit 1
fi

# 2. The cluster, with its kubeconfig kept in the clone (your ~/.kube/config is not touched).
mkdir -p "$(dirname "$KCFG")"
if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  step "cluster $CLUSTER exists; reusing it"
  "$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KCFG" >/dev/null
else
  step "creating cluster $CLUSTER from kind/cluster.yaml"
  "$KIND" create cluster --config kind/cluster.yaml --kubeconfig "$KCFG" --wait 180s \
    || fail "kind create cluster" "see the output above"
fi
K=("$KUBECTL" --kubeconfig "$KCFG")

# 3. The image, built here and loaded onto the node (no registry involved).
step "building $IMAGE from operator/Dockerfile"
"$DOCKER" build -f operator/Dockerfile -t "$IMAGE" . || fail "docker build" "see the output above"
step "loading $IMAGE into the kind node"
"$KIND" load docker-image "$IMAGE" --name "$CLUSTER" || fail "kind load docker-image" "see above"

# 4. The namespace with Pod Security "restricted" enforced, then the release (CRDs first: crds/).
"${K[@]}" create namespace "$NS" --dry-run=client -o yaml | "${K[@]}" apply -f - >/dev/null
"${K[@]}" label namespace "$NS" --overwrite pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/warn=restricted >/dev/null
"${K[@]}" config set-context --current --namespace "$NS" >/dev/null
step "helm upgrade --install $RELEASE charts/dnsrace (namespace $NS), waiting for readiness"
"$HELM" upgrade --install "$RELEASE" charts/dnsrace --kubeconfig "$KCFG" --namespace "$NS" \
  -f kind/values.yaml --set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}" \
  --wait --timeout 5m || {
    "${K[@]}" -n "$NS" get pods -o wide >&2 || true
    fail "helm install" "pods above are not ready; 'kubectl -n $NS describe pod' and logs tell why"
  }

# 5. The cluster DNS forwards sim.internal to the lab's CoreDNS.
step "adding the sim.internal stub domain to the cluster CoreDNS"
KUBECONFIG="$KCFG" kind/stub-domain.sh "$KUBECTL" "$NS" || fail "stub domain" "see above"

cat <<EOT
kind-up: ready. Point the suite and the CLI at it with:
  export DNSRACE_KUBECONFIG=$PWD/$KCFG DNSRACE_NAMESPACE=$NS
  export DNSRACE_DNS_SERVER=127.0.0.1:30053       # lab CoreDNS via the mapped node port (UDP+TCP)
  export DNSRACE_DNS_STALE_SERVER=127.0.0.1:30054 # its serve-stale port (the serve-stale safeguard)
  export DNSRACE_DNS_ETCD=127.0.0.1:32379         # after: make kind-port-forward
EOT
