"""SFT data: the default synthetic mixture, and conversations -> packed, loss-masked training batches.

Batches look like the pretraining pipeline's (nanolm_jax.data.pipeline): dicts of (batch_size, seq_len) arrays

  inputs, targets      int32, targets = inputs shifted by one *within* a conversation (never across two)
  segment_ids          int32, 1, 2, ... per conversation in the row, 0 on padding: attention must not cross them
  positions            int32, restarting at 0 for every conversation
  weights              float32, the loss mask of the *target* token: 1 on assistant text, tool calls and the
                       assistant's <|end|>; 0 on <s>, role headers, system/user/tool text and padding

Each conversation is rendered with ``chat.render_for_training`` and packed whole into a row with grain's first-fit
packing (several conversations per row, none split across rows). A conversation longer than seq_len + 1 tokens is
truncated or dropped (``overlong``); truncated ones without any trained target left are dropped too. Both are
counted and logged; ``sft_stats`` counts them for a whole split up front.

Sources are a spec (see nanolm_jax.data.conversations) whose generator kinds are GENERATOR_KINDS: 'generated'
(``default_mixture``) or one generator ('identity', 'system_prompts', 'reasoning', 'facts', 'search'; an ARG
overrides its count, e.g. 'reasoning:5000@2'), and ``replay:KIND`` (KIND in REPLAY_KINDS): a pretraining source's
documents, rendered as pretraining renders them (<s> text </s>, every target trained) and split as pretraining
splits them, so that fine-tuning keeps what pretraining stored. Sharding, shuffling, repetition, mixing and JSON-serialisable
iterator state work as in the pretraining pipeline.
"""

from __future__ import annotations

import functools
import json
import random
from typing import Any, Callable

from absl import logging
import grain
import ml_collections
import numpy as np

from nanolm_jax import chat
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.data import conversations as conversations_lib
from nanolm_jax.data import pipeline
from nanolm_jax.data import sources as sources_lib
from nanolm_jax.synthetic import facts
from nanolm_jax.synthetic import identity
from nanolm_jax.synthetic import reasoning
from nanolm_jax.synthetic import search_data
from nanolm_jax.synthetic import system_prompts

Conversation = list[dict[str, Any]]
FEATURES = pipeline.FEATURES
GENERATOR_KINDS = ('generated', 'identity', 'system_prompts', 'reasoning', 'facts', 'search')
# Pretraining text replayed during SFT (``replay:KIND``): documents, not conversations, trained on every token.
REPLAY_KINDS = ('facts', 'people', 'arithmetic', 'stdlib')
OVERLONG = ('truncate', 'drop')


def default_sft_data_config() -> ml_collections.ConfigDict:
  """Every knob of the SFT data: sources, split, packing, and each generator's counts and settings."""
  cfg = ml_collections.ConfigDict()
  cfg.sources = 'generated'  # spec: e.g. 'generated@1;jsonl:/data/chats/*.jsonl@0.5' (conversations module)
  cfg.val_fraction = 0.05  # held out by a stable hash of each conversation's content
  cfg.data_dir = ''  # TFDS data dir for tfds: sources
  cfg.num_workers = 0  # grain worker processes (0 = in process)
  cfg.num_threads = 2  # grain read-ahead threads; more only add GIL contention on a 2-core machine
  cfg.overlong = 'truncate'  # conversations longer than seq_len: 'truncate' | 'drop'
  cfg.packing_bins = 0  # first-fit packing bins; 0 = batch_size
  cfg.seed = 0  # generator seed (the batch order has its own seed, make_sft_dataset's)
  cfg.counts = ml_collections.ConfigDict(
      {  # conversations per generator in the 'generated' mixture
          'identity': 500,
          'system_prompts': 500,
          'reasoning': 2000,
          'facts': 1000,
          'search': 500,
      }
  )
  cfg.world = facts.default_world_config()  # the fact world: must match the pretraining 'facts' source
  cfg.identity = identity.default_identity_config()
  cfg.system_prompts = system_prompts.default_system_prompts_config()
  cfg.reasoning = reasoning.default_reasoning_config()
  facts_cfg = facts.default_facts_config()
  cfg.facts = ml_collections.ConfigDict({k: v for k, v in facts_cfg.items() if k not in cfg.world})
  search_cfg = search_data.default_search_config()
  cfg.search = ml_collections.ConfigDict({k: v for k, v in search_cfg.items() if k not in cfg.world})
  return cfg


def _with_world(cfg: ml_collections.ConfigDict, block: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({**cfg.world.to_dict(), **cfg[block].to_dict()})


def pretraining_source(cfg: ml_collections.ConfigDict) -> str:
  """The ``data.sources`` entry whose documents teach the known facts of this config's world."""
  return facts.world_spec(cfg.world)


@functools.lru_cache(maxsize=16)
def _generate_cached(cfg_json: str, kind: str, seed: int, n: int) -> tuple[Conversation, ...]:
  cfg = ml_collections.ConfigDict(json.loads(cfg_json))
  if kind == 'identity':
    out = identity.generate(cfg.identity, seed, n)
  elif kind == 'system_prompts':
    out = system_prompts.generate(cfg.system_prompts, seed, n)
  elif kind == 'reasoning':
    out = reasoning.generate(cfg.reasoning, seed, n)
  elif kind == 'facts':
    out = facts.generate(_with_world(cfg, 'facts'), seed, n)
  elif kind == 'search':
    out = search_data.generate(_with_world(cfg, 'search'), seed, n)
  else:
    raise ValueError(f'unknown generator {kind!r}; expected one of {GENERATOR_KINDS[1:]}')
  return tuple(out)


def generate(cfg: ml_collections.ConfigDict, kind: str, seed: int, n: int | None = None) -> list[Conversation]:
  """One generator's conversations (``n`` defaults to ``cfg.counts[kind]``); cached, so callers must not mutate."""
  n = cfg.counts[kind] if n is None else n
  return list(_generate_cached(cfg.to_json(), kind, seed, int(n)))


def default_mixture(cfg: ml_collections.ConfigDict, seed: int) -> list[Conversation]:
  """identity + system prompts + reasoning + known-fact QA + search conversations, ``cfg.counts`` of each, shuffled.

  Add the fact probe's output (``posttrain.probe.probe`` written with ``conversations.write_jsonl``) as a ``jsonl:`` source.
  """
  out = []
  for kind in GENERATOR_KINDS[1:]:
    if cfg.counts[kind]:
      out.extend(generate(cfg, kind, seed))
  random.Random(f'mixture/{seed}').shuffle(out)
  return out


def generators(cfg: ml_collections.ConfigDict) -> dict[str, Callable[[str], list[Conversation]]]:
  """Spec kind -> function of the spec ARG (a count override) for conversations.load_sources."""

  def one(kind: str) -> Callable[[str], list[Conversation]]:
    def fn(arg: str) -> list[Conversation]:
      if kind == 'generated':
        if arg:
          raise ValueError('"generated" takes no argument; set the counts in the config.')
        return default_mixture(cfg, cfg.seed)
      if arg and not arg.isdigit():
        raise ValueError(f'"{kind}:{arg}": the argument is a conversation count.')
      return generate(cfg, kind, cfg.seed, int(arg) if arg else None)

    return fn

  return {kind: one(kind) for kind in GENERATOR_KINDS}


def replay_documents(cfg: ml_collections.ConfigDict, kind: str, split: str = 'train') -> list[str]:
  """The ``split`` documents of the pretraining source ``kind`` (this config's fact world for facts / people), for
  ``replay:KIND`` in the SFT mixture: fine-tuning on chat data alone overwrites what pretraining stored (measured in
  issue 14: the default SFT took the base model's biography recall of people it never asked about from 0.96 to
  0.17); mixing the pretraining text back in is InstructGPT's "PPO-ptx" and nanochat's midtraining remedy."""
  kind = kind or 'facts'
  if kind not in REPLAY_KINDS:
    raise ValueError(f'"replay:{kind}": expected one of {REPLAY_KINDS}')
  spec = pretraining_source(cfg) if kind in ('facts', 'people') else kind
  if kind == 'people':
    spec = 'people' + spec[len('facts') :]
  data_cfg = sources_lib.default_data_config()
  data_cfg.sources = spec
  ((_, ds),) = sources_lib.load_sources(data_cfg, split)
  return [str(d) for d in ds]


def load_sources(cfg: ml_collections.ConfigDict, split: str) -> list[tuple[Any, grain.MapDataset]]:
  """(spec, MapDataset of conversations) per source of ``cfg.sources``, for ``split``; a ``replay:KIND`` source
  holds pretraining documents (str) instead, split as pretraining splits them."""
  return conversations_lib.load_sources(
      cfg.sources,
      split,
      val_fraction=cfg.val_fraction,
      generators=generators(cfg),
      split_sources={'replay': lambda arg, s: replay_documents(cfg, arg, s)},
      data_dir=cfg.data_dir,
  )


# --- rendering and packing ------------------------------------------------------------------------------------------


class _Render:
  """Conversation -> {'inputs', 'targets', 'weights'} of one packed segment, or None when dropped; picklable."""

  def __init__(self, model_proto: bytes, seq_len: int, overlong: str, log: bool = True):
    self.log = log
    self._model_proto = model_proto
    self._seq_len = seq_len
    self._overlong = overlong
    self._tok = None
    self.counts = {'overlong': 0, 'dropped': 0}

  def __getstate__(self) -> dict[str, Any]:
    return {**self.__dict__, '_tok': None}

  def __call__(self, conv: Conversation | None) -> dict[str, np.ndarray] | None:
    if conv is None:
      return None
    if self._tok is None:
      self._tok = tokenizer_lib.SentencePieceTokenizer(self._model_proto)
    if isinstance(conv, str):  # a replayed pretraining document: every token is a target, as in pretraining
      tokens = self._tok.encode(conv, bos=True, eos=True)
      mask = [1] * len(tokens)
    else:
      tokens, mask = chat.render_for_training(conv, self._tok)
    before = self.counts['overlong']
    example = render_example(tokens, mask, self._seq_len, self._overlong, self.counts)
    n = self.counts['overlong']
    if self.log and n != before and n & (n - 1) == 0:  # 1, 2, 4, ...: visible without flooding the log
      logging.warning(
          'SFT: %d conversation(s) longer than seq_len=%d so far (latest %d tokens); %s.',
          n,
          self._seq_len,
          len(tokens),
          'dropped' if self._overlong == 'drop' else 'truncated',
      )
    return example


def render_example(
    tokens: list[int], mask: list[int], seq_len: int, overlong: str, counts: dict[str, int] | None = None
) -> dict[str, np.ndarray] | None:
  """Rendered conversation -> shifted example (weights = mask of the target), truncated or None per ``overlong``."""
  tokens_a = np.asarray(tokens, np.int32)
  mask_a = np.asarray(mask, np.float32)
  counts = {} if counts is None else counts
  if len(tokens_a) - 1 > seq_len:
    counts['overlong'] = counts.get('overlong', 0) + 1
    if overlong == 'drop':
      counts['dropped'] = counts.get('dropped', 0) + 1
      return None
    tokens_a, mask_a = tokens_a[: seq_len + 1], mask_a[: seq_len + 1]
  weights = mask_a[1:]
  if not weights.any():  # nothing to learn (e.g. truncated before the first assistant token)
    counts['dropped'] = counts.get('dropped', 0) + 1
    return None
  return {'inputs': tokens_a[:-1], 'targets': tokens_a[1:], 'weights': weights}


def _is_example(x: Any) -> bool:
  return x is not None


def conversation_dataset(
    cfg: ml_collections.ConfigDict,
    *,
    split: str,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    repeat: bool = True,
) -> grain.MapDataset:
  """This process's conversations in reading order: sharded, shuffled/repeated for 'train', mixed by weight."""
  return pipeline.shard_shuffle_mix(
      load_sources(cfg, split),
      split=split,
      seed=seed,
      process_index=process_index,
      process_count=process_count,
      repeat=repeat,
      what='conversations',
  )


def make_sft_dataset(
    cfg: ml_collections.ConfigDict,
    tokenizer: tokenizer_lib.Tokenizer,
    *,
    split: str,
    seq_len: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    repeat: bool = True,
) -> grain.IterDataset:
  """Packed, loss-masked SFT batches: dicts of FEATURES, each (batch_size, seq_len).

  With ``repeat=False`` the dataset ends after one pass, the last batch padded with all-zero rows (weights 0).
  The iterator's get_state()/set_state() speak JSON and resume exactly.
  """
  if seq_len < 2 or batch_size < 1:
    raise ValueError(f'seq_len={seq_len} must be >= 2 and batch_size={batch_size} >= 1.')
  if cfg.overlong not in OVERLONG:
    raise ValueError(f'sft overlong={cfg.overlong!r}; expected one of {OVERLONG}.')
  convs = conversation_dataset(
      cfg, split=split, seed=seed, process_index=process_index, process_count=process_count, repeat=repeat
  )
  render = _Render(tokenizer.model_proto, seq_len, cfg.overlong)
  # A repeated stream in which every conversation is dropped would loop forever: fail early instead.
  quiet = _Render(tokenizer.model_proto, seq_len, cfg.overlong, log=False)
  first = [quiet(convs[i]) for i in range(min(64, len(convs)))]
  if first and all(x is None for x in first):
    raise ValueError(
        f'SFT: none of the first {len(first)} {split} conversations leaves a trained token at '
        f'seq_len={seq_len} with overlong={cfg.overlong!r}; raise seq_len or use "truncate".'
    )
  examples = convs.map(render).filter(_is_example)
  length = {'inputs': seq_len, 'targets': seq_len, 'weights': seq_len}

  def pack(ds: grain.IterDataset) -> grain.IterDataset:
    bins = int(cfg.packing_bins or batch_size)
    return grain.experimental.FirstFitPackIterDataset(
        ds, length_struct=length, num_packing_bins=bins, shuffle_bins=False
    )

  return pipeline.batched(examples, pack, cfg, batch_size)


def sft_stats(
    cfg: ml_collections.ConfigDict, tokenizer: tokenizer_lib.Tokenizer, split: str, seq_len: int
) -> dict[str, int]:
  """One eager pass over ``split``: conversations, tokens, trained (weight 1) targets, overlong, dropped."""
  render = _Render(tokenizer.model_proto, seq_len, cfg.overlong, log=False)
  stats = {'conversations': 0, 'tokens': 0, 'trained_tokens': 0}
  for _, ds in load_sources(cfg, split):
    for conv in ds:
      if conv is None:
        continue
      stats['conversations'] += 1
      ex = render(conv)
      if ex is not None:
        stats['tokens'] += len(ex['targets'])
        stats['trained_tokens'] += int(ex['weights'].sum())
  stats.update(render.counts)
  if stats['overlong']:
    logging.warning(
        'SFT %s: %d of %d conversations are longer than seq_len=%d (%s); %d dropped in all.',
        split,
        stats['overlong'],
        stats['conversations'],
        seq_len,
        cfg.overlong,
        stats['dropped'],
    )
  return stats
