r"""Serve a run folder over an OpenAI-compatible API, with a web chat at /.

  python -m experiments.serve --workdir=runs/pretrain_tiny                  # http://127.0.0.1:8000/
  python -m experiments.serve --workdir=runs/sft --port=8080 --slots=64 --max_tokens_limit=1024

  curl -s 127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 32}'

Binds 127.0.0.1 unless --host says otherwise; there is no authentication, so think before --host=0.0.0.0.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from nanolm_jax import fs
from nanolm_jax import metrics
from nanolm_jax import runs

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder to serve.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to bind.")
_PORT = flags.DEFINE_integer("port", 8000, "Port to bind.")
_MODEL_ID = flags.DEFINE_string("model_id", None, "Model id in the API (default: the run folder's name).")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens_limit", 512, "Largest max_tokens a request may ask for.")
_MAX_PROMPT = flags.DEFINE_integer("max_prompt_tokens", None, "Longest prompt in tokens (default: context - 1).")
_MAX_QUEUE = flags.DEFINE_integer("max_queue", 256, "Completions waiting before requests get 429.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 16, "Completions per request.")
_SLOTS = flags.DEFINE_integer("slots", 32, "Rows decoding at once (continuous batching; more wait in the queue).")
_KEEPALIVE = flags.DEFINE_float("keepalive_s", 10.0, "Idle seconds before an SSE stream gets a keep-alive comment.")
_MAX_BODY = flags.DEFINE_integer("max_body_bytes", 1 << 20, "Largest request body.")
_TIMEOUT = flags.DEFINE_float("request_timeout_s", 300.0, "Time limit for one request, queueing included.")
_CHUNK = flags.DEFINE_integer("chunk_steps", 4, "Decode steps between streamed updates.")
_PAD = flags.DEFINE_bool(
    "pad_to_batch",
    False,
    "Unused by the continuous batcher (kept for scripts): padded engine calls of the call-at-a-time batcher.",
)
_WARMUP = flags.DEFINE_bool("warmup", True, "Compile the common shapes before accepting requests.")


def main(argv):
  del argv
  metrics.quiet_library_logs()
  import uvicorn  # pylint: disable=g-import-not-at-top
  from nanolm_jax.serve import app as app_lib  # pylint: disable=g-import-not-at-top

  for flag, value, lo in (
      (_MAX_TOKENS, _MAX_TOKENS.value, 1),
      (_MAX_QUEUE, _MAX_QUEUE.value, 1),
      (_MAX_BATCH, _MAX_BATCH.value, 1),
      (_MAX_BODY, _MAX_BODY.value, 1024),
      (_CHUNK, _CHUNK.value, 1),
      (_SLOTS, _SLOTS.value, 1),
      (_PORT, _PORT.value, 0),
  ):
    if value < lo:
      sys.exit(f"error: --{flag.name} must be >= {lo}, got {value}")
  try:
    run = runs.load_run(_WORKDIR.value, _STEP.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  limits = app_lib.Limits(
      max_tokens_limit=_MAX_TOKENS.value,
      max_prompt_tokens=_MAX_PROMPT.value,
      max_batch=_MAX_BATCH.value,
      max_queue=_MAX_QUEUE.value,
      max_body_bytes=_MAX_BODY.value,
      request_timeout_s=_TIMEOUT.value,
      chunk_steps=_CHUNK.value,
      pad_to_batch=_PAD.value,
      slots=_SLOTS.value,
      keepalive_s=_KEEPALIVE.value,
  )
  app_ = app_lib.create_app(run, limits, model_id=_MODEL_ID.value)
  if _WARMUP.value:
    logging.info("warming up (compiling the first shapes)...")
    app_lib.warmup(app_)
  logging.info(
      "serving %s (%s) on http://%s:%d/", app_.state.model_id, fs.abspath(_WORKDIR.value), _HOST.value, _PORT.value
  )
  # limit_concurrency bounds open connections (503 past it) on top of the queue's 429.
  uvicorn.run(
      app_,
      host=_HOST.value,
      port=_PORT.value,
      log_level="info",
      timeout_keep_alive=5,
      limit_concurrency=_MAX_QUEUE.value + 64,
      timeout_graceful_shutdown=10,
  )


if __name__ == "__main__":
  app.run(main)
