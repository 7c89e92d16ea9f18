#!/usr/bin/env python3
"""proxyd API helper for scripts/gpu-check.sh (python3 standard library only).

The API's address and token come from $GPU_CHECK_API (http://127.0.0.1:PORT)
and $GPU_CHECK_TOKEN_FILE. Each command prints one result on stdout; a failed
wait exits 1 and says on stdout what the GPU was doing instead.
"""
import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.request


def call(method, path, body=None, auth=True):
    req = urllib.request.Request(os.environ["GPU_CHECK_API"] + path, method=method)
    if auth:
        with open(os.environ["GPU_CHECK_TOKEN_FILE"]) as f:
            req.add_header("Authorization", "Bearer " + f.read().strip())
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data=data, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def get(path):
    code, body = call("GET", path)
    if code != 200:
        raise SystemExit("GET %s: %d %s" % (path, code, body[:300]))
    return json.loads(body)


def gpus():
    return get("/api/v1/gpus")["gpus"]


def gpu(uuid):
    for g in gpus():
        if g["uuid"] == uuid:
            return g
    raise SystemExit("GPU %s is not in /api/v1/gpus" % uuid)


def switch(g):
    s = g.get("switch") or {}
    return s.get("state", "?"), s.get("reason", ""), s.get("message", "")


def procs(g):
    t = g.get("telemetry") or {}
    out = {}
    for p in (t.get("compute_processes") or []) + (t.get("graphics_processes") or []):
        out[p["pid"]] = p
    return list(out.values())


def owner(p):
    """The owner proxyd attributes a process to, or n/a where it does not."""
    o = p.get("owner")
    if o is None:
        return "n/a"
    if isinstance(o, dict):
        return ",".join("%s=%s" % (k, v) for k, v in sorted(o.items()) if v not in ("", None))
    return str(o)


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "ready":  # TIMEOUT: wait for /readyz 200
        deadline, t0, last = time.time() + float(args[0]), time.time(), ""
        while time.time() < deadline:
            try:
                code, body = call("GET", "/readyz", auth=False)
                if code == 200:
                    print("%.1f" % (time.time() - t0))
                    return 0
                last = body
            except OSError as e:
                last = str(e)
            time.sleep(0.25)
        print("not ready: %s" % last[:300])
        return 1
    if cmd == "uuid":  # INDEX
        for g in gpus():
            if g["index"] == int(args[0]):
                print(g["uuid"])
                return 0
        print("no GPU with index %s in /api/v1/gpus" % args[0])
        return 1
    if cmd == "state":  # UUID
        print("%s\t%s\t%s" % switch(gpu(args[0])))
        return 0
    if cmd == "wait-state":  # UUID STATE TIMEOUT [FAIL_STATES,...]
        uuid, want, timeout = args[0], args[1], float(args[2])
        bad = set(args[3].split(",")) if len(args) > 3 and args[3] else set()
        t0 = time.time()
        while True:
            try:
                state, reason, msg = switch(gpu(uuid))
            except OSError as e:  # proxyd restarting or gone: keep trying until the timeout
                state, reason, msg = "unreachable", "", str(e)
            if state == want:
                print("%.1f" % (time.time() - t0))
                return 0
            if state in bad or time.time() - t0 > timeout:
                print("%s after %.0fs (%s: %s)" % (state, time.time() - t0, reason, msg))
                return 1
            time.sleep(0.25)
    if cmd == "procs":  # UUID: "pid owner" per process proxyd sees on the GPU
        for p in procs(gpu(args[0])):
            print("%d\t%s" % (p["pid"], owner(p)))
        return 0
    if cmd == "contract-put":  # ID UUID WORKLOAD
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        body = {"gpus": 1, "start": (now - datetime.timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
                "end": (now + datetime.timedelta(hours=2)).isoformat().replace("+00:00", "Z"),
                "price_usd_per_gpu_hour": 10, "priority": 10, "workload": args[2], "pin": [args[1]]}
        code, resp = call("PUT", "/api/v1/contracts/" + args[0], body)
        print("%d %s" % (code, resp.replace("\n", " ")[:300]))
        return 0 if code in (200, 201) else 1
    if cmd == "contract-delete":  # ID
        code, resp = call("DELETE", "/api/v1/contracts/" + args[0])
        print("%d %s" % (code, resp.replace("\n", " ")[:300]))
        return 0 if code == 200 else 1
    if cmd == "resume":  # UUID
        code, resp = call("POST", "/api/v1/gpus/%s/resume" % args[0])
        print("%d %s" % (code, resp.replace("\n", " ")[:300]))
        return 0 if code == 200 else 1
    if cmd == "journal":  # "durable boot events"
        a = get("/api/v1/events?limit=1")
        st = a.get("journal") or {}
        print("%s\t%s\t%s" % (str(a.get("durable", "n/a")).lower(), a.get("boot", "n/a"), st.get("events", "n/a")))
        return 0
    if cmd == "events-of-boot":  # BOOT: how many events that boot recorded are still served
        evs = get("/api/v1/events?limit=4096")["events"]
        print(sum(1 for e in evs if e.get("boot") == args[0]))
        return 0
    if cmd == "transitions":  # UUID: the GPU's transitions, with the time spent in each state
        evs = get("/api/v1/events?component=switcher&subject=%s&limit=4096" % args[0])["events"]
        prev = None
        for e in evs:
            if e.get("kind") != "transition":
                continue
            t = datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
            spent = "" if prev is None else "%6.1fs in %s" % ((t - prev).total_seconds(), e.get("from"))
            print("  %s  %-16s -> %-16s %-22s %s" % (t.strftime("%H:%M:%S.%f")[:-3], e.get("from") or "-", e.get("to"),
                                                     e.get("reason"), spent))
            prev = t
        return 0
    raise SystemExit("unknown command %s" % cmd)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except OSError as e:
        print("proxyd's API at %s does not answer: %s" % (os.environ.get("GPU_CHECK_API"), e))
        sys.exit(1)
