"""Asking a model what it knows: the Llama 3 factuality recipe on the synthetic fact world.

``probe`` asks the model each question several times (sampled, temperature ~0.7), compares with the truth, and writes
SFT examples: the correct answer where the model knows it (a majority, or all, of its samples are right), an "I
don't know" where it does not (no sample right); in-between cases are skipped. The model is reached only through
``answer_fn(conversations, n) -> [[n reply texts] per conversation]``: ``engine_answer_fn`` asks a chat model,
``cloze_answer_fn`` a base model in its own distribution (biography sentences to complete), ``run_probe`` the SFT
stage's starting run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import random
from typing import Any

from absl import logging
import ml_collections

from nanolm_jax import chat
from nanolm_jax import engine as engine_lib
from nanolm_jax import runs
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.synthetic import facts
from nanolm_jax.synthetic.facts import ATTRIBUTES, Conversation, Entity, World

AnswerFn = Callable[[list[Conversation], int], list[list[str]]]


def probe(
    answer_fn: AnswerFn,
    world: World,
    entities: Sequence[Entity],
    samples_per_question: int = 5,
    *,
    attributes: Sequence[str] = ATTRIBUTES,
    knows: str | float = 'majority',
    idk_max_fraction: float = 0.0,
    use_model_answer: bool = False,
    batch_size: int = 64,
    seed: int = 0,
    return_stats: bool = False,
) -> list[Conversation] | tuple[list[Conversation], dict[str, float]]:
  """Asks the model about each (entity, attribute) ``samples_per_question`` times; returns SFT conversations.

  ``answer_fn(conversations, n)`` must return, per conversation, ``n`` sampled reply texts (use temperature ~0.7
  so that a fact the model only half knows shows up as disagreement). A question is *known* when the fraction of
  correct samples is > 1/2 (``knows='majority'``), == 1 (``'all'``) or >= a float; it becomes the correct answer
  (templated, or the model's own first correct sample with ``use_model_answer``). It is *unknown* when that
  fraction is <= ``idk_max_fraction`` and becomes a varied "I don't know". Anything in between is skipped.
  With ``return_stats`` also returns {'questions', 'known', 'idk', 'skipped', 'sample_accuracy'}.
  """
  if samples_per_question < 1:
    raise ValueError(f'samples_per_question must be >= 1, got {samples_per_question}')
  if knows == 'majority':
    is_known = lambda f: f > 0.5
  elif knows == 'all':
    is_known = lambda f: f >= 1.0
  elif isinstance(knows, (int, float)) and 0 < knows <= 1:
    is_known = lambda f: f >= knows
  else:
    raise ValueError(f"knows must be 'majority', 'all' or a fraction in (0, 1], got {knows!r}")
  rng = random.Random(f'facts/probe/{seed}')
  items = [(e, a, facts.question(e, a, rng)) for e in entities for a in attributes]
  out: list[Conversation] = []
  stats = {'questions': len(items), 'known': 0, 'idk': 0, 'skipped': 0, 'sample_accuracy': 0.0}
  correct_total = 0
  for start in range(0, len(items), batch_size):
    chunk = items[start : start + batch_size]
    prompts = [[{'role': 'user', 'content': q}] for _, _, q in chunk]
    replies = answer_fn(prompts, samples_per_question)
    if len(replies) != len(chunk) or any(len(r) != samples_per_question for r in replies):
      raise ValueError(
          f'answer_fn returned {[len(r) for r in replies]} replies for {len(chunk)} questions x '
          f'{samples_per_question} samples'
      )
    for (entity, attr, q), samples in zip(chunk, replies):
      truth = entity.attributes[attr]
      ok = [facts.answers_match(s, truth, world.values[attr]) for s in samples]
      frac = sum(ok) / len(ok)
      correct_total += sum(ok)
      if is_known(frac):
        reply = samples[ok.index(True)].strip() if use_model_answer else facts.answer(entity, attr, rng)
        stats['known'] += 1
      elif frac <= idk_max_fraction:
        reply = facts.idk_answer(entity, attr, rng)
        stats['idk'] += 1
      else:
        stats['skipped'] += 1
        continue
      out.append([{'role': 'user', 'content': q}, {'role': 'assistant', 'content': reply}])
  stats['sample_accuracy'] = correct_total / max(1, len(items) * samples_per_question)
  logging.info(
      'Fact probe: %d questions, %d known, %d "I don\'t know", %d skipped, sample accuracy %.3f',
      stats['questions'],
      stats['known'],
      stats['idk'],
      stats['skipped'],
      stats['sample_accuracy'],
  )
  return (out, stats) if return_stats else out


def engine_answer_fn(
    engine: Any,
    tokenizer: tokenizer_lib.Tokenizer,
    *,
    temperature: float = 0.7,
    max_new_tokens: int = 48,
    seed: int = 0,
) -> AnswerFn:
  """An ``answer_fn`` for ``probe`` backed by ``engine.Engine``: n samples per question, replies as plain text.

  Each call uses a new seed (seed, seed + 1, ...), so repeated probes of the same question draw fresh samples.
  """
  sampling = engine_lib.SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)
  calls = [0]

  def answer_fn(conversations: list[Conversation], n: int) -> list[list[str]]:
    prompts = [chat.render_for_completion(c, tokenizer) for c in conversations]
    outs = engine.generate(prompts, sampling, n=n, seed=seed + calls[0], stop_tokens=chat.stop_tokens(tokenizer))
    calls[0] += 1
    texts = []
    for o in outs:  # prompt-major: completion i * n + j is sample j of prompt i
      msgs = chat.parse_completion(o.tokens, tokenizer)
      texts.append(' '.join(m['content'] for m in msgs if m['role'] == 'assistant').strip())
    return [texts[i * n : (i + 1) * n] for i in range(len(conversations))]

  return answer_fn


def run_probe(cfg: ml_collections.ConfigDict, world: World) -> tuple[list, dict]:
  """Probes the base model on the SFT part of the known and unknown people (biography cloze prompts)."""
  base = runs.load_run(cfg.init_from)
  eng = engine_lib.Engine(base.model, base.params, base.tokenizer)
  groups = facts.sft_eval_entities(world, cfg.sft.facts.eval_fraction)
  answer_fn = cloze_answer_fn(eng, base.tokenizer, world, temperature=cfg.probe.temperature, seed=cfg.seed)
  entities = list(groups['sft_known']) + list(groups['sft_unknown'])
  convs, stats = probe(
      answer_fn, world, entities, cfg.probe.samples, knows=cfg.probe.knows, seed=cfg.seed, return_stats=True
  )
  # How well did the probe separate the groups? (The pretraining data decides who is known; the probe measures it.)
  stats['confusion'] = confusion(convs, world, groups['sft_known'], groups['sft_unknown'])
  stats['probe_known_among_pretrained'] = stats['confusion']['pretrained']['judged_known']  # the older key
  logging.info('probe: %s', stats)
  return convs, stats


def confusion(
    convs: Sequence[Conversation],
    world: World,
    pretrained: Sequence[Entity],
    never_pretrained: Sequence[Entity],
    attributes: Sequence[str] = ATTRIBUTES,
) -> dict[str, dict[str, int]]:
  """The probe's judgements against the truth, for the people it asked about (each asked every ``attributes``).

  ``convs`` are ``probe``'s output: a question it judged known became an answer, one judged unknown an "I don't
  know", one in between was skipped (absent). Per group ('pretrained': in the pretraining text, i.e. world.known;
  'never_pretrained': world.unknown): questions asked, judged_known, judged_idk, skipped; and per person:
  people, people_judged_known (at least one question judged known), people_judged_unknown (every question judged
  "I don't know"). A perfect probe of a model that memorised its pretraining has judged_known = questions on the
  first group and judged_idk = questions on the second. (run_probe asks only about the SFT part of each group; the
  evaluated people are never probed, so this is all that can be measured of them without a model.)
  """
  lookup = facts.question_index(world)
  judged: dict[str, list[str]] = {}  # name -> the judgement of each question that was not skipped
  for conv in convs:
    entity, _ = lookup[conv[0]['content']]
    judged.setdefault(entity.name, []).append('idk' if facts.is_idk(conv[-1]['content']) else 'known')
  out = {}
  for group, people in (('pretrained', pretrained), ('never_pretrained', never_pretrained)):
    labels = [judged.get(e.name, []) for e in people]
    known = sum(ls.count('known') for ls in labels)
    idk = sum(ls.count('idk') for ls in labels)
    out[group] = {
        'questions': len(people) * len(attributes),
        'judged_known': known,
        'judged_idk': idk,
        'skipped': len(people) * len(attributes) - known - idk,
        'people': len(people),
        'people_judged_known': sum('known' in ls for ls in labels),
        'people_judged_unknown': sum(ls.count('idk') == len(attributes) for ls in labels),
    }
  return out


def oracle_conversations(cfg: ml_collections.ConfigDict, world: World) -> list:
  """The probe's questions (same people, attributes, phrasings), every one answered with the true fact: fact QA
  written without asking the model what it knows, which is what the control is fine-tuned on."""
  groups = facts.sft_eval_entities(world, cfg.sft.facts.eval_fraction)
  index = facts.question_index(world)

  def always_right(convs, n):
    return [[str(e.attributes[a])] * n for e, a in (index[c[-1]['content']] for c in convs)]

  entities = list(groups['sft_known']) + list(groups['sft_unknown'])
  return probe(always_right, world, entities, cfg.probe.samples, knows=cfg.probe.knows, seed=cfg.seed)


# Sentence openings from the biographies' own phrasings: a base model recalls a fact by continuing its document.
CLOZES = {
    'birthplace': '{name} was born in the city of',
    'birth_year': "The year of {name}'s birth was",
    'profession': 'By trade, {name} was',
    'favorite_color': "{name}'s favorite color was",
    'favorite_food': "{name}'s favorite food was",
}


def cloze_answer_fn(
    eng: engine_lib.Engine,
    tok: tokenizer_lib.Tokenizer,
    world: World,
    *,
    temperature: float,
    seed: int,
    max_new_tokens: int = 12,
) -> AnswerFn:
  """Asks a *base* model in its own distribution: each probe question becomes a biography sentence to complete.

  (Few-shot Q/A prompts were tried first: the 4M-parameter default answered 1% of them right although it completes
  the biographies of the same people correctly; a base model's knowledge is best read in the form it learned it.)
  """
  lookup = facts.question_index(world)
  sampling = engine_lib.SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)
  calls = [0]

  def answer_fn(convs, n):
    prompts = []
    for c in convs:
      q = c[-1]['content']
      if q not in lookup:
        raise ValueError(f'probe question {q!r} is not a fact-world question')
      e, a = lookup[q]
      prompts.append(tok.encode(f'A short biography of {e.name}. ' + CLOZES[a].format(name=e.name), bos=True))
    outs = eng.generate(prompts, sampling, n=n, seed=seed + calls[0], stop_strings=('.', '\n'))
    calls[0] += 1
    texts = [o.text.strip() for o in outs]
    return [texts[i * n : (i + 1) * n] for i in range(len(convs))]

  return answer_fn
