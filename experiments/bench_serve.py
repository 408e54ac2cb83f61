r"""Load benchmark of the server: 1 / 8 / 32 concurrent streaming clients against continuous batching.

  python -m experiments.bench_serve                                  # tiny preset, random weights (a few minutes)
  python -m experiments.bench_serve --workdir=runs/sft --clients=1,8,32 --repeats=3
  python -m experiments.bench_serve --compare=false                  # continuous batching only

Starts the server in-process on 127.0.0.1 (a free port, uvicorn in a thread) and drives it with httpx's asyncio
client. Closed loop: each of C clients sends --requests streaming /v1/completions requests one after another, each
asking for a max_tokens drawn from [--min_tokens, --max_tokens] (mixed lengths are what continuous batching is for:
a call-at-a-time server makes every row of a call wait for its longest one, and newcomers for the whole call).
Random weights decode a near-uniform distribution at temperature 1, so rows run to their max_tokens.

Per level: total generated tokens / wall time, p50 / p95 time to first token (request sent -> first text), and
p50 / p95 inter-token latency (a request's first-to-last text time / its tokens - 1). Medians over --repeats.
Then the issue's goals: tokens/s at the most clients / at 1 client >= 5, and p95 TTFT at the most clients <= 2 x p50
TTFT at 1 client + one chunk (a chunk's time measured at that load: chunk_steps x its median inter-token latency).
With --compare the same load also runs against the call-at-a-time batcher (serve.batcher.Batcher), interleaved.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import statistics
import threading
import time

from absl import app
from absl import flags
import jax
import numpy as np

from configs import pretrain
from experiments import bench_sample
from nanolm_jax import engine as engine_lib
from nanolm_jax import metrics
from nanolm_jax import model as model_lib
from nanolm_jax import runs
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.serve import app as app_lib
from nanolm_jax.serve import batcher as batcher_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder to serve (default: the tiny preset, random weights).")
_CLIENTS = flags.DEFINE_list("clients", ["1", "8", "32"], "Concurrent streaming clients per level.")
_REQUESTS = flags.DEFINE_integer("requests", 3, "Requests each client sends, one after another.")
_MIN_TOKENS = flags.DEFINE_integer("min_tokens", 16, "Smallest max_tokens of a request.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 96, "Largest max_tokens of a request.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Repetitions of every level (medians are reported).")
_SLOTS = flags.DEFINE_integer("slots", 32, "Continuous-batching slots.")
_CHUNK = flags.DEFINE_integer("chunk_steps", 4, "Decode steps per chunk.")
_COMPARE = flags.DEFINE_bool("compare", True, "Also run the call-at-a-time batcher on the same load.")

PROMPTS = [
    "The function returns a list of values",
    "A class may define a method named",
    "To open a file for reading, call",
    "The default value of the argument is",
    "An exception is raised when",
    "Iterating over a dictionary gives its",
]


def _random_run() -> runs.Run:
  """The tiny preset with random weights and a small tokenizer trained here on Python's pydoc topics."""
  import pydoc_data.topics  # pylint: disable=g-import-not-at-top

  tok = tokenizer_lib.SentencePieceTokenizer.train(list(pydoc_data.topics.topics.values()), 1024)
  cfg = pretrain.get_config("tiny")
  cfg.model.vocab_size = tok.vocab_size
  model = model_lib.build_model(cfg, None)
  return runs.Run("random_tiny", cfg, model, bench_sample.random_params(model), tok)


class _Server:
  """uvicorn serving an app on a free 127.0.0.1 port from a daemon thread."""

  def __init__(self, app_):
    import uvicorn  # pylint: disable=g-import-not-at-top

    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      self.port = s.getsockname()[1]
    self.url = f"http://127.0.0.1:{self.port}"
    config = uvicorn.Config(app_, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
    self.server = uvicorn.Server(config)
    self.thread = threading.Thread(target=self.server.run, daemon=True)

  def __enter__(self):
    self.thread.start()
    while not self.server.started:
      time.sleep(0.02)
    return self

  def __exit__(self, *exc):
    self.server.should_exit = True
    self.thread.join(30)


async def _request(http, url: str, prompt: str, max_tokens: int) -> dict[str, float]:
  body = {
      "prompt": prompt,
      "max_tokens": max_tokens,
      "temperature": 1.0,
      "stream": True,
      "stream_options": {"include_usage": True},
  }
  t0 = time.perf_counter()
  first = last = None
  tokens = 0
  async with http.stream("POST", url + "/v1/completions", json=body) as r:
    r.raise_for_status()
    async for line in r.aiter_lines():
      if not line.startswith("data: ") or line == "data: [DONE]":
        continue
      obj = json.loads(line[6:])
      if obj.get("usage"):
        tokens = obj["usage"]["completion_tokens"]
      if obj["choices"] and obj["choices"][0]["text"]:
        last = time.perf_counter()
        first = first or last
  first, last = first or time.perf_counter(), last or time.perf_counter()
  return {"ttft": first - t0, "itl": (last - first) / max(tokens - 1, 1), "tokens": tokens}


async def _level(url: str, clients: int, rep: int) -> dict[str, float]:
  """One run of `clients` closed-loop clients; tokens/s and latency percentiles."""
  import httpx  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(1000 * clients + rep)
  plan = [
      [
          (PROMPTS[(c + k) % len(PROMPTS)], int(rng.integers(_MIN_TOKENS.value, _MAX_TOKENS.value + 1)))
          for k in range(_REQUESTS.value)
      ]
      for c in range(clients)
  ]

  async def client(http, c):
    # Unseeded: the call-at-a-time batcher runs a seeded request as a call of its own.
    return [await _request(http, url, p, m) for p, m in plan[c]]

  limits = httpx.Limits(max_connections=clients + 8)
  async with httpx.AsyncClient(timeout=httpx.Timeout(600), limits=limits) as http:
    t0 = time.perf_counter()
    results = [x for xs in await asyncio.gather(*(client(http, c) for c in range(clients))) for x in xs]
    wall = time.perf_counter() - t0
  ttft, itl = [r["ttft"] for r in results], [r["itl"] for r in results if r["tokens"] > 1]
  return {
      "tokens_per_s": sum(r["tokens"] for r in results) / wall,
      "ttft_p50": float(np.percentile(ttft, 50)),
      "ttft_p95": float(np.percentile(ttft, 95)),
      "itl_p50": float(np.percentile(itl, 50)),
      "itl_p95": float(np.percentile(itl, 95)),
  }


def _app(run: runs.Run, continuous: bool):
  limits = app_lib.Limits(
      max_tokens_limit=max(_MAX_TOKENS.value, 16),
      max_batch=_SLOTS.value,
      max_queue=4096,
      slots=_SLOTS.value,
      chunk_steps=_CHUNK.value,
      batch_wait_s=0.01,
  )
  if continuous:
    return app_lib.create_app(run, limits)
  engine = engine_lib.Engine(run.model, run.params, run.tokenizer, chunk_steps=_CHUNK.value)
  return app_lib.create_app(run, limits, backend=batcher_lib.EngineBackend(engine))


def _report(name: str, table: dict[int, list[dict[str, float]]]) -> dict[int, dict[str, float]]:
  med = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in table.items()}
  print(f"\n{name}: medians of {_REPEATS.value} runs (contended CPU)")
  print(f"{'clients':>8} {'tokens/s':>10} {'TTFT p50':>10} {'TTFT p95':>10} {'ITL p50':>10} {'ITL p95':>10}")
  for c, m in med.items():
    print(
        f"{c:>8} {m['tokens_per_s']:>10.1f} {1e3 * m['ttft_p50']:>8.1f}ms {1e3 * m['ttft_p95']:>8.1f}ms "
        f"{1e3 * m['itl_p50']:>8.2f}ms {1e3 * m['itl_p95']:>8.2f}ms"
    )
  lo, hi = min(med), max(med)
  chunk_s = _CHUNK.value * med[hi]["itl_p50"]
  ratio = med[hi]["tokens_per_s"] / med[lo]["tokens_per_s"]
  bound = 2 * med[lo]["ttft_p50"] + chunk_s
  print(f"  goal 1: tokens/s at {hi} / at {lo} clients = {ratio:.2f} (goal >= 5: {'met' if ratio >= 5 else 'NOT met'})")
  print(
      f"  goal 2: p95 TTFT at {hi} = {1e3 * med[hi]['ttft_p95']:.1f} ms vs 2 x p50 TTFT at {lo} + one chunk "
      f"({1e3 * chunk_s:.1f} ms) = {1e3 * bound:.1f} ms ({'met' if med[hi]['ttft_p95'] <= bound else 'NOT met'})"
  )
  return med


def main(argv):
  del argv
  metrics.quiet_library_logs()
  logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
  print(f"jax {jax.__version__} on {jax.default_backend()}, {jax.device_count()} device(s)")
  run = runs.load_run(_WORKDIR.value) if _WORKDIR.value else _random_run()
  print(
      f"model {run.workdir}: {run.model.cfg.num_layers} layers, d_model {run.model.cfg.d_model}, "
      f"context {run.model.cfg.max_len}; {_SLOTS.value} slots, chunk {_CHUNK.value} steps"
  )
  clients = [int(c) for c in _CLIENTS.value]
  modes = {"continuous": True} | ({"call-at-a-time": False} if _COMPARE.value else {})
  servers = {name: _Server(_app(run, cont)).__enter__() for name, cont in modes.items()}
  try:
    # Compiles: every batch size (powers of two up to the most clients), then the levels once more.
    warm = [1 << i for i in range(max(clients).bit_length())] + clients
    for name, s in servers.items():
      for c in warm:
        asyncio.run(_level(s.url, c, -1 - c))
      print(f"warmed up {name}")
    tables = {name: {c: [] for c in clients} for name in modes}
    for rep in range(_REPEATS.value):  # interleaved, so that contention hits both alike
      for c in clients:
        for name, s in servers.items():
          tables[name][c].append(asyncio.run(_level(s.url, c, rep)))
    meds = {name: _report(name, t) for name, t in tables.items()}
    if len(meds) == 2:
      hi = max(clients)
      a, b = meds["continuous"][hi], meds["call-at-a-time"][hi]
      print(
          f"\ncontinuous / call-at-a-time at {hi} clients: tokens/s x{a['tokens_per_s'] / b['tokens_per_s']:.2f}, "
          f"p95 TTFT x{a['ttft_p95'] / b['ttft_p95']:.2f}"
      )
  finally:
    for s in servers.values():
      s.__exit__(None, None, None)


if __name__ == "__main__":
  app.run(main)
