"""A model's recall of the fact world in three forms (cloze, plain QA, chat QA) per group of people, greedy.

The chat evaluation asks one form (the chat turn) and scores the reply; this reads the same people's facts in the
form pretraining stored them (``cloze``, as the probe asks a base model), the form mixed training adds (``qa``) and
the chat form, so a failure can be placed: not stored, stored but not reachable by a question, or lost in SFT.
"""

from __future__ import annotations

from collections.abc import Sequence
import random
from typing import Any

import ml_collections

from nanolm_jax import chat
from nanolm_jax import engine as engine_lib
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.posttrain import probe
from nanolm_jax.synthetic import facts
from nanolm_jax.synthetic.facts import ATTRIBUTES, Entity, World

FORMS = ('cloze', 'qa', 'chat')
GROUPS = ('sft_known', 'eval_known', 'eval_unknown')


def run_world(cfg: ml_collections.ConfigDict) -> tuple[World, float]:
  """The fact world of a run's config and its eval fraction: an SFT-family run's ``sft`` block, else the
  ``facts:`` entry of a pretraining run's ``data.sources``."""
  if 'sft' in cfg:
    return facts.world_from_config(cfg.sft.world), float(cfg.sft.facts.eval_fraction)
  specs = [s.split('@')[0] for s in cfg.get('data', {}).get('sources', '').split(';') if s.startswith('facts')]
  if not specs:
    raise ValueError("the run's config has neither an sft block nor a facts: pretraining source")
  eval_fraction = float(facts.default_facts_config().eval_fraction)
  return facts.world_from_config(facts.parse_world_spec(specs[0].partition(':')[2])), eval_fraction


def prompt_ids(form: str, entity: Entity, attribute: str, tok: tokenizer_lib.Tokenizer, rng: random.Random):
  """The token ids that ask ``entity``'s ``attribute`` in ``form``."""
  if form == 'cloze':
    return tok.encode(
        f'A short biography of {entity.name}. ' + probe.CLOZES[attribute].format(name=entity.name), bos=True
    )
  q = facts.question(entity, attribute, rng)
  if form == 'qa':
    return tok.encode(f'Question: {q}\nAnswer:', bos=True)
  if form == 'chat':
    return chat.render_for_completion([{'role': 'user', 'content': q}], tok)
  raise ValueError(f'unknown form {form!r}; choose from {FORMS}')


def recall(
    eng: engine_lib.Engine,
    tok: tokenizer_lib.Tokenizer,
    world: World,
    entities: Sequence[Entity],
    form: str,
    *,
    seed: int = 0,
    max_new_tokens: int = 24,
) -> dict[str, Any]:
  """Fraction of (entity, attribute) questions answered right in ``form`` (``facts.answers_match``, other values
  of the attribute count as hedging), overall and per attribute, with n and three example replies."""
  rng = random.Random(f'fact_recall/{form}/{seed}')
  items = [(e, a) for e in entities for a in ATTRIBUTES]
  if not items:
    return {'accuracy': float('nan'), 'n': 0, 'by_attribute': {}, 'examples': []}
  prompts = [prompt_ids(form, e, a, tok, rng) for e, a in items]
  stops = ('.', '\n') if form == 'cloze' else ('\n',)
  sampling = engine_lib.SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
  kw = {'stop_tokens': chat.stop_tokens(tok)} if form == 'chat' else {'stop_strings': stops}
  outs = eng.generate(prompts, sampling, **kw)
  hits = [facts.answers_match(o.text, e.attributes[a], world.values[a]) for (e, a), o in zip(items, outs)]
  by_attr = {a: sum(h for (_, b), h in zip(items, hits) if b == a) / len(entities) for a in ATTRIBUTES}
  examples = [(tok.decode(p[-12:]), o.text.strip()) for p, o in list(zip(prompts, outs))[:3]]
  return {'accuracy': sum(hits) / len(hits), 'n': len(hits), 'by_attribute': by_attr, 'examples': examples}


def recall_table(
    model: Any,
    params: Any,
    tok: tokenizer_lib.Tokenizer,
    world: World,
    eval_fraction: float,
    forms: Sequence[str] = FORMS,
) -> dict[str, dict[str, dict[str, Any]]]:
  """{group: {form: recall(...)}} for the SFT-known, evaluated known and evaluated unknown people."""
  for form in forms:
    if form not in FORMS:
      raise ValueError(f'unknown form {form!r}; choose from {FORMS}')
  groups = facts.sft_eval_entities(world, eval_fraction)
  eng = engine_lib.Engine(model, params, tok)
  return {g: {f: recall(eng, tok, world, groups[g], f) for f in forms} for g in GROUPS}


def format_table(table: dict[str, dict[str, dict[str, Any]]]) -> str:
  """Rows = groups, columns = forms: 'accuracy (n)'."""
  forms = list(next(iter(table.values())))
  lines = [f'{"group":<14}' + ''.join(f'{f:>14}' for f in forms)]
  for g, row in table.items():
    lines.append(f'{g:<14}' + ''.join(f'{row[f]["accuracy"]:>8.2f} ({row[f]["n"]:>3})' for f in forms))
  return '\n'.join(lines)
