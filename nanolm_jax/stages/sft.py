"""The SFT stage: masked next-token loss on rendered conversations, starting from a pretrained run.

The shared runner (stages.base) resolves `init_from` (the default pretraining run, trained first when absent) and
takes the model of that run; `prepare` takes its tokenizer, writes the search index, runs the fact probe on the base
model (posttrain.probe: answer what it knows, "I don't know" where it does not) and the answer-first arithmetic
variant, and points `sft.sources` at them. The trainer then runs the same train step as pretraining, with the loss
mask coming from the chat format. At the end the chat evaluation runs (posttrain.chat_eval) and, when
`ablation.enabled`, `finish` trains and evaluates the same SFT without the probe's examples beside it, so that the
effect of the probe is printed side by side.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jax
import ml_collections
from absl import logging

from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import fs
from nanolm_jax import model as model_lib
from nanolm_jax import runs
from nanolm_jax import sharding as shd
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import train_step as step_lib
from nanolm_jax import trainer
from nanolm_jax.data import conversations
from nanolm_jax.data import sft_data
from nanolm_jax.posttrain import chat_eval
from nanolm_jax.posttrain import probe
from nanolm_jax.stages import base
from nanolm_jax.stages import pretrain
from nanolm_jax.synthetic import facts
from nanolm_jax.synthetic import reasoning
from nanolm_jax.synthetic import search_data

DATA_DIR = "sft_data"  # inside the run folder: probe.jsonl, answer_first.jsonl, oracle.jsonl
PROBE_FILE = "probe.jsonl"
ORACLE_FILE = "oracle.jsonl"


def prepare(cfg: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Builds the generated data (index, probe, answer-first); returns the config the trainer runs."""
  cfg = copy.deepcopy(cfg)
  index_dir = runs.search_index_dir(workdir)
  if cfg.sft.search.index_dir and cfg.sft.search.index_dir != index_dir:
    raise ValueError(
        f"sft.search.index_dir={cfg.sft.search.index_dir!r} cannot take effect: the SFT stage writes its index to "
        f"the run's own {index_dir}"
    )
  _check_world(cfg, runs.read_config(cfg.init_from))
  data_dir = fs.join(workdir, DATA_DIR)
  world = facts.world_from_config(cfg.sft.world)
  sft_known = facts.sft_eval_entities(world, cfg.sft.facts.eval_fraction)["sft_known"]
  if cfg.sft.world.get("num_qa", 0) > len(sft_known):
    raise ValueError(
        f"sft.world.num_qa={cfg.sft.world.num_qa} exceeds the {len(sft_known)} known people SFT trains on "
        f"(sft.facts.eval_fraction={cfg.sft.facts.eval_fraction}): pretraining would hold QA about evaluated people"
    )

  index = search_data.index_documents(world, cfg.sft.search.train_people)
  search_data.write_index(index_dir, index)

  extra = []
  first_path = fs.join(data_dir, "answer_first.jsonl")
  if cfg.sft.answer_first_count and not fs.exists(first_path):
    conversations.write_jsonl(first_path, answer_first_conversations(cfg.sft, cfg.sft.answer_first_count))
  if cfg.sft.answer_first_count:
    extra.append(f"jsonl:{first_path}@{cfg.sft.get('answer_first_weight', 1.0)}")
  probe_path = fs.join(data_dir, PROBE_FILE)
  if cfg.probe.enabled:
    if not fs.exists(probe_path):
      convs, stats = probe.run_probe(cfg, world)
      conversations.write_jsonl(probe_path, convs)
      fs.write_text(fs.join(workdir, "probe_stats.json"), json.dumps(stats, indent=2))
    extra.append(f"jsonl:{probe_path}@{cfg.probe.weight}")
  if cfg.ablation.enabled and cfg.ablation.get("facts", "none") == "oracle":
    oracle_path = fs.join(data_dir, ORACLE_FILE)
    if not fs.exists(oracle_path):
      conversations.write_jsonl(oracle_path, probe.oracle_conversations(cfg, world))
  cfg.sft.sources = ";".join([cfg.sft.sources, *extra]) if cfg.sft.sources else ";".join(extra)
  cfg.sft.search.index_dir = index_dir
  return cfg


def _check_world(cfg, base_cfg) -> None:
  want = sft_data.pretraining_source(cfg.sft)
  srcs = str(base_cfg.get("data", {}).get("sources", ""))
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


def _dataset(ctx: trainer.RunContext, split: str, repeat: bool):
  return base.process_batches(ctx, sft_data.make_sft_dataset, ctx.cfg.sft, split, repeat)


def _init_params(ctx: trainer.RunContext, abstract_params: Any) -> Any:
  step, params = ckpt_lib.restore_params(ctx.cfg.init_from, target=abstract_params)
  logging.info("initialised from %s (step %d)", ctx.cfg.init_from, step)
  return params


def evaluate_run(
    cfg: ml_collections.ConfigDict, model: Any, params: Any, tok: tokenizer_lib.Tokenizer
) -> dict[str, Any]:
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
      search_fuzzy=bool(cfg.sft.search.fuzzy),
  )


def _on_end(ctx: trainer.RunContext, params: Any) -> dict[str, Any]:
  model = model_lib.build_model(ctx.cfg, mesh=None)
  params = jax.device_get(params)
  result = evaluate_run(ctx.cfg, model, params, ctx.tokenizer)
  if shd.is_main_process():
    runs.write_eval(ctx.workdir, result)
  return {k: v for k, v in result.items() if k in chat_eval.REPORTED_KEYS}  # with n and interval, for the table


def build(cfg: ml_collections.ConfigDict) -> trainer.Stage:
  del cfg
  return trainer.Stage(
      name="sft",
      make_loss=lambda ctx, apply: step_lib.make_lm_loss(apply, ctx.cfg.train.z_loss),
      make_train_data=lambda ctx: iter(_dataset(ctx, "train", repeat=True)),
      make_eval_data=lambda ctx: _dataset(ctx, "validation", repeat=False),
      on_end=_on_end,
      load_tokenizer=base.inherited_tokenizer,
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
    sources.append(f"jsonl:{fs.join(workdir, DATA_DIR, ORACLE_FILE)}@{cfg.probe.weight}")
  elif mode != "none":
    raise ValueError(f"ablation.facts={mode!r}; expected 'oracle' or 'none'")
  ab.sft.sources = ";".join(sources)
  ab.probe.enabled = False
  ab.ablation.enabled = False
  ab.train.steps = cfg.ablation.steps or cfg.train.steps
  ab.train.checkpoint_every = ab.train.steps
  return ab


def finish(cfg: ml_collections.ConfigDict, workdir: str, out: dict[str, Any]) -> dict[str, Any]:
  """The control run (when ``ablation.enabled``) beside the main one, and the evaluation table of both."""
  out = dict(out)
  columns = {"sft (with probe)": out}
  if cfg.ablation.enabled:
    ab_dir = fs.join(workdir, "ablation_no_probe")
    what = (
        "the probe's questions answered from the truth for everyone"
        if cfg.ablation.get("facts") == "oracle"
        else "no fact QA"
    )
    print(f"Training the control (the same SFT without the probe: {what}) in {ab_dir}", flush=True)
    control = trainer.train(ablation_config(cfg, workdir), ab_dir, build(cfg))  # on every process, like the run
    if shd.is_main_process():
      merged = runs.read_eval(workdir)
      merged["no_probe"] = {k: control.get(k) for k in chat_eval.REPORTED_KEYS + ("val_loss",)}
      runs.write_eval(workdir, merged)
    out["no_probe"] = control
    columns["control (no probe)"] = control
  print("\n" + chat_eval.format_table(columns), flush=True)
  return out


def _summary(cfg: ml_collections.ConfigDict, workdir: str, out: dict[str, Any]) -> list[str]:
  del cfg, out
  return [f"eval.json, metrics.jsonl; chat with: python -m experiments.chat --workdir={workdir}"]


STAGE = base.StageDef(
    name="sft", build=build, requires=pretrain.STAGE, prepare=prepare, finish=finish, summary=_summary
)
