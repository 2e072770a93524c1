#!/usr/bin/env bash
# Adds (or refreshes) a stub domain to the cluster CoreDNS: sim.internal is forwarded to the lab's
# CoreDNS Service, so any pod resolves dynamodb.us-east-1.sim.internal through the cluster DNS.
# Idempotent: the block sits between marker lines and is replaced on every run.
# Usage: kind/stub-domain.sh <kubectl> <namespace> [<cluster DNS namespace> [--no-restart]]
# (the last two let the packaging tests exercise it on a cluster without a CoreDNS Deployment)
set -euo pipefail
KUBECTL=${1:?kubectl path}
NS=${2:?namespace of the dnsrace release}
DNS_NS=${3:-kube-system}
RESTART=${4:-}
BEGIN="# BEGIN dnsrace stub domain"
END="# END dnsrace stub domain"

# forward needs an address, not a name: the cluster CoreDNS would resolve the name through itself.
ip=$("$KUBECTL" -n "$NS" get service dnsrace-coredns -o jsonpath='{.spec.clusterIP}')
[[ -n "$ip" ]] || { echo "stub-domain: service $NS/dnsrace-coredns has no ClusterIP" >&2; exit 1; }

current=$("$KUBECTL" -n "$DNS_NS" get configmap coredns -o jsonpath='{.data.Corefile}')
# Drop an earlier block, then append the new one. No cache here: the lab's CoreDNS caches once,
# with the lab's TTL bounds; a second cache would lengthen how long a deleted record is served.
stripped=$(printf '%s\n' "$current" | sed "/^$BEGIN\$/,/^$END\$/d")
corefile=$(printf '%s\n%s\nsim.internal:53 {\n    errors\n    forward . %s:53\n}\n%s\n' \
  "$stripped" "$BEGIN" "$ip" "$END")

"$KUBECTL" -n "$DNS_NS" create configmap coredns --from-literal=Corefile="$corefile" \
  --dry-run=client -o yaml | "$KUBECTL" -n "$DNS_NS" apply --server-side --force-conflicts \
  --field-manager=dnsrace-stub-domain -f -
if [[ "$RESTART" == "--no-restart" ]]; then
  echo "stub-domain: sim.internal -> $ip:53 (ConfigMap $DNS_NS/coredns updated)"
  exit 0
fi
# The reload plugin would notice within a minute or two; a restart makes it take effect now.
"$KUBECTL" -n "$DNS_NS" rollout restart deployment coredns
"$KUBECTL" -n "$DNS_NS" rollout status deployment coredns --timeout=120s
echo "stub-domain: sim.internal -> $ip:53 (cluster CoreDNS restarted)"
