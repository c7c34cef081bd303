#!/usr/bin/env bash
# Cost benchmark (issue 13): the release exporter against the simulator (crates/gitlab-sim's
# `gitlab-sim` binary) as separate processes, beside a naive Python exporter that re-reads every
# project's job list every cycle (scripts/naive_exporter.py). Prints a markdown table for
# BENCHMARKS.md. Not part of CI.
#
#   scripts/bench.sh                  # the whole run: ~2 × BENCH_SECS + the /metrics worlds
#   BENCH_SECS=60 BENCH_SERIES="1k" scripts/bench.sh
#
# Knobs (environment):
#   BENCH_SECS=120          wall time of each CPU/RSS run (ours, then the naive one)
#   BENCH_PROJECTS=1000     projects in the group
#   BENCH_BUSY_SHARE=0.05   share of busy projects
#   BENCH_JOBS_PER_MIN=1100 jobs completing per minute (1,650 in 90 s)
#   BENCH_BUDGET=20000      gitlab.max_requests_per_minute of the exporter ("generous")
#   BENCH_SERIES="1k 10k 100k"  /metrics worlds to measure (empty: none)
#   BENCH_NAIVE=1           0: skip the naive baseline
#   BENCH_PERF=0            N > 0: also profile the exporter's first N s (own run) with `perf record -g`
#   BENCH_PROFILE=bench-release  cargo profile (release with line tables and symbols)
#   BENCH_KEEP=0            1: keep the temp dir (logs, configs, perf.data)
#   BENCH_STATE=0           1: the exporter runs with state.dir set (checkpoints, published page)
#   BENCH_OURS_ONLY=0       1: only our CPU/RSS run (no naive run, no perf, no /metrics worlds):
#                           quick before/after pairs
#   BENCH_BIN=              the exporter binary to measure (a saved build); no cargo build then
set -euo pipefail

SECS=${BENCH_SECS:-120}
PROJECTS=${BENCH_PROJECTS:-1000}
BUSY_SHARE=${BENCH_BUSY_SHARE:-0.05}
JOBS_PER_MIN=${BENCH_JOBS_PER_MIN:-1100}
BUDGET=${BENCH_BUDGET:-20000}
SERIES=${BENCH_SERIES-1k 10k 100k}
NAIVE=${BENCH_NAIVE:-1}
PERF=${BENCH_PERF:-0}
PROFILE=${BENCH_PROFILE:-bench-release}
STATE=${BENCH_STATE:-0}
OURS_ONLY=${BENCH_OURS_ONLY:-0}
TOKEN=bench-token
WINDOW=5 # seconds per CPU sample

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
EXP=${BENCH_BIN:-"$TARGET/$PROFILE/gitlab-jobs-exporter"}
SIM="$TARGET/$PROFILE/gitlab-sim"
NAIVE_PY="$ROOT/scripts/naive_exporter.py"
HZ=$(getconf CLK_TCK)
TMP=$(mktemp -d /tmp/gje-bench.XXXXXX)
PIDS=()

log() { echo "bench: $*" >&2; }
die() {
	log "FAILED: $*"
	exit 1
}

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { # PID: stops one child and waits for it
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_sim NAME ARGS...: sets SIM_PID and SIM_URL
start_sim() {
	local name=$1
	shift
	# Made here: the background child opens its redirections asynchronously.
	: >"$TMP/$name.sim.out"
	"$SIM" --listen 127.0.0.1:0 --token "$TOKEN" "$@" >"$TMP/$name.sim.out" 2>"$TMP/$name.sim.err" &
	SIM_PID=$!
	PIDS+=("$SIM_PID")
	local i
	for ((i = 0; i < 600; i++)); do
		SIM_URL=$(sed -n 's/^gitlab-sim listening on //p' "$TMP/$name.sim.out" 2>/dev/null)
		[[ -n $SIM_URL ]] && curl -fsS -o /dev/null "$SIM_URL/__sim/stats" 2>/dev/null && {
			log "$name: $(sed -n 2p "$TMP/$name.sim.out")"
			return 0
		}
		kill -0 "$SIM_PID" 2>/dev/null || die "$name: the simulator exited: $(cat "$TMP/$name.sim.err")"
		sleep 0.2
	done
	die "$name: the simulator did not start within 120 s"
}

# start_ours NAME SIM_URL: sets EXP_PID and EXP_URL
start_ours() {
	local name=$1 url=$2 port
	port=$(free_port)
	cat >"$TMP/$name.toml" <<EOF
[gitlab]
url = "$url"
max_requests_per_minute = $BUDGET
[server]
listen = "127.0.0.1:$port"
[[groups]]
path = "bench"
[limits]
max_series = 1000000
EOF
	if ((STATE)); then
		printf '[state]\ndir = "%s"\n' "$TMP/$name.state" >>"$TMP/$name.toml"
	fi
	# BENCH_WRAP: a command put before the exporter (e.g. `heaptrack -o FILE`); CPU figures are
	# then the wrapper's.
	GITLAB_TOKEN=$TOKEN RUST_LOG=warn ${BENCH_WRAP:-} "$EXP" --config "$TMP/$name.toml" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	EXP_PID=$!
	PIDS+=("$EXP_PID")
	EXP_URL="http://127.0.0.1:$port"
}

# start_naive NAME SIM_URL: sets EXP_PID and EXP_URL
start_naive() {
	local name=$1 url=$2 port
	port=$(free_port)
	python3 "$NAIVE_PY" --gitlab "$url" --token "$TOKEN" --group bench --listen "127.0.0.1:$port" \
		>"$TMP/$name.out" 2>"$TMP/$name.err" &
	EXP_PID=$!
	PIDS+=("$EXP_PID")
	EXP_URL="http://127.0.0.1:$port"
}

# wait_ready NAME PID URL TIMEOUT: polls /readyz; prints the seconds it took
wait_ready() {
	local name=$1 pid=$2 url=$3 timeout=$4 start=$SECONDS
	while ! curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; do
		kill -0 "$pid" 2>/dev/null || die "$name exited: $(tail -5 "$TMP/$name.err")"
		((SECONDS - start < timeout)) || die "$name not ready within $timeout s: $(tail -5 "$TMP/$name.err")"
		sleep 0.5
	done
	echo $((SECONDS - start))
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
sim_total() { curl -fsS "$1/__sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }

# jobs_counted URL: the sum of gitlab_ci_jobs_total on /metrics
jobs_counted() {
	curl -fsS "$1/metrics" | awk '/^gitlab_ci_jobs_total\{/ {n += $NF} END {printf "%d", n}'
}

# cpu_run NAME KIND: a fresh simulator and one exporter for SECS; sets R_* figures
cpu_run() {
	local name=$1 kind=$2
	start_sim "$name" --projects "$PROJECTS" --busy-share "$BUSY_SHARE" --jobs-per-min "$JOBS_PER_MIN"
	local sim_url=$SIM_URL sim_pid=$SIM_PID
	"start_$kind" "$name" "$sim_url"
	local pid=$EXP_PID url=$EXP_URL t0=$SECONDS ready="" samples="$TMP/$name.samples"
	: >"$samples"
	local prev_t prev_r now_t now_r
	prev_t=$(ticks "$pid")
	prev_r=$(sim_total "$sim_url")
	while ((SECONDS - t0 < SECS)); do
		sleep "$WINDOW"
		kill -0 "$pid" 2>/dev/null || die "$name exited: $(tail -5 "$TMP/$name.err")"
		now_t=$(ticks "$pid")
		now_r=$(sim_total "$sim_url")
		# The third column: 1 when the window began after the first cycle was done.
		echo "$((now_t - prev_t)) $((now_r - prev_r)) $([[ -n $ready ]] && echo 1 || echo 0)" >>"$samples"
		prev_t=$now_t prev_r=$now_r
		if [[ -z $ready ]] && curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; then
			ready="$((SECONDS - t0)) s"
		fi
	done
	local wall=$((SECONDS - t0))
	R_TICKS=$(ticks "$pid")
	R_REQ=$(sim_total "$sim_url")
	R_HWM=$(hwm_kib "$pid")
	R_MEM=$(awk '/^(VmRSS|RssAnon|RssFile|Threads):/ {printf "%s %s ", $1, $2}' "/proc/$pid/status")
	R_COUNTED=$(jobs_counted "$url")
	R_READY=${ready:-"not within ${wall} s"}
	R_RPM=$(awk -v r="$R_REQ" -v w="$wall" 'BEGIN {printf "%.0f", r * 60 / w}')
	R_CPU=$(awk -v t="$R_TICKS" -v hz="$HZ" 'BEGIN {printf "%.2f", t / hz}')
	R_PER_K=$(awk -v t="$R_TICKS" -v hz="$HZ" -v r="$R_REQ" 'BEGIN {printf "%.2f", r ? t / hz / r * 1000 : 0}')
	# The median over WINDOW-second windows that served at least 20 requests.
	R_MEDIAN=$(awk -v hz="$HZ" '$2 >= 20 {printf "%.6f\n", $1 / hz / $2 * 1000}' "$samples" | sort -n |
		awk '{v[NR] = $1} END {if (NR == 0) print "n/a"; else if (NR % 2) printf "%.2f ms", v[(NR + 1) / 2]; else printf "%.2f ms", (v[NR / 2] + v[NR / 2 + 1]) / 2}')
	R_STEADY=$(awk -v hz="$HZ" -v w="$WINDOW" '$3 == 1 {t += $1; r += $2; n += 1}
		END {if (r) printf "%.2f (%.0f requests/min)", t / hz / r * 1000, r * 60 / (n * w); else print "n/a"}' "$samples")
	R_WALL=$wall
	stop "$pid"
	stop "$sim_pid"
	log "$name: $R_REQ requests in $wall s, CPU $R_CPU s ($R_PER_K per 1,000; after the first cycle $R_STEADY), median $R_MEDIAN, peak RSS $(mib "$R_HWM"), ready after $R_READY; at the end: ${R_MEM}load $(cut -d' ' -f1-3 /proc/loadavg)"
}

# perf_run: a fresh simulator and exporter, `perf record -g` of the exporter from its start for
# PERF seconds (first cycle and steady state)
perf_run() {
	command -v perf >/dev/null || {
		log "perf not found: no profile"
		return 0
	}
	start_sim perf --projects "$PROJECTS" --busy-share "$BUSY_SHARE" --jobs-per-min "$JOBS_PER_MIN"
	local sim_pid=$SIM_PID
	start_ours perf "$SIM_URL"
	log "perf: recording $PERF s of the exporter (pid $EXP_PID) from its start"
	perf record -g -p "$EXP_PID" -o "$TMP/perf.data" -- sleep "$PERF" >"$TMP/perf.log" 2>&1 || {
		log "perf record failed: $(tail -3 "$TMP/perf.log")"
	}
	stop "$EXP_PID"
	stop "$sim_pid"
	[[ -s $TMP/perf.data ]] || return 0
	local report=(perf report -i "$TMP/perf.data" --stdio --no-children -g none --percent-limit 0.3)
	"${report[@]}" 2>/dev/null | grep -E '^ +[0-9.]+%' | head -15 >"$TMP/perf.top" || true
	"${report[@]}" --sort dso 2>/dev/null | grep -E '^ +[0-9.]+%' | head -6 >"$TMP/perf.dso" || true
	"${report[@]}" 2>/dev/null | grep -m1 '^# Samples' >"$TMP/perf.samples" || true
}

# scrape URL [HEADER]: "seconds bytes" of one /metrics (median of 3)
scrape() {
	local url=$1 i
	shift
	for i in 1 2 3; do
		curl -fsS -o /dev/null "$@" -w '%{time_total} %{size_download}\n' "$url/metrics"
	done | sort -n | sed -n 2p
}

# metrics_run SIZE: a world of about SIZE job series; both exporters against one simulator
metrics_run() {
	local size=$1 args
	case $size in
	1k) args=(--projects 30 --busy-share 1 --busy-rate 10) ;;
	10k) args=(--projects 115 --busy-share 1 --busy-rate 30) ;;
	100k) args=(--projects 950 --busy-share 1 --busy-rate 40) ;;
	*) die "unknown series size $size (1k, 10k or 100k)" ;;
	esac
	start_sim "m$size" "${args[@]}" --history 3600 --duration 3600 --idle-rate 0
	local sim_url=$SIM_URL sim_pid=$SIM_PID kinds=(ours) kind
	((NAIVE)) && kinds+=(naive)
	for kind in "${kinds[@]}"; do
		"start_$kind" "m$size-$kind" "$sim_url"
		local pid=$EXP_PID url=$EXP_URL
		local took
		took=$(wait_ready "m$size-$kind" "$pid" "$url" 900)
		local before series plain gz enc hwm
		before=$(rss_kib "$pid")
		series=$(curl -fsS "$url/metrics" | grep -c '^gitlab_ci_jobs_total{' || true)
		plain=$(scrape "$url")
		gz=$(scrape "$url" -H 'Accept-Encoding: gzip')
		enc=$(curl -fsS -o /dev/null -D - -H 'Accept-Encoding: gzip' "$url/metrics" |
			awk 'tolower($1) == "content-encoding:" {print $2}' | tr -d '\r')
		hwm=$(hwm_kib "$pid")
		METRICS_ROWS+=("$(awk -v k="$kind" -v s="$series" -v p="$plain" -v g="$gz" -v e="${enc:-none}" \
			-v b="$before" -v h="$hwm" -v r="$took" 'BEGIN {
				split(p, P, " "); split(g, G, " ");
				printf "| %s | %s | %.0f ms | %.1f MB | %.0f MB/s | %.0f ms | %.1f MB (%s) | %.1f MiB | %.1f MiB | %d s |",
					(k == "ours" ? "ours" : "naive (Python)"), s, P[1] * 1000, P[2] / 1e6,
					(P[1] > 0 ? P[2] / 1e6 / P[1] : 0), G[1] * 1000, G[2] / 1e6, e,
					b / 1024, h / 1024, r }')")
		log "m$size-$kind: $series series, plain $plain, gzip-asked $gz ($enc)"
		stop "$pid"
	done
	stop "$sim_pid"
}

main() {
	command -v curl >/dev/null || die "curl is needed"
	command -v python3 >/dev/null || die "python3 is needed"
	if [[ -z ${BENCH_BIN:-} ]]; then
		log "building ($PROFILE)"
		(cd "$ROOT" && cargo build --profile "$PROFILE" -p gitlab-jobs-exporter -p gitlab-sim --bins) >&2 ||
			die "cargo build"
	fi
	[[ -x $EXP && -x $SIM ]] || die "binaries not found in $TARGET/$PROFILE"
	if ((OURS_ONLY)); then
		cpu_run ours ours
		return 0
	fi

	cpu_run ours ours
	local o=("$R_RPM" "$R_REQ" "$R_CPU" "$R_PER_K" "$R_STEADY" "$R_MEDIAN" "$(mib "$R_HWM")" "$R_READY" "$R_COUNTED")
	local n=("—" "—" "—" "—" "—" "—" "—" "—" "—")
	if ((NAIVE)); then
		cpu_run naive naive
		n=("$R_RPM" "$R_REQ" "$R_CPU" "$R_PER_K" "$R_STEADY" "$R_MEDIAN" "$(mib "$R_HWM")" "$R_READY" "$R_COUNTED")
	fi
	((PERF > 0)) && perf_run
	METRICS_ROWS=()
	local size
	for size in $SERIES; do metrics_run "$size"; done

	local labels=("requests/min" "requests served in ${SECS} s" "CPU-s in ${SECS} s (utime+stime)"
		"CPU-s per 1,000 requests" "CPU-s per 1,000 requests after the first cycle" "CPU per request, median of ${WINDOW}-s windows"
		"peak RSS (VmHWM)" "ready (first cycle done) after" "jobs counted (sum of gitlab_ci_jobs_total)")
	echo
	echo "### Cost: $PROJECTS projects discovered through a group, $(awk -v s="$BUSY_SHARE" 'BEGIN {printf "%g%%", s * 100}') busy, ~${JOBS_PER_MIN} jobs completing/min"
	echo
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, profile \`$PROFILE\`, budget $BUDGET/min, ${SECS} s per run, each exporter against its own fresh simulator process."
	echo
	echo "| figure | naive (Python) | ours |"
	echo "|---|---|---|"
	local i
	for i in "${!labels[@]}"; do echo "| ${labels[$i]} | ${n[$i]} | ${o[$i]} |"; done
	if ((${#METRICS_ROWS[@]})); then
		echo
		echo "### /metrics: render time and size"
		echo
		echo "Median of 3 scrapes (curl \`time_total\`, \`size_download\`), after \`/readyz\`; \"gzip asked\" sends \`Accept-Encoding: gzip\` and measures bytes on the wire."
		echo
		echo "| exporter | job series (\`gitlab_ci_jobs_total\`) | render, plain | size, plain | throughput | render, gzip asked | bytes on the wire (Content-Encoding) | RSS before scraping | peak RSS | ready after |"
		echo "|---|---|---|---|---|---|---|---|---|---|"
		printf '%s\n' "${METRICS_ROWS[@]}"
	fi
	if [[ -s $TMP/perf.top ]]; then
		echo
		echo "### perf: the exporter's first $PERF s (\`perf record -g\`; \`perf report --no-children\`), $(sed 's/^# //' "$TMP/perf.samples")"
		echo
		echo '```'
		cat "$TMP/perf.top"
		echo '```'
		echo
		echo "By object (\`--sort dso\`):"
		echo
		echo '```'
		cat "$TMP/perf.dso"
		echo '```'
	fi
}

main "$@"
