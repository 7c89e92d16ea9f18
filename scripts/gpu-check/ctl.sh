#!/usr/bin/env bash
# The exec-runtime commands of scripts/gpu-check.sh's stand-in workloads:
#
#   ctl.sh RUN_DIR start|status|stop|kill miner|infer GPU_UUID GPU_INDEX [PORT]
#
# start launches the stand-in (python3 from $GPU_CHECK_PYTHON) on the GPU named
# by UUID and returns at once; status exits 0 while it runs; stop sends SIGTERM
# and waits for the exit, except for a miner while RUN_DIR/linger exists: then
# it returns 0 at once without checking (a stop command that lies) and the
# miner ignores SIGTERM; kill sends SIGKILL and waits. The stand-in stays in
# start's process group and keeps its environment. GPU_CHECK_MINER_MIB,
# GPU_CHECK_MINER_SIZE, GPU_CHECK_INFER_MIB and GPU_CHECK_INFER_LAYERS size the
# stand-ins; GPU_CHECK_DEVICE=cpu runs them without a GPU (a self-test only).
set -u
if (($# < 5)); then
	echo "usage: ctl.sh RUN_DIR start|status|stop|kill miner|infer GPU_UUID GPU_INDEX [PORT]" >&2
	exit 2
fi
run=$1 action=$2 kind=$3 uuid=$4 index=$5 port=${6:-}
here=$(cd "$(dirname "$0")" && pwd)
py=${GPU_CHECK_PYTHON:-python3}
device=${GPU_CHECK_DEVICE:-cuda}
pidfile=$run/$kind-$index.pid

alive() {
	[[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

wait_gone() { # seconds
	local i
	for ((i = 0; i < $1 * 5; i++)); do
		alive || return 0
		sleep 0.2
	done
	return 1
}

case $kind in
miner) args=(--mib "${GPU_CHECK_MINER_MIB:-1024}" --size "${GPU_CHECK_MINER_SIZE:-2048}" --linger-flag "$run/linger") ;;
infer) args=(--port "$port" --model-name gpu-check --kv-mib "${GPU_CHECK_INFER_MIB:-2048}" --layers "${GPU_CHECK_INFER_LAYERS:-12}") ;;
*)
	echo "ctl.sh: unknown workload $kind (miner or infer)" >&2
	exit 2
	;;
esac

case $action in
start)
	if alive; then
		echo "$kind on GPU $index already runs (pid $(cat "$pidfile"))"
		exit 0
	fi
	CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=$uuid nohup "$py" -u "$here/$kind.py" --device "$device" "${args[@]}" \
		>>"$run/$kind-$index.log" 2>&1 </dev/null &
	echo $! >"$pidfile"
	echo "started $kind on GPU $index ($uuid): pid $!"
	;;
status)
	alive
	;;
stop)
	alive || exit 0
	kill -TERM "$(cat "$pidfile")"
	if [[ $kind == miner && -e $run/linger ]]; then
		echo "stopped" # the lie: nothing was checked
		exit 0
	fi
	if wait_gone 60; then
		echo "$kind on GPU $index stopped"
		exit 0
	fi
	echo "$kind on GPU $index (pid $(cat "$pidfile")) still runs 60s after SIGTERM" >&2
	exit 1
	;;
kill)
	alive || exit 0
	kill -KILL "$(cat "$pidfile")"
	if wait_gone 10; then
		echo "$kind on GPU $index killed"
		exit 0
	fi
	echo "$kind on GPU $index (pid $(cat "$pidfile")) survives SIGKILL (stuck in the driver?)" >&2
	exit 1
	;;
*)
	echo "ctl.sh: unknown action $action (start, status, stop, kill)" >&2
	exit 2
	;;
esac
