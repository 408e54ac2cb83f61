"""Inference engine: one prefill, then jitted chunks of decode steps against a preallocated, donated KV cache.

Usage (servers, SFT eval, GRPO rollouts, the chat CLI)::

  eng = Engine(run.model, run.params, run.tokenizer, tools=[Calculator()])
  outs = eng.generate([prompt_ids_a, prompt_ids_b], SamplingParams(temperature=1.0, max_new_tokens=256), n=8, seed=0,
                      stop_tokens=chat.stop_tokens(tok))
  outs[i * n + j]      # Completion of sample j of prompt i: tokens, logprobs, generated_mask, text, finish_reason

How it works:
  * Prefill: the *unique* prompts are left-padded into one batch and run once; the cache rows (and last logits) are
    then repeated n times on device, so G samples of a GRPO group share one prefill. All rows write each step's
    token to the same cache slot (one in-place update; padding and the slots of paused or finished rows are marked
    invalid and never attended to, see model.Transformer).
  * Decode: a jitted lax.while_loop of up to `chunk` steps (cache donated, so it is updated in place), exiting early
    when every row has stopped. Between chunks the host streams new tokens, checks stop strings and runs tools (and
    grows the cache when paused rows used up its slots).
  * The cache is float32 on CPU (converting a bfloat16 cache each step cost more than the attention) and the
    model's compute dtype elsewhere; `cache_dtype` overrides. experiments/bench_sample.py measures decode speed.
  * Shapes are bucketed to powers of two (prompt length, batch, cache length, output buffer), and every sampling knob
    is a traced per-row value, so a server's mixed requests reuse a handful of compiled programs.
  * Sampling: temperature (0 = greedy), top-k (0 = off), top-p (1 = off), per prompt (pass a list of
    SamplingParams). The draw for token t of completion r uses key fold_in(fold_in(seed, r), t), so a completion does
    not depend on what else is in the batch, on padding, or on the chunk size. The sampler and the jitted prefill /
    decode programs are in nanolm_jax.sampling; this module is the host side.
  * Stops: `stop_tokens` (kept as the last token: RL trains on the stop), `stop_strings` (host side; tokens are cut
    after the token that completes the string, `text` before the string), `max_new_tokens` (counts every completion
    token, forced tool results included) and the model's context -> finish_reason 'stop' | 'length'.
  * Logprobs: `logprobs[t]` is log p(token_t) under the model's *unfiltered* distribution at temperature 1 — what the
    policy-gradient ratio of RL needs, and independent of the sampler settings. `sampling_logprobs[t]` is under the
    distribution actually sampled from (temperature, top-k, top-p applied; 0.0 for greedy rows). Forced tokens get 0.
  * Tools: when a row samples <|tool_call_end|> it pauses; the host decodes `name: arguments` since
    <|tool_call_start|>, runs the tool (time/size bounded, see nanolm_jax.tools) and forces
    <|tool_result_start|> result <|tool_result_end|> into that row (generated_mask False), which then resumes.
  * Sharding: pass the mesh the Transformer was built with; params are placed by their logical axes and the cache by
    model.cache_axes with the model's rules (batch over data/fsdp, kv heads over tensor), as in training.

Streaming: on_token(row, token, text_delta, generated) is called once per new token, in order per row, after each
chunk. text_delta is the new decoded text (held back while it ends in an incomplete UTF-8 character; specials appear
by name). A stop string that spans two chunks may be partly streamed before it is detected.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nanolm_jax import chat
from nanolm_jax import model as model_lib
from nanolm_jax import sampling as sampling_lib
from nanolm_jax import tokenizer as tokenizer_lib

# The sampler lives in nanolm_jax.sampling; callers keep importing it from here.
SamplingParams = sampling_lib.SamplingParams
filter_logits = sampling_lib.filter_logits
sample_token = sampling_lib.sample_token

OnToken = Callable[[int, int, str, bool], None]


@dataclasses.dataclass
class Completion:
  """One sampled continuation. tokens exclude the prompt; all per-token lists have len(tokens) entries."""

  prompt_index: int
  sample_index: int
  tokens: list[int]
  logprobs: list[float]  # log p under the unfiltered model at temperature 1 (0.0 for forced tokens)
  sampling_logprobs: list[float]  # log p under the filtered sampling distribution (0.0 greedy / forced)
  generated_mask: list[bool]  # False for forced tool-result tokens (mask them out of RL / SFT losses)
  text: str  # decoded tokens (specials by name), cut before a stop string / stop token
  finish_reason: str  # 'stop' (stop token or string) | 'length' (max_new_tokens or context)
  stop: int | str | None = None  # the stop token id or stop string that ended it
  tool_calls: list[dict[str, str]] = dataclasses.field(default_factory=list)  # {"name", "arguments", "result"}
  prompt_tokens: int = 0

  @property
  def truncated(self) -> bool:
    """True when the completion was cut by a length limit rather than ending itself."""
    return self.finish_reason == "length"


# Compiled programs are shared by every Engine of the same model and mesh (a server may build several).
_PROGRAMS: dict[Any, sampling_lib.Programs] = {}


# --- the engine -------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _DecodeCall:
  """One generate call in flight: the jitted loop's state and knobs, and the host's bookkeeping per row.

  Rows are prompt-major (row r is sample r % n of prompt r // n); the batch is padded past `rows` with rows that never
  run, so that its size is one of a few buckets.
  """

  state: dict[str, Any]  # donated to every decode chunk: only the chunk's result may be used afterwards
  knobs: dict[str, jax.Array]
  rows: int
  out_len: int  # output slots per row, also the step by which a full cache grows
  cache_len: int
  steps: int  # decode steps per jitted chunk
  interactive: bool  # the host must look at every chunk (streaming, stop strings, tools)
  seen: list[int] = dataclasses.field(init=False)  # tokens already streamed / checked
  streamed_text: list[str] = dataclasses.field(init=False)
  final_len: list[int | None] = dataclasses.field(init=False)  # set when the host cut a row (stop string)
  stop_what: list[Any] = dataclasses.field(init=False)
  calls: list[list[dict[str, str]]] = dataclasses.field(init=False)

  def __post_init__(self):
    self.seen = [0] * self.rows
    self.streamed_text = [""] * self.rows
    self.final_len = [None] * self.rows
    self.stop_what = [None] * self.rows
    self.calls = [[] for _ in range(self.rows)]


class Engine:
  """Batched sampling with a KV cache, stop conditions, streaming and tool calls. See the module docstring."""

  def __init__(
      self,
      model: model_lib.Transformer,
      params: Any,
      tokenizer: tokenizer_lib.Tokenizer | None = None,
      *,
      mesh: Any = None,
      tools: Any = None,
      chunk_steps: int = 16,
      max_tool_result_tokens: int = 256,
      cache_dtype: str | None = None,
  ):
    if isinstance(params, Mapping) and set(params) == {"params"}:
      params = params["params"]  # accept apply-style {"params": ...} too
    self.model, self.tokenizer, self.mesh = model, tokenizer, mesh
    self.cfg = model.cfg
    self.chunk_steps = int(chunk_steps)
    if cache_dtype is None:
      cache_dtype = "float32" if jax.default_backend() == "cpu" else model.cfg.dtype
    self.cache_dtype = jnp.dtype(cache_dtype).name
    if self.chunk_steps < 1:
      raise ValueError(f"chunk_steps must be >= 1, got {chunk_steps}")
    if mesh is not None and model.mesh is None:
      raise ValueError(
          "Engine(mesh=...) needs a Transformer built with the same mesh and rules (model.build_model(cfg, mesh))"
      )
    if isinstance(tools, Mapping):
      tools = list(tools.values())
    self.tools = {t.name: t for t in (tools or [])}
    if self.tools and tokenizer is None:
      raise ValueError("tools need a tokenizer (to read calls and encode results)")
    self.max_tool_result_tokens = int(max_tool_result_tokens)
    self._batch_multiple = 1
    if mesh is not None:
      params = self._shard_params(params)
      axes = nn.logical_to_mesh_axes(("act_batch",), self._programs_rules())[0]
      axes = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
      self._batch_multiple = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    self.params = params
    key = (model, mesh)
    if key not in _PROGRAMS:
      _PROGRAMS[key] = sampling_lib.Programs(model, mesh)
    self._programs = _PROGRAMS[key]
    self.stats = {"prefill_calls": 0, "prefill_rows": 0, "decode_chunks": 0, "cache_grows": 0}

  def _programs_rules(self):
    return list(self.model.rules) if self.model.rules else []

  def _shard_params(self, params):
    dummy = jnp.zeros((1, 1), jnp.int32)
    abstract = jax.eval_shape(lambda: self.model.init(jax.random.PRNGKey(0), dummy))["params"]
    specs = nn.get_partition_spec(abstract)
    shardings = nn.logical_to_mesh_sharding(specs, self.mesh, self._programs_rules())
    return jax.device_put(params, shardings)

  # --- host helpers ---

  def _special(self, name: str) -> int:
    """The id of a chat/tool marker, or -1 when the tokenizer has none (e.g. an imported GPT-2: no tool calls)."""
    if self.tokenizer is None:
      return -1
    try:
      return self.tokenizer.special_id(name)
    except KeyError:
      return -1

  def _decode_text(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode(ids) if self.tokenizer is not None else ""

  def _run_tool(self, toks: list[int], forced_mask: np.ndarray) -> tuple[dict[str, str], list[int]]:
    """Runs the call a paused row just closed; returns (its record, the result tokens to force into the row)."""
    # The call is what was sampled since the last <|tool_call_start|> (a forced result cannot open a call).
    call_start = self._special("tool_call_start")
    starts = [i for i, t in enumerate(toks) if t == call_start and not forced_mask[i]]
    call_ids = toks[starts[-1] + 1 : -1] if starts else toks[:-1]
    text = self.tokenizer.decode(call_ids, skip_special=True)
    try:
      name, args = chat.parse_tool_call(text)
    except ValueError as e:
      name, args, result = "", text, f"error: {e}"
    else:
      tool = self.tools.get(name)
      result = (
          tool(args)
          if tool is not None
          else (f"error: unknown tool {name!r}; available: " f"{', '.join(sorted(self.tools))}")
      )
    ids = self.tokenizer.encode(result)[: self.max_tool_result_tokens]
    forced = [self._special("tool_result_start")] + ids + [self._special("tool_result_end")]
    return {"name": name, "arguments": args, "result": result}, forced

  # --- the public call ---

  def generate(
      self,
      prompts: Sequence[Sequence[int]],
      sampling: SamplingParams | Sequence[SamplingParams],
      *,
      n: int = 1,
      seed: int | jax.Array = 0,
      stop_tokens: Sequence[int] = (),
      stop_strings: Sequence[str] = (),
      on_token: OnToken | None = None,
      truncate_prompt: bool = False,
  ) -> list[Completion]:
    """Samples n completions per prompt; returns them prompt-major: completion i * n + j is sample j of prompt i.

    sampling: one SamplingParams for all prompts or one per prompt. truncate_prompt: keep the last tokens of a prompt
    that leaves no room to generate (else ValueError). Raises ValueError naming bad input.
    """
    prompts, sampling = self._validate(prompts, sampling, n, stop_strings, truncate_prompt)
    interactive = bool(on_token or stop_strings or self.tools)
    call = self._prefill(prompts, sampling, n, seed, stop_tokens, interactive)
    self._decode_loop(call, on_token, stop_strings)
    return self._finish(call, prompts, n)

  def _validate(self, prompts, sampling, n, stop_strings, truncate_prompt):
    """(prompts as lists of ints, cut to the context if allowed; one SamplingParams per prompt) or ValueError."""
    if isinstance(sampling, SamplingParams):
      sampling = [sampling] * len(prompts)
    if len(sampling) != len(prompts):
      raise ValueError(f"got {len(sampling)} SamplingParams for {len(prompts)} prompts")
    for sp in sampling:
      sp.validate()
    if not prompts:
      raise ValueError("no prompts")
    if int(n) != n or n < 1:
      raise ValueError(f"n (samples per prompt) must be an integer >= 1, got {n}")
    if stop_strings and self.tokenizer is None:
      raise ValueError("stop_strings need a tokenizer")
    if any(not isinstance(s, str) or not s for s in stop_strings):
      raise ValueError(f"stop strings must be non-empty str, got {list(stop_strings)}")
    ctx = self.cfg.max_len
    prompts = [list(map(int, p)) for p in prompts]
    for i, p in enumerate(prompts):
      if not p:
        raise ValueError(f"prompt {i} is empty; every prompt needs at least one token (encode with bos=True)")
      bad = [t for t in p if not 0 <= t < self.cfg.vocab_size]
      if bad:
        raise ValueError(f"prompt {i} has token ids outside the vocabulary [0, {self.cfg.vocab_size}): {bad[:5]}")
      if len(p) >= ctx:
        if not truncate_prompt:
          raise ValueError(
              f"prompt {i} has {len(p)} tokens but the model's context is {ctx} tokens (at least one "
              "must be left to generate); shorten it or pass truncate_prompt=True"
          )
        keep = max(1, ctx - sampling[i].max_new_tokens)
        prompts[i] = p[-keep:]
    return prompts, sampling

  def _batch_bucket(self, rows: int) -> int:
    """A power of two, rounded up to a multiple of the data-parallel width."""
    return -(-sampling_lib.pow2(rows) // self._batch_multiple) * self._batch_multiple

  def _prefill(self, prompts, sampling, n, seed, stop_tokens, interactive: bool) -> _DecodeCall:
    """Runs each distinct prompt once and repeats its cache rows for its n samples: the call, ready to decode."""
    # Unique prompts -> one prefill row each; decode rows point at their prompt's row.
    uniq: dict[tuple[int, ...], int] = {}
    prompt_row = [uniq.setdefault(tuple(p), len(uniq)) for p in prompts]
    uniq_prompts = list(uniq)
    rows = len(prompts) * n
    b, p_b = self._batch_bucket(rows), self._batch_bucket(len(uniq_prompts))
    t_b = sampling_lib.pow2(max(len(p) for p in uniq_prompts))
    max_new = max(sp.max_new_tokens for sp in sampling)
    room = self.cfg.max_len - min(len(p) for p in uniq_prompts)  # no row outgrows the context
    out_len = min(sampling_lib.pow2(max_new), sampling_lib.pow2(room))
    cache_len = t_b + out_len  # slots: the left-padded prompts, then one per decode step

    prompt_PxT, pad_P = sampling_lib.left_pad(uniq_prompts, p_b, t_b)
    lengths_P = (t_b - pad_P).astype(np.int32)
    src_B = np.zeros((b,), np.int32)
    src_B[:rows] = np.repeat(prompt_row, n)
    cache, logits_BxV = self._programs.prefill(
        self.params,
        jnp.asarray(prompt_PxT),
        jnp.asarray(pad_P),
        jnp.asarray(src_B),
        cache_len=cache_len,
        cache_dtype=self.cache_dtype,
    )
    self.stats["prefill_calls"] += 1
    self.stats["prefill_rows"] += len(uniq_prompts)
    lengths_B = np.ones((b,), np.int32)
    lengths_B[:rows] = lengths_P[src_B[:rows]]
    forced_len = self.max_tool_result_tokens + 2 if self.tools else 1  # <|tool_result_start|> result <|..._end|>
    call_end_id = self._special("tool_call_end") if self.tools else -1
    return _DecodeCall(
        state=sampling_lib.initial_state(cache, logits_BxV, lengths_B, rows, out_len, forced_len),
        knobs=sampling_lib.decode_knobs(sampling, n, b, seed, stop_tokens, call_end_id),
        rows=rows,
        out_len=out_len,
        cache_len=cache_len,
        steps=self.chunk_steps if interactive else out_len,
        interactive=interactive,
    )

  def _decode_loop(self, call: _DecodeCall, on_token: OnToken | None, stop_strings: Sequence[str]) -> None:
    """Runs decode chunks until every row is done; the host steps in between them only when the call is interactive."""
    while True:
      if call.interactive and int(call.state["cache"]["index"]) + call.steps > call.cache_len:
        # Rows paused for tools left invalid slots behind: make room (one recompile per new length).
        call.state, call.cache_len = self._programs.grow_cache(call.state, call.out_len), call.cache_len + call.out_len
        self.stats["cache_grows"] += 1
      call.state = self._programs.decode(self.params, call.state, call.knobs, jnp.int32(call.steps))
      self.stats["decode_chunks"] += 1
      if not call.interactive or self._after_chunk(call, on_token, stop_strings):
        return

  def _after_chunk(self, call: _DecodeCall, on_token: OnToken | None, stop_strings: Sequence[str]) -> bool:
    """Checks stop strings, streams new tokens and runs tool calls of one chunk; True when every row is done."""
    state = call.state
    n_out, done, paused, out_tok, out_forced = jax.device_get(
        (state["n_out"], state["done"], state["paused"], state["out_tok"], state["out_forced"])
    )
    host_done = np.array(done)
    new_forced: dict[int, list[int]] = {}
    for r in range(call.rows):
      if call.final_len[r] is not None:
        continue
      toks = out_tok[r, : n_out[r]].tolist()
      end = n_out[r]
      if stop_strings and n_out[r] > call.seen[r]:
        cut = self._find_stop_string(toks, out_forced[r], call.seen[r], stop_strings)
        if cut is not None:
          end, call.stop_what[r] = cut
          call.final_len[r] = end
          host_done[r] = True
      if on_token is not None and end > call.seen[r]:
        self._stream(call, r, toks, end, out_forced[r], bool(host_done[r]), on_token)
      call.seen[r] = end
      if paused[r] and call.final_len[r] is None:
        record, new_forced[r] = self._run_tool(toks, out_forced[r])
        call.calls[r].append(record)
    if new_forced or (host_done != done).any():
      call.state = self._update_rows(state, new_forced, host_done)
    return bool(host_done[: call.rows].all())

  def _stream(self, call: _DecodeCall, r: int, toks, end: int, forced_mask, finished: bool, on_token: OnToken):
    """Calls on_token for row r's tokens from call.seen[r] to end, with the text each one adds."""
    emit = functools.partial(on_token, r)
    call.streamed_text[r] = self.stream_tokens(
        toks, call.seen[r], end, call.streamed_text[r], forced_mask, finished, emit
    )

  def stream_tokens(self, toks, start: int, end: int, streamed: str, forced_mask, finished: bool, emit) -> str:
    """Calls emit(token, text_delta, generated) for toks[start:end]; returns the text streamed so far.

    streamed: the text streamed before toks[start]. A row's text is decoded whole each token, so that a multi-token
    character appears once complete (held back while the text ends in U+FFFD, unless the row just finished).
    """
    for t in range(start, end):
      text = self._decode_text(toks[: t + 1])
      delta = ""
      # Hold back an incomplete UTF-8 character (it decodes as U+FFFD until its last byte arrives).
      if not text.endswith("\ufffd") or (finished and t + 1 == end):
        common = len(os.path.commonprefix([text, streamed]))
        delta, streamed = text[common:], text
      emit(toks[t], delta, not bool(forced_mask[t]))
    return streamed

  def _finish(self, call: _DecodeCall, prompts: list[list[int]], n: int) -> list[Completion]:
    """One Completion per real row, cut where the host saw a stop string."""
    keys = ("n_out", "reason", "out_tok", "out_logp", "out_slogp", "out_forced")
    out = jax.device_get({k: call.state[k] for k in keys})
    results = []
    for r in range(call.rows):
      length = call.final_len[r] if call.final_len[r] is not None else int(out["n_out"][r])
      results.append(
          self.completion(out, r, length, call.stop_what[r], r // n, r % n, call.calls[r], len(prompts[r // n]))
      )
    return results

  def completion(self, out, r: int, length: int, stop_what, prompt_index: int, sample_index: int, calls, prompt_tokens):
    """Row r's Completion from the decode state's host copy `out` (n_out, reason, out_* arrays), cut at `length`.

    stop_what: the stop string the host cut the row at (else None: a stop token ends it when reason is 1)."""
    toks = out["out_tok"][r, :length].tolist()
    reason = "stop" if (stop_what is not None or out["reason"][r] == 1) else "length"
    stop = stop_what
    text_toks = toks
    if stop is None and reason == "stop":
      stop = toks[-1]
      text_toks = toks[:-1]
    text = self._decode_text(text_toks)
    if isinstance(stop, str):
      text = text[: text.find(stop)] if stop in text else text
    return Completion(
        prompt_index=prompt_index,
        sample_index=sample_index,
        tokens=toks,
        logprobs=out["out_logp"][r, :length].tolist(),
        sampling_logprobs=out["out_slogp"][r, :length].tolist(),
        generated_mask=(~out["out_forced"][r, :length]).tolist(),
        text=text,
        finish_reason=reason,
        stop=stop,
        tool_calls=calls,
        prompt_tokens=prompt_tokens,
    )

  def _find_stop_string(self, toks, forced_mask, start, stop_strings):
    """(tokens to keep, stop string) for the first stop string completed by a sampled token at index >= start."""
    window = 4 * max(len(s) for s in stop_strings) + 4  # a char is at most 4 (byte-fallback) tokens
    for t in range(start, len(toks)):
      if forced_mask[t]:
        continue
      text = self._decode_text(toks[max(0, t + 1 - window) : t + 1])
      for s in stop_strings:
        if s in text:
          return t + 1, s
    return None

  def _update_rows(self, state, new_forced, host_done):
    """The state with each tool result queued to be forced into its (resuming) row, and the host's done flags."""
    forced, forced_n, forced_i, paused = (np.array(state[k]) for k in ("forced", "forced_n", "forced_i", "paused"))
    for r, ids in new_forced.items():
      forced[r, :] = 0
      forced[r, : len(ids)] = ids
      forced_n[r], forced_i[r], paused[r] = len(ids), 0, False
    return {
        **state,
        "forced": jnp.asarray(forced),
        "forced_n": jnp.asarray(forced_n),
        "forced_i": jnp.asarray(forced_i),
        "paused": jnp.asarray(paused),
        "done": jnp.asarray(host_done),
    }


def generate(
    model: model_lib.Transformer,
    params: Any,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingParams,
    rng: jax.Array,
    eos_id: int = -1,
) -> list[list[int]]:
  """Samples a continuation for each prompt (token ids); each stops after eos (included) or max_new_tokens.

  The context is the model's max_len: a prompt plus max_new_tokens longer than it is an error naming both.
  """
  sampling.validate()
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token (encode with bos=True)")
  t = max(len(p) for p in prompts)
  need = t + sampling.max_new_tokens
  if need > model.cfg.max_len:
    raise ValueError(
        f"prompt length {t} + max_new_tokens {sampling.max_new_tokens} = {need} exceeds the model's "
        f"context of {model.cfg.max_len} tokens"
    )
  eng = Engine(model, params)
  outs = eng.generate(prompts, sampling, seed=rng, stop_tokens=(eos_id,) if eos_id >= 0 else ())
  return [o.tokens for o in outs]
