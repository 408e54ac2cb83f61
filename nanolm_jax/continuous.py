"""Continuous batching: a fixed set of row slots over one KV cache; rows join and leave between decode chunks.

Usage (the server's worker, GRPO rollouts)::

  dec = SlotDecoder(eng, slots=32)                     # eng: an engine.Engine (no tools), its programs and params
  dec.add(Request(prompt_ids, SamplingParams(...), seed=7, row=0, on_token=..., on_done=...))
  while dec.busy: dec.step()                           # admits waiting rows into free slots, runs one chunk

  outs = generate(eng, prompts, sampling, n=8, seed=0, slots=32)   # Engine.generate's results, rows refilled

How it works (the engine's jitted decode chunk, sampling.Programs.decode, does the stepping):
  * Every cache row shares one write index I. A joining row is prefilled alone-sized (Programs.prefill, its prompt
    bucket T) and its keys / values are written into its slot's row at [I - T, I), earlier slots invalid; positions
    are explicit, so where a row's slots sit changes nothing it attends to.
  * Before each chunk the host makes room: when I < T (a prompt longer than the cache's past) or I + chunk overruns
    the cache, every row's valid slots are gathered right-aligned to a new index (finished rows' and padding slots
    dropped), into a cache sized to the new index plus at least 4 chunks (a power of two: it grows and shrinks with
    the rows, as every step reads every row's whole cache). So a long-running server never holds more than about
    the longest row plus a few chunks per row.
  * The decode batch is sized to the rows that want a slot (powers of two up to `slots`; rows are gathered when it
    changes), so a lone request decodes at batch 1 however wide the server is.
  * Row keys: a row draws token t from fold_in(fold_in(seed, row), t) (sampling.row_keys), as Engine.generate does
    for row `row` of a call, so a row gets its solo completion whatever slot it lands in and whoever else is there
    (same tokens; logprobs equal up to float rounding of the differently shaped attention).
  * Per-row stop tokens (a (B, S) stop_ids knob), max_new_tokens and sampler knobs run on device; stop strings,
    streaming and cancellation are host-side between chunks, with the engine's helpers. Tools are not run here:
    use Engine.generate for an engine with tools.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nanolm_jax import engine as engine_lib
from nanolm_jax import sampling as sampling_lib

STOP_WIDTH = 8  # stop token ids per row (padded with -1); more is a ValueError


@dataclasses.dataclass(eq=False)
class Request:
  """One row to generate. Callbacks run on the thread that calls SlotDecoder.step and must not block.

  seed, row: the row's sampling key is fold_in(seed, row) (Engine.generate's row `row` of a call with `seed`).
  on_token(token, text_delta, generated): text_delta is "" unless stream_text. cancelled: set from any thread; the
  row stops at the next chunk boundary (on_done gets finish_reason 'cancelled').
  """

  prompt: Sequence[int]
  sampling: sampling_lib.SamplingParams
  seed: Any = 0
  row: int = 0
  stop_tokens: Sequence[int] = ()
  stop_strings: Sequence[str] = ()
  on_token: Callable[[int, str, bool], None] | None = None
  on_done: Callable[[engine_lib.Completion], None] | None = None
  stream_text: bool = False
  prompt_index: int = 0
  sample_index: int = 0
  cancelled: bool = False


@dataclasses.dataclass
class _Slot:
  """The host's bookkeeping for one running row."""

  req: Request
  seen: int = 0  # tokens already streamed / checked for stop strings
  streamed: str = ""
  final_len: int | None = None  # set when the host cut the row (stop string)
  stop_what: Any = None


def _gather_slots(a, src_BxC):
  """a's cache-length axis re-indexed per row: new slot j of row b is old slot src[b, j] (src >= 0)."""
  if a.ndim == 2:  # valid BxS
    return jnp.take_along_axis(a, src_BxC, axis=1)
  lead = a.ndim - 4  # 1 when the layers are stacked (YxBxKxSxH)
  idx = src_BxC[(None,) * lead + (slice(None), None, slice(None), None)]
  return jnp.take_along_axis(a, idx, axis=lead + 2)


@jax.jit
def _relayout(cache, src_BxC, new_index):
  """The cache with each row's slots gathered by src_BxC (-1: an invalid slot) and the write index new_index."""
  keep_BxC = src_BxC >= 0
  src_BxC = jnp.maximum(src_BxC, 0)
  kv = jax.tree.map(lambda a: _gather_slots(a, src_BxC), {"k": cache["k"], "v": cache["v"]})
  valid = _gather_slots(cache["valid"], src_BxC) & keep_BxC
  return {**kv, "valid": valid, "index": jnp.asarray(new_index, jnp.int32)}


@functools.partial(jax.jit, donate_argnums=(0,))
def _admit(state, new_cache, logits_NxV, slots_N, lengths_N):
  """state with new rows in slots_N (an index >= B is padding, dropped): their prefilled cache rows end at the
  shared index, their decode state reset. new_cache: N rows of T slots (Programs.prefill, cache_len T)."""
  cache = state["cache"]
  index = cache["index"]

  def put(buf, new):
    # The new rows' T slots at [index - T, index) of an otherwise empty (zero, invalid) row, then scattered in.
    t, axis = new.shape[-2 if new.ndim >= 4 else -1], (new.ndim - 2 if new.ndim >= 4 else 1)
    full = jnp.zeros(new.shape[:axis] + (buf.shape[axis],) + new.shape[axis + 1 :], buf.dtype)
    start = [0] * new.ndim
    start[axis] = index - t
    full = jax.lax.dynamic_update_slice(full, new.astype(buf.dtype), start)
    if buf.ndim == 5:  # stacked layers: batch is axis 1
      return buf.at[:, slots_N].set(full, mode="drop")
    return buf.at[slots_N].set(full, mode="drop")

  kv = jax.tree.map(put, {"k": cache["k"], "v": cache["v"]}, {"k": new_cache["k"], "v": new_cache["v"]})
  new = dict(state)
  new["cache"] = {**kv, "valid": put(cache["valid"], new_cache["valid"]), "index": index}
  zero = jnp.zeros(slots_N.shape, jnp.int32)

  def reset(name, val):
    new[name] = state[name].at[slots_N].set(val.astype(state[name].dtype), mode="drop")

  reset("logits", logits_NxV)
  reset("pos", lengths_N)
  for name in ("n_out", "reason", "forced_n", "forced_i"):
    reset(name, zero)
  reset("done", zero.astype(bool))
  reset("paused", zero.astype(bool))
  return new


_KNOB_FILL = {"key": 0, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "max_new": 1, "stop_ids": -1}


def _blank_knobs(b: int) -> dict[str, np.ndarray]:
  """Host copies of the decode knobs for b free rows (greedy, one token, no stop ids)."""
  return {
      "key": np.zeros((b, 2), np.uint32),
      "temperature": np.zeros((b,), np.float32),
      "top_k": np.zeros((b,), np.int32),
      "top_p": np.ones((b,), np.float32),
      "max_new": np.ones((b,), np.int32),
      "stop_ids": np.full((b, STOP_WIDTH), -1, np.int32),
  }


@jax.jit
def _reslot(state, src_B, keep_B):
  """state with its rows gathered by src_B (a new batch size); rows where keep_B is False are free (done, empty)."""
  cache = state["cache"]
  kv = jax.tree.map(lambda a: jnp.take(a, src_B, axis=a.ndim - 4), {"k": cache["k"], "v": cache["v"]})
  new = {k: jnp.take(v, src_B, axis=0) for k, v in state.items() if k != "cache"}
  new["done"] = new["done"] | ~keep_B
  new["cache"] = {**kv, "valid": jnp.take(cache["valid"], src_B, axis=0) & keep_B[:, None], "index": cache["index"]}
  return new


def _row_keys(reqs: Sequence[Request]) -> np.ndarray:
  """keys_Nx2 (raw uint32) of the rows, one batched fold_in per distinct seed."""
  out = np.zeros((len(reqs), 2), np.uint32)
  by_seed: dict[Any, list[int]] = {}
  for i, r in enumerate(reqs):
    by_seed.setdefault(r.seed if isinstance(r.seed, (int, np.integer)) else id(r.seed), []).append(i)
  for idx in by_seed.values():
    k = sampling_lib.row_keys(reqs[idx[0]].seed, [reqs[i].row for i in idx])
    if jnp.issubdtype(k.dtype, jax.dtypes.prng_key):
      k = jax.random.key_data(k)
    out[idx] = np.asarray(k).reshape(len(idx), -1)[:, -2:]
  return out


class SlotDecoder:
  """Rows in `slots` decode slots over one KV cache, refilled from a waiting queue between chunks. See module doc."""

  def __init__(
      self,
      eng: engine_lib.Engine,
      slots: int,
      max_new_tokens: int = 0,
      chunk_steps: int | None = None,
      min_cache_len: int = 0,
  ):
    """slots: the most rows decoding at once; max_new_tokens: the output buffer per row (grown when a row needs
    more); min_cache_len: the cache never shrinks below this (each length is a compile; 0: 4 chunks)."""
    if eng.tools:
      raise ValueError("the continuous decoder does not run tools; use Engine.generate for an engine with tools")
    self.engine = eng
    self.cfg = eng.cfg
    self.slots = eng._batch_bucket(max(1, int(slots)))  # pylint: disable=protected-access
    self.steps = int(chunk_steps or eng.chunk_steps)
    self.waiting: collections.deque[Request] = collections.deque()
    self.rows: list[_Slot | None] = []  # one per row of the decode batch: a power of 4 or `slots`, see _fit
    self.stats = {"joins": 0, "finished": 0, "cancelled": 0, "chunks": 0, "relayouts": 0, "prefills": 0, "resizes": 0}
    self._out_len = sampling_lib.pow2(max(1, max_new_tokens or self.steps))
    self._state: dict[str, Any] | None = None
    self._index = 0
    self._cache_len = 0
    self._min_cache_len = sampling_lib.pow2(max(min_cache_len, 4 * self.steps))
    self._knobs = _blank_knobs(1)
    self._device_knobs: dict[str, jax.Array] | None = None

  # --- queue ---

  @property
  def active(self) -> int:
    return sum(r is not None for r in self.rows)

  @property
  def busy(self) -> bool:
    return bool(self.waiting) or self.active > 0

  def add(self, req: Request) -> None:
    """Queues a row (validated now: a bad row is a ValueError here, not a failed chunk later)."""
    req.sampling.validate()
    p = [int(t) for t in req.prompt]
    if not p or len(p) >= self.cfg.max_len or not all(0 <= t < self.cfg.vocab_size for t in p):
      raise ValueError(f"a prompt needs 1 to {self.cfg.max_len - 1} tokens of the vocabulary, got {len(p)} tokens")
    if len(set(req.stop_tokens)) > STOP_WIDTH:
      raise ValueError(f"at most {STOP_WIDTH} stop tokens per row, got {len(set(req.stop_tokens))}")
    if req.stop_strings and self.engine.tokenizer is None:
      raise ValueError("stop_strings need a tokenizer")
    req.prompt = p
    self.waiting.append(req)

  # --- one step ---

  def step(self) -> None:
    """Retires cancelled rows, admits waiting rows into free slots, runs one decode chunk and hands out its tokens."""
    self._retire_cancelled()
    self._fit()
    self._admit_waiting()
    if not self.active:
      return
    self._make_room(0)
    if self._device_knobs is None:
      self._device_knobs = {k: jnp.asarray(v) for k, v in self._knobs.items()} | {"call_end_id": jnp.int32(-1)}
    eng = self.engine
    self._state = eng._programs.decode(eng.params, self._state, self._device_knobs, jnp.int32(self.steps))  # pylint: disable=protected-access
    self.stats["chunks"] += 1
    eng.stats["decode_chunks"] += 1
    self._harvest()

  def _retire_cancelled(self) -> None:
    gone = [i for i, s in enumerate(self.rows) if s is not None and s.req.cancelled]
    for i in gone:
      self._free(i, None, cancelled=True)
    if gone:
      self._state["done"] = self._state["done"].at[np.asarray(gone)].set(True)
    kept = [r for r in self.waiting if not r.cancelled]
    for r in self.waiting:
      if r.cancelled:
        self.stats["cancelled"] += 1
        if r.on_done is not None:
          r.on_done(self._empty(r, "cancelled"))
    self.waiting = collections.deque(kept)

  def _empty(self, req: Request, reason: str) -> engine_lib.Completion:
    return engine_lib.Completion(
        req.prompt_index, req.sample_index, [], [], [], [], "", reason, prompt_tokens=len(req.prompt)
    )

  # --- joining ---

  def _size(self, n: int, factor: int = 2) -> int:
    """The bucket of n rows: a power of `factor` (at most `slots`). Few sizes: each compiles the decode chunk, the
    prefill and the joining / resizing programs, and a server must not compile while it serves. The decode batch
    uses powers of 2 (padding rows cost decode steps); a prefill's prompts use powers of 4 (it runs once per join)."""
    size = 1
    while size < min(n, self.slots):
      size *= factor
    return min(size, self.slots)

  def _fit(self) -> None:
    """Sizes the decode batch to the rows that want a slot (a power of two, at most `slots`): a lone row decodes at
    batch 1, not at the server's full width. Grows at once; shrinks only to a quarter or less (no flapping)."""
    need = self._size(self.active + len(self.waiting))
    b = len(self.rows)
    if self._state is None or not (need > b or need <= b // 4):
      return
    live = [i for i, s in enumerate(self.rows) if s is not None]
    src = np.array(live + [0] * (need - len(live)), np.int32)
    keep = np.arange(need) < len(live)
    self._state = _reslot(self._state, jnp.asarray(src), jnp.asarray(keep))
    knobs = _blank_knobs(need)
    for k, v in self._knobs.items():
      knobs[k][: len(live)] = v[live]
    self._knobs, self._device_knobs = knobs, None
    self.rows = [self.rows[i] for i in live] + [None] * (need - len(live))
    self.stats["resizes"] += 1

  def _admit_waiting(self) -> None:
    if self._state is None and self.waiting:
      need_out = sampling_lib.pow2(max(r.sampling.max_new_tokens for r in self.waiting))
      self._start(max(need_out, self._out_len), self._size(len(self.waiting)))
    free = [i for i, s in enumerate(self.rows) if s is None]
    take = [self.waiting.popleft() for _ in range(min(len(free), len(self.waiting)))]
    if not take:
      return
    slots = free[: len(take)]
    eng = self.engine
    need_out = sampling_lib.pow2(max(r.sampling.max_new_tokens for r in take))
    if need_out > self._out_len:
      self._grow_out(need_out)
    # One prefill for the joining rows: unique prompts once, rows gathered (like Engine._prefill).
    uniq: dict[tuple[int, ...], int] = {}
    src = [uniq.setdefault(tuple(r.prompt), len(uniq)) for r in take]
    t_b = sampling_lib.pow2(max(len(p) for p in uniq))
    p_b, n_b = min(self._size(len(uniq), 4), len(self.rows)), len(
        self.rows
    )  # joining rows padded to the batch: one program per size
    prompt_PxT, pad_P = sampling_lib.left_pad(list(uniq), p_b, t_b)
    src_N = np.zeros((n_b,), np.int32)
    src_N[: len(take)] = src
    new_cache, logits_NxV = eng._programs.prefill(  # pylint: disable=protected-access
        eng.params,
        jnp.asarray(prompt_PxT),
        jnp.asarray(pad_P),
        jnp.asarray(src_N),
        cache_len=t_b,
        cache_dtype=eng.cache_dtype,
    )
    self._make_room(t_b)
    slots_N = np.full((n_b,), len(self.rows), np.int32)  # padding rows scatter out of bounds: dropped
    slots_N[: len(take)] = slots
    lengths_N = np.ones((n_b,), np.int32)
    lengths_N[: len(take)] = [len(r.prompt) for r in take]
    self._state = _admit(self._state, new_cache, logits_NxV, jnp.asarray(slots_N), jnp.asarray(lengths_N))
    keys = _row_keys(take)
    for i, (slot, r) in enumerate(zip(slots, take)):
      self.rows[slot] = _Slot(r)
      k = self._knobs
      k["key"][slot] = keys[i]
      k["temperature"][slot], k["top_k"][slot], k["top_p"][slot] = (
          r.sampling.temperature,
          r.sampling.top_k,
          r.sampling.top_p,
      )
      k["max_new"][slot] = r.sampling.max_new_tokens
      k["stop_ids"][slot] = sampling_lib.stop_id_row(r.stop_tokens, STOP_WIDTH)
    self._device_knobs = None
    self.stats["joins"] += len(take)
    self.stats["prefills"] += 1
    eng.stats["prefill_calls"] += 1
    eng.stats["prefill_rows"] += len(uniq)

  def _start(self, out_len: int, b: int) -> None:
    """The first state: b free (done) rows and a small empty cache."""
    self._out_len = out_len
    self._cache_len = self._min_cache_len  # _make_room sizes it to the rows as they come
    cache = engine_lib.model_lib.init_cache(self.cfg, b, self._cache_len, jnp.dtype(self.engine.cache_dtype))
    logits = jnp.zeros((b, self.cfg.vocab_size), jnp.float32)
    self._state = sampling_lib.initial_state(cache, logits, np.ones((b,), np.int32), 0, out_len, 1)
    self._index = 0
    self.rows = [None] * b
    self._knobs, self._device_knobs = _blank_knobs(b), None

  def _grow_out(self, out_len: int) -> None:
    extra = out_len - self._out_len
    for k in ("out_tok", "out_logp", "out_slogp", "out_forced"):
      self._state[k] = jnp.pad(self._state[k], ((0, 0), (0, extra)))
    self._out_len = out_len

  def _make_room(self, front: int) -> None:
    """Relayouts the cache when the index is below `front` or the next chunk would overrun it (see module doc)."""
    if self._index >= front and self._index + self.steps <= self._cache_len:
      return
    valid_BxC = np.array(jax.device_get(self._state["cache"]["valid"]))
    live_B = np.array([s is not None for s in self.rows])
    valid_BxC &= live_B[:, None]
    counts = valid_BxC.sum(axis=1)
    index = int(max(counts.max(initial=0), front))
    # Room for at least 4 more chunks. Every step reads the whole cache of every row (at 32 rows of the tiny model
    # more bytes than the weights), so it shrinks back after a burst, but only to a quarter or less: each length
    # compiles the decode chunk again.
    cache_len = max(sampling_lib.pow2(index + 4 * self.steps), self._min_cache_len)
    if self._cache_len // 4 < cache_len < self._cache_len:
      cache_len = self._cache_len
    src_BxC = np.full((len(self.rows), cache_len), -1, np.int32)
    for b in np.nonzero(counts)[0]:
      slots = np.nonzero(valid_BxC[b])[0]
      src_BxC[b, index - len(slots) : index] = slots
    self._state["cache"] = _relayout(self._state["cache"], jnp.asarray(src_BxC), index)
    self._index, self._cache_len = index, cache_len
    self.stats["relayouts"] += 1

  # --- leaving ---

  def _harvest(self) -> None:
    """Streams each row's new tokens, cuts rows at stop strings, and finishes the rows that are done."""
    keys = ("n_out", "done", "reason", "out_tok", "out_logp", "out_slogp", "out_forced")
    out = jax.device_get({k: self._state[k] for k in keys} | {"index": self._state["cache"]["index"]})
    self._index = int(out["index"])
    eng = self.engine
    cut = []
    for i, s in enumerate(self.rows):
      if s is None:
        continue
      req, n = s.req, int(out["n_out"][i])
      toks = out["out_tok"][i, :n].tolist()
      end, finished = n, bool(out["done"][i])
      if req.stop_strings and n > s.seen:
        hit = eng._find_stop_string(toks, out["out_forced"][i], s.seen, req.stop_strings)  # pylint: disable=protected-access
        if hit is not None:
          (end, s.stop_what), finished = hit, True
          s.final_len = end
          cut.append(i)
      if req.on_token is not None and end > s.seen:
        emit = req.on_token
        if req.stream_text:
          s.streamed = eng.stream_tokens(toks, s.seen, end, s.streamed, out["out_forced"][i], finished, emit)
        else:
          for t in range(s.seen, end):
            emit(toks[t], "", not bool(out["out_forced"][i][t]))
      s.seen = end
      if finished:
        self._free(i, out)
    if cut:
      self._state["done"] = self._state["done"].at[np.asarray(cut)].set(True)

  def _free(self, i: int, out: dict[str, np.ndarray] | None, cancelled: bool = False) -> None:
    s, self.rows[i] = self.rows[i], None
    req = s.req
    if cancelled:
      self.stats["cancelled"] += 1
      if req.on_done is not None:
        req.on_done(self._empty(req, "cancelled"))
      return
    self.stats["finished"] += 1
    length = s.final_len if s.final_len is not None else int(out["n_out"][i])
    c = self.engine.completion(out, i, length, s.stop_what, req.prompt_index, req.sample_index, [], len(req.prompt))
    if req.on_done is not None:
      req.on_done(c)


def generate(
    eng: engine_lib.Engine,
    prompts: Sequence[Sequence[int]],
    sampling: sampling_lib.SamplingParams | Sequence[sampling_lib.SamplingParams],
    *,
    n: int = 1,
    seed: Any = 0,
    stop_tokens: Sequence[int] = (),
    stop_strings: Sequence[str] = (),
    slots: int = 0,
    chunk_steps: int | None = None,
) -> list[engine_lib.Completion]:
  """Engine.generate's completions (prompt-major, row i * n + j draws as that engine row) decoded in `slots` slots
  (0: all rows at once): rows wait for a free slot and join as others finish, so short rows stop costing steps.
  chunk_steps: decode steps between joins (default: the engine's)."""
  prompts, sampling = eng._validate(prompts, sampling, n, stop_strings, False)  # pylint: disable=protected-access
  rows = len(prompts) * n
  max_new = max(sp.max_new_tokens for sp in sampling)
  # The cache starts as long as Engine.generate's (the longest prompt's bucket + the output), so a rollout compiles
  # once rather than once per length it grows through.
  first_cache = sampling_lib.pow2(max(len(p) for p in prompts)) + sampling_lib.pow2(max_new)
  dec = SlotDecoder(eng, min(slots or rows, rows), max_new, chunk_steps, min_cache_len=first_cache)
  outs: list[engine_lib.Completion | None] = [None] * rows

  def done(r: int) -> Callable[[engine_lib.Completion], None]:
    return lambda c: outs.__setitem__(r, c)

  for r in range(rows):
    i, j = divmod(r, n)
    dec.add(
        Request(
            prompts[i],
            sampling[i],
            seed=seed,
            row=r,
            stop_tokens=tuple(stop_tokens),
            stop_strings=tuple(stop_strings),
            on_done=done(r),
            prompt_index=i,
            sample_index=j,
        )
    )
  while dec.busy:
    dec.step()
  return outs
