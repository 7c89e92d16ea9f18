#!/usr/bin/env python3
"""A process proxyd does not own, for scripts/gpu-check.sh.

Holds --mib of memory on the GPU that CUDA_VISIBLE_DEVICES names and waits.
Every catchable signal it gets is written to --signals-file and otherwise
ignored, so the check can tell whether anyone (proxyd must not) tried to stop
it; the check ends it itself with SIGKILL.
"""
import argparse
import os
import signal
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--signals-file", required=True)
    ap.add_argument("--ready-file", required=True, help="written once the memory is held")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args()

    def note(signum, frame):
        with open(args.signals_file, "a") as f:
            f.write("%d %s\n" % (signum, signal.Signals(signum).name))

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, note)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("foreign: torch sees no CUDA GPU", file=sys.stderr, flush=True)
        sys.exit(3)
    hold = torch.ones(args.mib << 20, dtype=torch.uint8, device=torch.device(args.device))
    if args.device == "cuda":
        torch.cuda.synchronize()
    with open(args.ready_file, "w") as f:
        f.write("%d\n" % os.getpid())
    print("foreign: pid %d holds %d MiB" % (os.getpid(), args.mib), flush=True)
    while True:
        time.sleep(1)
        hold[0] = 1


if __name__ == "__main__":
    main()
