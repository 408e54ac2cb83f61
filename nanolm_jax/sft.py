"""The SFT stage: masked next-token loss on rendered conversations, starting from a pretrained run.

`prepare` turns a config into a ready run: it resolves `init_from` (the default pretraining run, trained first when
absent), takes the model and tokenizer of that run, writes the search index, runs the fact probe on the base model
(the Llama 3 factuality recipe: answer what it knows, "I don't know" where it does not) and the answer-first
arithmetic variant, and points `sft.sources` at them. Then the shared trainer runs `stage(cfg)`: the same train step
as pretraining, with the loss mask coming from the chat format. At the end the chat evaluation runs
(nanolm_jax.posttrain.chat_eval) and, when `ablation.enabled`, the same SFT without the probe's examples is trained
and evaluated beside it so the effect of the probe is printed side by side.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import jax
import ml_collections
from absl import logging

from nanolm_jax import engine as engine_lib
from nanolm_jax import runs
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import train_step as step_lib
from nanolm_jax import trainer
from nanolm_jax.posttrain import chat_eval
from nanolm_jax.posttrain import conversations
from nanolm_jax.posttrain import facts
from nanolm_jax.posttrain import reasoning
from nanolm_jax.posttrain import search_data
from nanolm_jax.posttrain import sft_data

DEFAULT_PRETRAIN_RUN = os.path.join("runs", "pretrain_tiny")
DEFAULT_SFT_RUN = os.path.join("runs", "sft_tiny")
DATA_DIR = "sft_data"  # inside the run folder: probe.jsonl, answer_first.jsonl, oracle.jsonl
PROBE_FILE = "probe.jsonl"
ORACLE_FILE = "oracle.jsonl"
INDEX_DIR = "search_index"  # inside the run folder: the search tool's documents


def ensure_pretrained(init_from: str) -> str:
  """The run to start from; the default pretraining run is trained first when it does not exist yet."""
  if init_from:
    if not os.path.exists(os.path.join(init_from, "config.json")):
      raise FileNotFoundError(f"--init_from={init_from} is not a run folder (no config.json)")
    return init_from
  if not _finished(DEFAULT_PRETRAIN_RUN):
    from configs import pretrain as pretrain_configs  # pylint: disable=g-import-not-at-top
    from nanolm_jax import pretraining  # pylint: disable=g-import-not-at-top

    print(f"No pretrained model at {DEFAULT_PRETRAIN_RUN}: running the default pretraining first.", flush=True)
    trainer.train(pretrain_configs.get_config("tiny"), DEFAULT_PRETRAIN_RUN, pretraining.stage())
  return DEFAULT_PRETRAIN_RUN


def _finished(workdir: str) -> bool:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return False
  steps = json.load(open(path))["train"]["steps"]
  ckpts = (
      [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
      if os.path.isdir(os.path.join(workdir, "checkpoints"))
      else []
  )
  return bool(ckpts) and max(ckpts) >= steps


def prepare(cfg: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Resolves the starting run and builds the generated data; returns the config the trainer runs."""
  cfg = copy.deepcopy(cfg)
  cfg.init_from = ensure_pretrained(cfg.init_from)
  base_cfg = ml_collections.ConfigDict(json.load(open(os.path.join(cfg.init_from, "config.json"))))
  cfg.model = base_cfg.model  # SFT never changes the architecture
  _check_world(cfg, base_cfg)
  data_dir = os.path.join(workdir, DATA_DIR)
  os.makedirs(data_dir, exist_ok=True)
  world = facts.world_from_config(cfg.sft.world)

  index = search_data.index_documents(world, cfg.sft.search.train_people)
  search_data.write_index(os.path.join(workdir, INDEX_DIR), index)

  extra = []
  first_path = os.path.join(data_dir, "answer_first.jsonl")
  if cfg.sft.answer_first_count and not os.path.exists(first_path):
    conversations.write_jsonl(first_path, answer_first_conversations(cfg.sft, cfg.sft.answer_first_count))
  if cfg.sft.answer_first_count:
    extra.append(f"jsonl:{first_path}@{cfg.sft.get('answer_first_weight', 1.0)}")
  probe_path = os.path.join(data_dir, PROBE_FILE)
  if cfg.probe.enabled:
    if not os.path.exists(probe_path):
      convs, stats = run_probe(cfg, world)
      conversations.write_jsonl(probe_path, convs)
      with open(os.path.join(workdir, "probe_stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
    extra.append(f"jsonl:{probe_path}@{cfg.probe.weight}")
  if cfg.ablation.enabled and cfg.ablation.get("facts", "none") == "oracle":
    oracle_path = os.path.join(data_dir, ORACLE_FILE)
    if not os.path.exists(oracle_path):
      conversations.write_jsonl(oracle_path, oracle_conversations(cfg, world))
  cfg.sft.sources = ";".join([cfg.sft.sources, *extra]) if cfg.sft.sources else ";".join(extra)
  cfg.sft.search.index_dir = os.path.join(workdir, INDEX_DIR)
  return cfg


def _check_world(cfg, base_cfg) -> None:
  want = sft_data.pretraining_source(cfg.sft)
  srcs = str(base_cfg.data.sources)
  if "facts" not in srcs:
    logging.warning(
        "the starting run was not pretrained on the fact world (%s not in data.sources=%r): every fact "
        "will look unknown to the probe",
        want,
        srcs,
    )


def answer_first_conversations(scfg: ml_collections.ConfigDict, n: int) -> list[list[dict[str, Any]]]:
  """The reasoning problems in the answer-first style, cued by a system message (the eval asks both ways)."""
  rcfg = copy.deepcopy(scfg.reasoning)
  rcfg.answer_first = True
  convs = reasoning.generate(rcfg, scfg.seed + 1, n)
  return [[{"role": "system", "content": chat_eval.ANSWER_FIRST_SYSTEM}, *c] for c in convs]


def run_probe(cfg: ml_collections.ConfigDict, world: facts.World) -> tuple[list, dict]:
  """Probes the base model on the SFT part of the known and unknown people (biography cloze prompts)."""
  base = runs.load_run(cfg.init_from)
  eng = engine_lib.Engine(base.model, base.params, base.tokenizer)
  groups = facts.sft_eval_entities(world, cfg.sft.facts.eval_fraction)
  answer_fn = cloze_answer_fn(eng, base.tokenizer, world, temperature=cfg.probe.temperature, seed=cfg.seed)
  entities = list(groups["sft_known"]) + list(groups["sft_unknown"])
  convs, stats = facts.probe(
      answer_fn, world, entities, cfg.probe.samples, knows=cfg.probe.knows, seed=cfg.seed, return_stats=True
  )
  # How well did the probe separate the groups? (The pretraining data decides who is known; the probe measures it.)
  known_names = {e.name for e in groups["sft_known"]}
  stats["probe_known_among_pretrained"] = sum(
      1 for c in convs if not facts.is_idk(c[-1]["content"]) and _name_in(c[0]["content"], known_names)
  )
  logging.info("probe: %s", stats)
  return convs, stats


def oracle_conversations(cfg: ml_collections.ConfigDict, world: facts.World) -> list:
  """The probe's questions (same people, attributes, phrasings), every one answered with the true fact: fact QA
  written without asking the model what it knows, which is what the control is fine-tuned on."""
  groups = facts.sft_eval_entities(world, cfg.sft.facts.eval_fraction)
  index = facts.question_index(world)

  def always_right(convs, n):
    return [[str(e.attributes[a])] * n for e, a in (index[c[-1]["content"]] for c in convs)]

  entities = list(groups["sft_known"]) + list(groups["sft_unknown"])
  return facts.probe(always_right, world, entities, cfg.probe.samples, knows=cfg.probe.knows, seed=cfg.seed)


def _name_in(text: str, names: set[str]) -> bool:
  return any(n in text for n in names)


# Sentence openings from the biographies' own phrasings: a base model recalls a fact by continuing its document.
CLOZES = {
    "birthplace": "{name} was born in the city of",
    "birth_year": "The year of {name}'s birth was",
    "profession": "By trade, {name} was",
    "favorite_color": "{name}'s favorite color was",
    "favorite_food": "{name}'s favorite food was",
}


def cloze_answer_fn(
    eng: engine_lib.Engine, tok: Any, world: facts.World, *, temperature: float, seed: int, max_new_tokens: int = 12
) -> facts.AnswerFn:
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
      q = c[-1]["content"]
      if q not in lookup:
        raise ValueError(f"probe question {q!r} is not a fact-world question")
      e, a = lookup[q]
      prompts.append(tok.encode(f"A short biography of {e.name}. " + CLOZES[a].format(name=e.name), bos=True))
    outs = eng.generate(prompts, sampling, n=n, seed=seed + calls[0], stop_strings=(".", "\n"))
    calls[0] += 1
    texts = [o.text.strip() for o in outs]
    return [texts[i * n : (i + 1) * n] for i in range(len(convs))]

  return answer_fn


def _tokenizer(cfg: ml_collections.ConfigDict, workdir: str) -> Any:
  tok = runs.load_tokenizer(cfg.init_from)
  path = os.path.join(workdir, "tokenizer.model")
  if isinstance(tok, tokenizer_lib.Tokenizer) and not os.path.exists(path):
    tok.save(path)
  return tok


def _dataset(ctx: trainer.RunContext, split: str, repeat: bool):
  cfg = ctx.cfg
  return sft_data.make_sft_dataset(
      cfg.sft,
      ctx.tokenizer,
      split=split,
      seq_len=cfg.train.seq_len,
      batch_size=cfg.train.batch_size // jax.process_count(),
      seed=cfg.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      repeat=repeat,
  )


def _init_params(ctx: trainer.RunContext, abstract_params: Any) -> Any:
  step, params = trainer.restore_params(ctx.cfg.init_from, target=abstract_params)
  logging.info("initialised from %s (step %d)", ctx.cfg.init_from, step)
  return params


def evaluate_run(cfg: ml_collections.ConfigDict, workdir: str, model: Any, params: Any, tok: Any) -> dict[str, Any]:
  """Chat evaluation of (model, params) with this config's world, index and arithmetic difficulty."""
  world = facts.world_from_config(cfg.sft.world)
  index = search_data.index_documents(world, cfg.sft.search.get("train_people", 0))
  return chat_eval.evaluate(
      model,
      params,
      tok,
      world,
      cfg.eval,
      cfg.sft.reasoning,
      cfg.sft.facts.eval_fraction,
      identity_path=cfg.sft.identity.get("path", ""),
      index_docs=index,
      search_k=cfg.sft.search.top_k,
      search_fuzzy=bool(cfg.sft.search.get("fuzzy", False)),
  )


def _on_end(ctx: trainer.RunContext, params: Any) -> dict[str, Any]:
  model = trainer.build_model(ctx.cfg, mesh=None)
  params = jax.device_get(params)
  result = evaluate_run(ctx.cfg, ctx.workdir, model, params, ctx.tokenizer)
  with open(os.path.join(ctx.workdir, "eval.json"), "w") as f:
    json.dump(result, f, indent=2)
  return {k: v for k, v in result.items() if k in chat_eval.METRIC_KEYS}


def stage(cfg: ml_collections.ConfigDict) -> trainer.Stage:
  del cfg
  return trainer.Stage(
      name="sft",
      make_loss=lambda ctx, apply: step_lib.make_lm_loss(apply, ctx.cfg.train.z_loss),
      make_train_data=lambda ctx: iter(_dataset(ctx, "train", repeat=True)),
      make_eval_data=lambda ctx: _dataset(ctx, "validation", repeat=False),
      on_end=_on_end,
      load_tokenizer=_tokenizer,
      init_params=_init_params,
  )


def ablation_config(cfg: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """The same SFT without the probe's examples (the control for the "I don't know" effect).

  ``ablation.facts``: 'oracle' puts the probe's questions back answered with the truth for everyone (fact QA as it
  is usually written, without asking the model what it knows: the Llama 3 / Gekhman et al. 2024 baseline), 'none'
  leaves fact QA out altogether.
  """
  ab = copy.deepcopy(cfg)
  sources = [s for s in cfg.sft.sources.split(";") if PROBE_FILE not in s]
  mode = cfg.ablation.get("facts", "none")
  if mode == "oracle":
    sources.append(f"jsonl:{os.path.join(workdir, DATA_DIR, ORACLE_FILE)}@{cfg.probe.weight}")
  elif mode != "none":
    raise ValueError(f"ablation.facts={mode!r}; expected 'oracle' or 'none'")
  ab.sft.sources = ";".join(sources)
  ab.probe.enabled = False
  ab.ablation.enabled = False
  ab.train.steps = cfg.ablation.steps or cfg.train.steps
  ab.train.checkpoint_every = ab.train.steps
  return ab


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """prepare -> train (-> ablation) -> the evaluation table. Returns {'sft': metrics, 'no_probe': metrics?}."""
  cfg = prepare(cfg, workdir)
  trainer.validate_config(cfg)
  out = {"sft": trainer.train(cfg, workdir, stage(cfg))}
  if cfg.ablation.enabled and not out["sft"].get("preempted"):
    ab_dir = os.path.join(workdir, "ablation_no_probe")
    what = (
        "the probe's questions answered from the truth for everyone"
        if cfg.ablation.get("facts") == "oracle"
        else "no fact QA"
    )
    print(f"Training the control (the same SFT without the probe: {what}) in {ab_dir}", flush=True)
    out["no_probe"] = trainer.train(ablation_config(cfg, workdir), ab_dir, stage(cfg))
    path = os.path.join(workdir, "eval.json")
    merged = json.load(open(path)) if os.path.exists(path) else {}
    merged["no_probe"] = {k: out["no_probe"].get(k) for k in chat_eval.METRIC_KEYS + ("val_loss",)}
    with open(path, "w") as f:
      json.dump(merged, f, indent=2)
  columns = {"sft (with probe)": out["sft"]}
  if "no_probe" in out:
    columns["control (no probe)"] = out["no_probe"]
  print("\n" + chat_eval.format_table(columns), flush=True)
  return out


def ensure_default_run() -> str:
  """The default SFT run folder (runs/sft_tiny), trained with the default config first when absent."""
  if not _finished(DEFAULT_SFT_RUN):
    from configs import sft as sft_configs  # pylint: disable=g-import-not-at-top

    print(f"No SFT model at {DEFAULT_SFT_RUN}: running the default SFT first.", flush=True)
    run(sft_configs.get_config(), DEFAULT_SFT_RUN)
  return DEFAULT_SFT_RUN
