#!/usr/bin/env bash
# The gateway under wrk, next to its own baseline: the same binary with --unlimited (no limiter at all), so
# the difference is what airl costs a real HTTP server. Three runs of $SECONDS_PER_RUN s each, on 127.0.0.1:
#   unlimited   no limiter (auth, JSON, the simulated GPU with 0 us per token, the reply)
#   admitted    every request admitted: concurrency caps + 6 rate tiers + settle, limits never reached
#   refused     limits far below the load: mostly 429s (the denial path)
# Usage: bench/gateway_wrk.sh BUILD_DIR   (make bench-gateway builds Release and runs it)
set -euo pipefail
build=${1:?usage: gateway_wrk.sh BUILD_DIR}
seconds=${SECONDS_PER_RUN:-10}
binary="$build/examples/gateway/airl_gateway"
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

keys=""
for u in 0 1 2 3; do keys+="key sk-load-$u load-user-$u"$'\n'; done
high='limit user_model_rpm 1000000000\nlimit user_model_tpm 1000000000000\nlimit user_rpm 1000000000\nlimit user_tpm 1000000000000\nlimit model_rpm 1000000000\nlimit model_tpm 1000000000000\n'
printf "model llama\n$high"'in_flight user 64\n%s' "$keys" > "$work/admitted.conf"
printf "model llama\n$high"'limit user_model_rpm 250\nin_flight user 64\n%s' "$keys" > "$work/refused.conf"
cat > "$work/rotate.lua" <<'LUA'
local n = 0
wrk.method = "POST"
wrk.body = '{"model":"llama","messages":[{"role":"user","content":"hi"}],"max_tokens":8}'
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  wrk.headers["Authorization"] = "Bearer sk-load-" .. (n % 4)
  return wrk.format()
end
LUA

port=18931
run() {
  local name=$1 config=$2; shift 2
  "$binary" --config "$config" --port $port --admin-port $((port + 100)) --us-per-token 0 --reply-tokens 8 "$@" \
    > "$work/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((port + 100))/livez" > /dev/null && break; sleep 0.05; done
  wrk -t2 -c16 -d"${seconds}s" -s "$work/rotate.lua" "http://127.0.0.1:$port/v1/chat/completions" > "$work/$name.wrk"
  curl -s "http://127.0.0.1:$((port + 100))/metrics" > "$work/$name.metrics"
  kill $pid; wait $pid || true
  local rps latency limiter_sum limiter_count
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$name.wrk")
  latency=$(awk '/Latency/ {print $2; exit}' "$work/$name.wrk")
  limiter_sum=$(awk '$1 == "airl_gateway_limiter_seconds_sum" {print $2}' "$work/$name.metrics")
  limiter_count=$(awk '$1 == "airl_gateway_limiter_seconds_count" {print $2}' "$work/$name.metrics")
  printf '%-10s %10s req/s  mean latency %-9s  limiter %s us/call  2xx:%s 429:%s\n' "$name" "$rps" "$latency" \
    "$(awk -v s="${limiter_sum:-0}" -v c="${limiter_count:-0}" 'BEGIN { if (c > 0) printf "%.2f", 1e6 * s / c; else printf "-" }')" \
    "$(awk -F'[ ]' '$1 == "airl_gateway_responses_total{code=\"200\"}" {print $2}' "$work/$name.metrics")" \
    "$(awk -F'[ ]' '$1 == "airl_gateway_responses_total{code=\"429\"}" {print $2}' "$work/$name.metrics")"
  port=$((port + 1))
}
run unlimited "$work/admitted.conf" --unlimited
run admitted "$work/admitted.conf"
run refused "$work/refused.conf"
