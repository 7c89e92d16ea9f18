#!/usr/bin/env python3
"""Stand-in inference server for scripts/gpu-check.sh, shaped like vLLM.

Loads a small randomly initialised transformer (no download) onto the GPU that
CUDA_VISIBLE_DEVICES names, then serves on 127.0.0.1:--port:

  GET  /health          503 while loading, 200 once the model is on the GPU
  POST /v1/completions  {"model", "prompt", "max_tokens"} -> an OpenAI-style
                        completion computed on the GPU; 404 for another model

SIGTERM stops it cleanly. Needs torch; --device cpu is for a self-test of the
scripts only.
"""
import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_TOKENS = 64
MAX_BODY = 1 << 20


class Model:
    def __init__(self, torch, device, d_model, layers, kv_mib):
        torch.manual_seed(0)
        nn = torch.nn
        self.torch = torch
        self.device = device
        self.embed = nn.Embedding(256, d_model).to(device)
        layer = nn.TransformerEncoderLayer(d_model, nhead=8, dim_feedforward=4 * d_model, batch_first=True)
        self.body = nn.TransformerEncoder(layer, num_layers=layers).to(device).eval()
        self.head = nn.Linear(d_model, 256).to(device)
        # Stands for a server's KV cache: memory held from start to end.
        self.cache = torch.zeros(kv_mib << 20, dtype=torch.uint8, device=device)
        self.lock = threading.Lock()

    def complete(self, prompt, max_tokens):
        torch = self.torch
        ids = list(prompt.encode("utf-8")[-512:]) or [32]
        out = []
        with self.lock, torch.no_grad():
            for _ in range(max_tokens):
                x = torch.tensor([ids], device=self.device)
                h = self.body(self.embed(x))
                nxt = int(self.head(h[0, -1]).argmax())
                nxt = 32 + nxt % 95  # printable ASCII
                ids.append(nxt)
                out.append(nxt)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
        return bytes(out).decode("ascii")


class Handler(BaseHTTPRequestHandler):
    server_version = "gpu-check-infer/1"

    def log_message(self, fmt, *args):
        sys.stdout.write("infer: %s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            if self.server.model is None:
                self.reply(503, {"status": "loading"})
            else:
                self.reply(200, {"status": "ok"})
            return
        self.reply(404, {"error": "no route %s" % self.path})

    def do_POST(self):
        if self.path != "/v1/completions":
            self.reply(404, {"error": "no route %s" % self.path})
            return
        model = self.server.model
        if model is None:
            self.reply(503, {"error": {"message": "the model is still loading"}})
            return
        try:
            n = int(self.headers.get("Content-Length", "0"))
            if n <= 0 or n > MAX_BODY:
                raise ValueError("body of %d bytes" % n)
            req = json.loads(self.rfile.read(n))
            if not isinstance(req, dict):
                raise ValueError("the body is not a JSON object")
            prompt = req.get("prompt", "")
            max_tokens = int(req.get("max_tokens", 16))
            if not isinstance(prompt, str) or not 1 <= max_tokens <= MAX_TOKENS:
                raise ValueError("prompt must be a string and max_tokens 1 to %d" % MAX_TOKENS)
        except (ValueError, TypeError) as e:
            self.reply(400, {"error": {"message": "bad request: %s" % e}})
            return
        name = req.get("model")
        if name is not None and name != self.server.model_name:
            self.reply(404, {"error": {"message": "The model `%s` does not exist." % name}})
            return
        t0 = time.time()
        text = model.complete(prompt, max_tokens)
        self.reply(200, {
            "id": "cmpl-gpu-check-%d" % int(t0 * 1000),
            "object": "text_completion",
            "created": int(t0),
            "model": self.server.model_name,
            "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
            "usage": {"prompt_tokens": len(prompt.encode("utf-8")), "completion_tokens": max_tokens},
        })


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model-name", default="gpu-check")
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--kv-mib", type=int, default=2048, help="memory held as a stand-in KV cache")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args()

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    srv.model, srv.model_name = None, args.model_name
    signal.signal(signal.SIGTERM, lambda s, f: threading.Thread(target=srv.shutdown, daemon=True).start())
    t0 = time.time()

    def load():
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            print("infer: torch sees no CUDA GPU", file=sys.stderr, flush=True)
            os._exit(3)
        m = Model(torch, torch.device(args.device), args.d_model, args.layers, args.kv_mib)
        m.complete("warm", 1)
        srv.model = m  # /health answers 200 from here on
        print("infer: pid %d loaded the model in %.1fs" % (os.getpid(), time.time() - t0), flush=True)

    threading.Thread(target=load, daemon=True).start()
    print("infer: pid %d serving on 127.0.0.1:%d (model loading)" % (os.getpid(), args.port), flush=True)
    srv.serve_forever(poll_interval=0.2)
    print("infer: stopped", flush=True)


if __name__ == "__main__":
    main()
