#!/usr/bin/env bash
# proxyd's GPU round trip on a real machine with an NVIDIA driver, and a
# pass/fail table with timings. It builds proxyd from this repository, writes a
# config with [gpu] backend = "nvml" and exec workloads from scripts/gpu-check/
# (a stand-in miner and a stand-in inference server, python3 with torch, no
# downloads), and runs, on one GPU (--gpu, default 0):
#
#   1. mining -> contract through the API -> SERVING_AI -> contract end -> mining
#   2. the same with a miner that lingers (its stop command says "stopped" at
#      once, the miner ignores SIGTERM) and a foreign process on the GPU: proxyd
#      must kill its own miner, never signal the foreign process, keep the GPU
#      quarantined naming it, and serve the contract after it exits and an
#      operator resumes the GPU
#   3. kill -9 of proxyd while mining: the restart adopts the miner (no second
#      one) and the events journal keeps what happened before the crash
#
# The miner runs on every GPU proxyd manages (the switcher manages all of them);
# the contract is pinned to the chosen GPU. Power limits are not exercised.
# Exit status: 0 all passed, 1 a check failed, 2 something needed is missing.
set -uo pipefail

usage() {
	cat <<'EOF'
usage: scripts/gpu-check.sh [--dry-run] [--gpu INDEX] [--proxyd PATH] [--keep]

  --dry-run     only check the prerequisites (driver, GPU, python3, torch, go)
  --gpu INDEX   the GPU (nvidia-smi index) the contract is pinned to (default 0)
  --proxyd PATH use this proxyd binary instead of building one (no go needed)
  --keep        keep the work directory (config, logs, state) even on success

Environment: PYTHON (default python3) runs the stand-ins; it needs torch with CUDA.
EOF
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here=$repo/scripts/gpu-check
py=${PYTHON:-python3}
gpu_index=0 dry_run=0 keep=0 proxyd_bin=""
while (($#)); do
	case $1 in
	--dry-run) dry_run=1 ;;
	--gpu)
		gpu_index=${2:?--gpu needs an index}
		shift
		;;
	--proxyd)
		proxyd_bin=${2:?--proxyd needs a path}
		shift
		;;
	--keep) keep=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "gpu-check: unknown argument $1" >&2
		usage >&2
		exit 2
		;;
	esac
	shift
done
if ! [[ $gpu_index =~ ^[0-9]+$ ]]; then
	echo "gpu-check: --gpu $gpu_index: use a GPU index as nvidia-smi shows it (0, 1, ...)" >&2
	exit 2
fi

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- the result table -------------------------------------------------------
names=() results=() times=() details=()
failed=0
row() {
	names+=("$1") results+=("$2") times+=("$3") details+=("$4")
	printf '  %-4s  %-52s %8s  %s\n' "$2" "$1" "${3:+${3}s}" "$4"
}
pass() { row "$1" PASS "${2:-}" "${3:-}"; }
fail() {
	row "$1" FAIL "${2:-}" "${3:-}"
	failed=1
}
na() { row "$1" n/a "" "$2"; }
table() {
	local i
	echo
	echo "proxyd GPU check on $(hostname) GPU $gpu_index ($gpu_uuid, $gpu_name), driver $driver"
	printf '%-4s  %-52s %9s  %s\n' "" "check" "time" "detail"
	for i in "${!names[@]}"; do
		printf '%-4s  %-52s %9s  %s\n' "${results[$i]}" "${names[$i]}" "${times[$i]:+${times[$i]}s}" "${details[$i]}"
	done
}

# --- prerequisites -------------------------------------------------------------
missing=()
need() {
	printf '  %-8s %-22s %s\n' "MISSING" "$1" "$2"
	missing+=("$1: $2")
}
have() { printf '  %-8s %-22s %s\n' "ok" "$1" "$2"; }

gpu_uuid="?" gpu_name="?" driver="?" gpu_count=0
echo "prerequisites:"
if ! command -v nvidia-smi >/dev/null 2>&1; then
	need nvidia-smi "not found: this needs a machine with the NVIDIA driver installed (nvidia-smi comes with it)"
elif ! smi=$(nvidia-smi --query-gpu=index,uuid,name,driver_version --format=csv,noheader 2>&1); then
	need nvidia-smi "fails: $(head -n 1 <<<"$smi")"
else
	gpu_count=$(grep -c . <<<"$smi")
	line=$(awk -F', *' -v i="$gpu_index" '$1 == i' <<<"$smi")
	if [[ -z $line ]]; then
		need "GPU $gpu_index" "not on this machine: nvidia-smi lists $gpu_count GPU(s) (pick one with --gpu)"
	else
		IFS=, read -r _ gpu_uuid gpu_name driver <<<"$line"
		gpu_uuid=${gpu_uuid# } gpu_name=${gpu_name# } driver=${driver# }
		have nvidia-smi "$gpu_count GPU(s), driver $driver"
		have "GPU $gpu_index" "$gpu_uuid ($gpu_name)"
		busy=$(nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv,noheader 2>/dev/null |
			awk -F', *' -v u="$gpu_uuid" '$1 == u { printf "%s pid %s (%s) ", $3, $2, $4 }')
		if [[ -n $busy ]]; then
			need "GPU $gpu_index free" "busy: $busy; stop it or pick another GPU with --gpu"
		else
			have "GPU $gpu_index free" "no compute process on it"
		fi
		others=$(nvidia-smi --query-compute-apps=gpu_uuid,pid --format=csv,noheader 2>/dev/null |
			awk -F', *' -v u="$gpu_uuid" '$1 != u { n++ } END { print n + 0 }')
		if ((others > 0)); then
			have "other GPUs" "$others process(es) on other GPUs: proxyd will quarantine those GPUs (foreign_process); the check does not use them"
		fi
	fi
fi
if ! command -v "$py" >/dev/null 2>&1; then
	need python3 "not found ($py): install python3 with torch (GPU images usually have both), or set PYTHON"
else
	have python3 "$("$py" --version 2>&1)"
	if ! torch=$("$py" -c 'import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.device_count())' 2>&1); then
		need torch "not importable by $py ($(tail -n 1 <<<"$torch")): install PyTorch with CUDA, or set PYTHON to a python3 that has it"
	else
		read -r tv cuda count <<<"$(tail -n 1 <<<"$torch")"
		if [[ $cuda != True ]]; then
			need "torch CUDA" "torch $tv sees no CUDA GPU (a CPU-only build, or no driver access)"
		else
			have torch "$tv, CUDA, $count GPU(s)"
		fi
	fi
fi
if [[ -n $proxyd_bin ]]; then
	if [[ -x $proxyd_bin ]]; then
		have proxyd "$proxyd_bin"
	else
		need proxyd "$proxyd_bin is not an executable file"
	fi
elif ! command -v go >/dev/null 2>&1; then
	need go "not found: install Go (go.mod says which version) to build proxyd, or pass --proxyd PATH"
else
	have go "$(go version)"
fi
if ((${#missing[@]})); then
	echo
	echo "gpu-check cannot run here; missing:"
	printf '  - %s\n' "${missing[@]}"
	exit 2
fi
if ((dry_run)); then
	echo
	echo "gpu-check: every prerequisite is here (--dry-run: nothing was started)"
	exit 0
fi

# --- setup ------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/proxyd-gpu-check.XXXXXX")
run=$work/run
mkdir -p "$run" "$work/state"
proxyd_pid="" foreign_pid=""

stop_proxyd() {
	[[ -n $proxyd_pid ]] || return 0
	kill -TERM "$proxyd_pid" 2>/dev/null
	for _ in $(seq 1 175); do
		kill -0 "$proxyd_pid" 2>/dev/null || break
		sleep 0.2
	done
	kill -KILL "$proxyd_pid" 2>/dev/null
	wait "$proxyd_pid" 2>/dev/null
	proxyd_pid=""
}

cleanup() {
	stop_proxyd
	local f
	# proxyd leaves its workloads running across its own stop (by design).
	for f in "$run"/*.pid; do
		[[ -e $f ]] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	[[ -n $foreign_pid ]] && kill -KILL "$foreign_pid" 2>/dev/null
	if ((failed || keep)); then
		echo "work directory kept: $work (proxyd.log, config, run/*.log, state/)"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
infer_port=$(free_port)
"$py" -c 'import secrets; print(secrets.token_hex(32))' >"$work/token"
chmod 600 "$work/token"
export GPU_CHECK_API="http://127.0.0.1:$api_port" GPU_CHECK_TOKEN_FILE="$work/token" GPU_CHECK_PYTHON=$py
api() { "$py" "$here/api.py" "$@"; }

cmd() { # a TOML argv list for ctl.sh: cmd ACTION KIND [PORT_PLACEHOLDER]
	printf '["%s", "%s", "%s", "%s", "{gpu_uuid}", "{gpu_index}"%s]' "$here/ctl.sh" "$run" "$1" "$2" "${3:+, \"$3\"}"
}
cfg=$work/proxyd.toml
cat >"$cfg" <<EOF
# Written by scripts/gpu-check.sh.
shutdown_timeout = "30s"
[log]
level = "info"
[http]
listen = "127.0.0.1:$api_port"
api_token_file = "$work/token"
[gpu]
backend = "nvml"
poll_interval = "500ms"
[switcher]
enabled = true
state_dir = "$work/state"
max_parallel = 8
free_polls = 2
reconcile_interval = "250ms"
status_interval = "2s"
retry_backoff = "30s"
[switcher.timeouts]
stop_miner = "30s"
verify_free = "20s"
start_ai = "5m"
drain_ai = "90s"
restore_mining = "2m"
[switcher.mining]
runtime = "exec"
start_command = $(cmd start miner)
stop_command = $(cmd stop miner)
status_command = $(cmd status miner)
kill_command = $(cmd kill miner)
command_timeout = "30s"
stop_timeout = "60s"
[switcher.workload.infer]
runtime = "exec"
start_command = $(cmd start infer "{port}")
stop_command = $(cmd stop infer "{port}")
status_command = $(cmd status infer "{port}")
kill_command = $(cmd kill infer "{port}")
command_timeout = "30s"
stop_timeout = "60s"
port = $infer_port
readiness = "http"
readiness_path = "/health"
warmup = "openai"
warmup_model = "gpu-check"
warmup_timeout = "30s"
EOF

echo
echo "running (work directory $work):"
t=$(now)
if [[ -z $proxyd_bin ]]; then
	proxyd_bin=$work/proxyd
	if ! out=$(cd "$repo" && go build -o "$proxyd_bin" ./cmd/proxyd 2>&1); then
		fail "build proxyd" "$(since "$t")" "$out"
		table
		exit 1
	fi
	pass "build proxyd" "$(since "$t")"
fi
if ! out=$("$proxyd_bin" check-config --config "$cfg" 2>&1); then
	fail "the generated config passes check-config" "" "$out"
	table
	exit 1
fi
if ! seen=$("$proxyd_bin" gpus --backend nvml --json 2>&1) ||
	! n=$("$py" -c 'import json, sys; print(len(json.load(sys.stdin)["gpus"]))' <<<"$seen" 2>/dev/null); then
	fail "proxyd gpus sees the GPUs through NVML" "" "$(head -n 3 <<<"$seen")"
	table
	exit 1
elif [[ $n != "$gpu_count" ]]; then
	fail "proxyd gpus sees the GPUs through NVML" "" "proxyd sees $n, nvidia-smi $gpu_count"
else
	pass "proxyd gpus sees the GPUs through NVML" "" "$n GPU(s)"
fi

start_proxyd() {
	"$proxyd_bin" run --config "$cfg" >>"$work/proxyd.log" 2>&1 &
	proxyd_pid=$!
}

# gpu_pids: the PIDs nvidia-smi lists on the chosen GPU, one a line.
gpu_pids() {
	nvidia-smi --query-compute-apps=gpu_uuid,pid --format=csv,noheader 2>/dev/null |
		awk -F', *' -v u="$gpu_uuid" '$1 == u { print $2 }' | sort -n
}
on_gpu() { gpu_pids | grep -qx "$1"; }
pidof_workload() { cat "$run/$1-$gpu_index.pid" 2>/dev/null; }
alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }
gone() { ! alive "$1"; }
off_gpu() { ! on_gpu "$1"; }

# wait_for SECONDS COMMAND...: runs COMMAND every 0.25s until it succeeds;
# prints the seconds it took; fails after SECONDS.
wait_for() {
	local limit=$1 t0
	shift
	t0=$(now)
	while ! "$@"; do
		if awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
			return 1
		fi
		sleep 0.25
	done
	since "$t0"
}

owner_of() { # PID: the owner proxyd attributes it to ("n/a" where it does not attribute; "" not listed)
	api procs "$gpu_uuid" | awk -v p="$1" '$1 == p { print $2 }'
}

check_owner() { # NAME PID WANT
	local o
	o=$(owner_of "$2")
	case $o in
	n/a) na "$1" "this proxyd shows no owner for GPU processes" ;;
	"") fail "$1" "" "pid $2 is not among the GPU's processes in /api/v1/gpus" ;;
	*"$3"*) pass "$1" "" "pid $2: $o" ;;
	*) fail "$1" "" "pid $2: owner $o, want $3" ;;
	esac
}

state() { api state "$gpu_uuid" | cut -f1; }

phase_mining() {
	local t took mpid
	t=$(now)
	start_proxyd
	if ! took=$(api ready 60); then
		fail "proxyd ready (/readyz 200)" "" "$took"
		return 1
	fi
	pass "proxyd ready (/readyz 200)" "$took"
	local uuid
	uuid=$(api uuid "$gpu_index")
	if [[ $uuid != "$gpu_uuid" ]]; then
		fail "proxyd's GPU $gpu_index is nvidia-smi's" "" "proxyd: $uuid, nvidia-smi: $gpu_uuid"
		return 1
	fi
	if ! took=$(api wait-state "$gpu_uuid" MINING 180); then
		fail "GPU $gpu_index MINING after start" "" "$took"
		return 1
	fi
	pass "GPU $gpu_index MINING after start" "$(since "$t")"
	mpid=$(pidof_workload miner)
	if took=$(wait_for 120 on_gpu "$mpid"); then
		pass "the miner's process on GPU $gpu_index (nvidia-smi)" "$took" "pid $mpid, ${took}s after MINING"
	else
		fail "the miner's process on GPU $gpu_index (nvidia-smi)" "" "pid $mpid never listed; nvidia-smi lists: $(gpu_pids | tr '\n' ' ')(another PID namespace?)"
		return 1
	fi
	check_owner "owner of the miner in /api/v1/gpus" "$mpid" mining
}

serve_and_end() { # CONTRACT LABEL
	local id=$1 label=$2 t took ipid mpid out
	t=$(now)
	if ! out=$(api contract-put "$id" "$gpu_uuid" infer); then
		fail "$label: PUT contract" "" "$out"
		return 1
	fi
	if ! took=$(api wait-state "$gpu_uuid" SERVING_AI 360 QUARANTINED); then
		fail "$label: contract -> SERVING_AI" "" "$took"
		return 1
	fi
	pass "$label: contract -> SERVING_AI" "$(since "$t")"
	ipid=$(pidof_workload infer)
	mpid=$(pidof_workload miner)
	local pids
	pids=$(gpu_pids | tr '\n' ' ')
	if [[ $pids == "$ipid " ]] && ! alive "$mpid"; then
		pass "$label: only the inference server on GPU $gpu_index" "" "pid $ipid"
	else
		fail "$label: only the inference server on GPU $gpu_index" "" "nvidia-smi lists: $pids; server pid $ipid, miner pid $mpid ($(alive "$mpid" && echo alive || echo gone))"
	fi
	t=$(now)
	if out=$("$py" - "$infer_port" <<'EOF'
import json, sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:%s/v1/completions" % sys.argv[1], method="POST",
    data=json.dumps({"model": "gpu-check", "prompt": "Stratum and GPUs", "max_tokens": 8}).encode(),
    headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    print(repr(json.load(r)["choices"][0]["text"]))
EOF
	); then
		pass "$label: a completion from the server" "$(since "$t")" "8 tokens: $out"
	else
		fail "$label: a completion from the server" "" "$(tail -n 1 <<<"$out")"
	fi
	check_owner "$label: owner of the server in /api/v1/gpus" "$ipid" "ai"
	t=$(now)
	if ! out=$(api contract-delete "$id"); then
		fail "$label: DELETE contract" "" "$out"
		return 1
	fi
	if ! took=$(api wait-state "$gpu_uuid" MINING 300 QUARANTINED); then
		fail "$label: contract end -> MINING" "" "$took"
		return 1
	fi
	pass "$label: contract end -> MINING" "$(since "$t")"
	mpid=$(pidof_workload miner)
	if took=$(wait_for 120 on_gpu "$mpid"); then
		pass "$label: the miner back on GPU $gpu_index (nvidia-smi)" "$took" "pid $mpid, ${took}s after MINING"
	else
		fail "$label: the miner back on GPU $gpu_index (nvidia-smi)" "" "pid $mpid never listed"
		return 1
	fi
	if alive "$ipid"; then
		fail "$label: the inference server is gone" "" "pid $ipid still runs"
	fi
}

phase_linger_foreign() {
	local t took mpid out
	touch "$run/linger" # the miner now ignores SIGTERM and its stop command lies
	: >"$work/foreign.signals"
	CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=$gpu_uuid "$py" -u "$here/foreign.py" --signals-file "$work/foreign.signals" \
		--ready-file "$work/foreign.ready" >"$work/foreign.log" 2>&1 &
	foreign_pid=$!
	if ! took=$(wait_for 120 on_gpu "$foreign_pid"); then
		fail "a foreign process on GPU $gpu_index" "" "pid $foreign_pid never listed by nvidia-smi ($(tail -n 1 "$work/foreign.log"))"
		return 1
	fi
	pass "a foreign process on GPU $gpu_index" "$took" "pid $foreign_pid"
	check_owner "owner of the foreign process in /api/v1/gpus" "$foreign_pid" foreign
	mpid=$(pidof_workload miner)
	t=$(now)
	if ! out=$(api contract-put linger "$gpu_uuid" infer); then
		fail "linger: PUT contract" "" "$out"
		return 1
	fi
	if took=$(wait_for 240 gone "$mpid"); then
		pass "linger: proxyd killed its own lingering miner" "$took" "pid $mpid; its stop command had said \"stopped\""
	else
		fail "linger: proxyd killed its own lingering miner" "" "pid $mpid still runs 240s after the contract: $(api state "$gpu_uuid")"
	fi
	if ! took=$(api wait-state "$gpu_uuid" QUARANTINED 240 STARTING_AI,SERVING_AI); then
		fail "linger: the foreign process keeps GPU $gpu_index QUARANTINED" "" "$took"
		return 1
	fi
	local reason
	reason=$(api state "$gpu_uuid" | cut -f2-)
	if [[ $reason == *"$foreign_pid"* ]]; then
		pass "linger: the foreign process keeps GPU $gpu_index QUARANTINED" "$(since "$t")" "$reason"
	else
		fail "linger: the foreign process keeps GPU $gpu_index QUARANTINED" "$(since "$t")" "the reason does not name pid $foreign_pid: $reason"
	fi
	sleep 5 # give a wrong escalation time to show
	if alive "$foreign_pid" && [[ ! -s $work/foreign.signals ]]; then
		pass "linger: the foreign process was never signalled" "" "pid $foreign_pid alive, no signal received"
	else
		fail "linger: the foreign process was never signalled" "" "alive: $(alive "$foreign_pid" && echo yes || echo no); signals: $(tr '\n' ' ' <"$work/foreign.signals")"
	fi
	if [[ $(state) != QUARANTINED ]]; then
		fail "linger: GPU $gpu_index stays QUARANTINED while the foreign process runs" "" "$(api state "$gpu_uuid")"
	fi
	# The operator's part: the foreign process goes, the GPU is resumed.
	kill -KILL "$foreign_pid" 2>/dev/null
	wait "$foreign_pid" 2>/dev/null
	wait_for 60 off_gpu "$foreign_pid" >/dev/null
	foreign_pid=""
	rm -f "$run/linger"
	t=$(now)
	if ! out=$(api resume "$gpu_uuid"); then
		fail "linger: resume after the foreign process left" "" "$out"
		return 1
	fi
	if ! took=$(api wait-state "$gpu_uuid" SERVING_AI 360 QUARANTINED); then
		fail "linger: resume -> SERVING_AI" "" "$took"
		return 1
	fi
	pass "linger: resume -> SERVING_AI" "$(since "$t")"
	t=$(now)
	api contract-delete linger >/dev/null
	if ! took=$(api wait-state "$gpu_uuid" MINING 300 QUARANTINED); then
		fail "linger: contract end -> MINING" "" "$took"
		return 1
	fi
	pass "linger: contract end -> MINING" "$(since "$t")"
}

phase_kill9() {
	local mpid boot durable took t
	IFS=$'\t' read -r durable boot _ <<<"$(api journal)"
	mpid=$(pidof_workload miner)
	wait_for 60 on_gpu "$mpid" >/dev/null
	kill -KILL "$proxyd_pid"
	wait "$proxyd_pid" 2>/dev/null
	proxyd_pid=""
	t=$(now)
	start_proxyd
	if ! took=$(api ready 60); then
		fail "kill -9: proxyd ready again" "" "$took"
		return 1
	fi
	if ! took=$(api wait-state "$gpu_uuid" MINING 180); then
		fail "kill -9: GPU $gpu_index MINING after the restart" "" "$took"
		return 1
	fi
	sleep 5 # a second miner would show by now
	local pids
	pids=$(gpu_pids | tr '\n' ' ')
	if [[ $pids == "$mpid " && $(pidof_workload miner) == "$mpid" ]]; then
		pass "kill -9: the miner adopted, no second one" "$(since "$t")" "pid $mpid"
	else
		fail "kill -9: the miner adopted, no second one" "" "nvidia-smi lists: $pids; the miner was pid $mpid, now $(pidof_workload miner)"
	fi
	case $durable in
	true)
		local n
		n=$(api events-of-boot "$boot")
		if ((n > 0)); then
			pass "kill -9: the events journal kept the earlier boot" "" "$n events of boot $boot"
		else
			fail "kill -9: the events journal kept the earlier boot" "" "no events of boot $boot after the restart"
		fi
		;;
	false) fail "kill -9: the events journal kept the earlier boot" "" "the journal is not durable" ;;
	*) na "kill -9: the events journal kept the earlier boot" "this proxyd has no durable journal" ;;
	esac
}

phase_mining && serve_and_end plain "round trip" && phase_linger_foreign && phase_kill9
if [[ -n $proxyd_pid ]] && kill -0 "$proxyd_pid" 2>/dev/null; then
	echo
	echo "GPU $gpu_index's transitions (from the events journal):"
	api transitions "$gpu_uuid"
fi
table
if ((failed)); then
	echo
	echo "gpu-check: FAILED (proxyd's log: $work/proxyd.log)"
	exit 1
fi
echo
echo "gpu-check: all passed"
