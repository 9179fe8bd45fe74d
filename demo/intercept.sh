#!/usr/bin/env bash
# The whole intercept on the loopback cluster, in one command: start the cluster with its sample
# (namespace demo, Deployment and Service echo), start a small app "on the laptop", intercept
# demo/echo, show one request answered by the laptop and one by a pod, then stop and show the
# Service restored. Needs cargo and curl; kubectl is used when installed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p cz-proxy -p cz-testkit -p czctl
bin=./target/debug
work=$(mktemp -d)
kubeconfig="$work/kubeconfig"
cleanup() { kill "${intercept:-}" "${laptop:-}" "${cluster:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
wait_for() { for _ in $(seq 1 240); do grep -q "$1" "$2" && return 0; sleep 0.25; done; echo "timed out waiting for '$1' in $2" >&2; cat "$2" >&2; exit 1; }

say "1. the loopback cluster, with the sample"
# As root the cluster network is isolated, as on a real cluster: the laptop reaches the API
# server and the Service's NodePort, not the pods, so the tunnel rides a port-forward.
$bin/cz-testkit up --kubeconfig "$kubeconfig" --sample --endpoint-lag 1s >"$work/cluster.log" 2>&1 & cluster=$!
wait_for '^ready$' "$work/cluster.log"
cat "$work/cluster.log"
service=$(grep -o ' 80=[0-9.]*:[0-9]*' "$work/cluster.log" | cut -d= -f2)

say "2. your app on the laptop (port 3000)"
$bin/cz-testkit echo --port 3000 --name laptop >"$work/laptop.log" 2>&1 & laptop=$!

say "3. czctl service intercept echo -n demo -r 80 -l 3000"
$bin/czctl service intercept echo -n demo -r 80 -l 3000 -k "$kubeconfig" >"$work/intercept.log" 2>&1 & intercept=$!
wait_for '^Intercepting' "$work/intercept.log"
cat "$work/intercept.log"

say "4. curl -H 'X-C6O-INTERCEPT: yes' http://$service/hello   (→ the laptop)"
curl -fsS --max-time 5 -H 'X-C6O-INTERCEPT: yes' "http://$service/hello"
say "   curl http://$service/hello                           (→ a pod in the cluster)"
curl -fsS --max-time 5 "http://$service/hello"
$bin/czctl session list -A -k "$kubeconfig"

say "5. Ctrl-C: czctl restores the Service and removes what it created"
kill -INT "$intercept"; wait "$intercept" || true; intercept=
tail -n 6 "$work/intercept.log"
if command -v kubectl >/dev/null; then
  kubectl --kubeconfig "$kubeconfig" get svc echo -n demo -o jsonpath='selector: {.spec.selector}{"\n"}'
  kubectl --kubeconfig "$kubeconfig" get deploy,svc,secrets -n demo
fi
say "   curl -H 'X-C6O-INTERCEPT: yes' http://$service/hello   (→ a pod again)"
curl -fsS --max-time 5 -H 'X-C6O-INTERCEPT: yes' "http://$service/hello"
