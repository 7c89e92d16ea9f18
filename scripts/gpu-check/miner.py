#!/usr/bin/env python3
"""Stand-in GPU miner for scripts/gpu-check.sh.

Holds --mib of memory on the GPU that CUDA_VISIBLE_DEVICES names and keeps it
busy with matrix products, as a miner would, until SIGTERM. While the file
--linger-flag exists it ignores SIGTERM, like a miner that will not stop:
only SIGKILL ends it then. Needs torch; --device cpu runs it without a GPU
(for a self-test of the scripts only).
"""
import argparse
import os
import signal
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=1024, help="GPU memory to hold")
    ap.add_argument("--linger-flag", default="", help="ignore SIGTERM while this file exists")
    ap.add_argument("--size", type=int, default=2048, help="side of the matrices multiplied")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args()

    stop = []

    def on_term(signum, frame):
        if args.linger_flag and os.path.exists(args.linger_flag):
            print("miner: SIGTERM ignored (%s exists)" % args.linger_flag, flush=True)
            return
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_term)

    import torch  # after the handler: a slow import must not miss a stop

    if args.device == "cuda" and not torch.cuda.is_available():
        print("miner: torch sees no CUDA GPU (CUDA_VISIBLE_DEVICES=%s)" % os.environ.get("CUDA_VISIBLE_DEVICES", ""),
              file=sys.stderr, flush=True)
        sys.exit(3)
    dev = torch.device(args.device)
    hold = torch.zeros(args.mib << 20, dtype=torch.uint8, device=dev)
    a = torch.randn(args.size, args.size, device=dev)
    b = torch.randn(args.size, args.size, device=dev)
    print("miner: pid %d holds %d MiB on %s (CUDA_VISIBLE_DEVICES=%s)" % (
        os.getpid(), args.mib, dev, os.environ.get("CUDA_VISIBLE_DEVICES", "")), flush=True)
    rounds, t0 = 0, time.time()
    while not stop:
        a = (a @ b).clamp_(-1, 1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rounds += 1
        if rounds % 500 == 0:
            print("miner: %d rounds, %.0f/s" % (rounds, rounds / (time.time() - t0)), flush=True)
        time.sleep(0.005)  # a light load: this is a check, not a benchmark
    del hold
    print("miner: stopped by signal %d after %d rounds" % (stop[0], rounds), flush=True)


if __name__ == "__main__":
    main()
