"""The speedrun chain: crawl -> pretraining -> SFT -> GRPO -> reward model -> RLHF, evaluated between, then a report.

`Chain(cfg, workdir, configs).run()` runs the stages of `cfg.stages` in order inside `workdir`, each a normal run
folder (crawl/, pretrain/, sft/, grpo/, reward_model/, rlhf/), and records each finished stage with its wall time in
speedrun.json: a rerun skips finished stages, and a killed training stage resumes from its checkpoint. The stage
configs are injected (`StageConfigs`: the core never imports configs); `experiments.speedrun` is the entrypoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from typing import Any, Callable

import ml_collections

from nanolm_jax import claims
from nanolm_jax import fs
from nanolm_jax import run_eval
from nanolm_jax.crawl import demo
from nanolm_jax.crawl import inputs as inputs_lib
from nanolm_jax.crawl import local_runner
from nanolm_jax.crawl import writer
from nanolm_jax.stages import base
from nanolm_jax.stages import grpo
from nanolm_jax.stages import pretrain
from nanolm_jax.stages import reward_model
from nanolm_jax.stages import rlhf
from nanolm_jax.stages import sft

STAGES = (
    "crawl",
    "pretrain",
    "eval_base",
    "sft",
    "eval_sft",
    "grpo",
    "eval_grpo",
    "reward_model",
    "rlhf",
    "eval_rlhf",
    "report",
)
STATE_FILE = "speedrun.json"
TRAINING = {"pretrain": pretrain.STAGE, "sft": sft.STAGE, "grpo": grpo.STAGE}
TRAINING |= {"reward_model": reward_model.STAGE, "rlhf": rlhf.STAGE}
# Where each training stage starts from (a stage of this chain), and which run each evaluation scores.
INIT_FROM = {"sft": "pretrain", "grpo": "sft", "reward_model": "sft", "rlhf": "reward_model"}
EVALUATES = {"eval_base": "pretrain", "eval_sft": "sft", "eval_grpo": "grpo", "eval_rlhf": "rlhf"}


@dataclasses.dataclass(frozen=True)
class StageConfigs:
  """The configs the chain runs with, injected by the entrypoint (from the configs package)."""

  stage: Callable[[str, str], ml_collections.ConfigDict]  # (stage name, preset) -> that stage's config
  default: Callable[[str], ml_collections.ConfigDict]  # a stage's default config (base.run's default_config)
  crawl: Callable[[str], ml_collections.ConfigDict]  # crawl preset -> crawl config
  # (workdir, samples) -> the report's path, or None where no report card is installed.
  report: Callable[[str, bool], str] | None = None


class Preempted(Exception):
  """A training stage stopped on a preemption notice (its checkpoint is saved): rerun to resume."""


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Any, where: str) -> None:
  """Sets the nested `overrides` onto `cfg`; a key the stage's config does not have is an error naming it."""
  for key, value in overrides.items():
    if key not in cfg:
      raise ValueError(f"speedrun override {where}.{key}: the stage's config has no key {key!r}")
    if isinstance(value, (dict, ml_collections.ConfigDict)) and isinstance(cfg[key], ml_collections.ConfigDict):
      apply_overrides(cfg[key], value, f"{where}.{key}")
    else:
      cfg[key] = value


def stage_config(
    sr: ml_collections.ConfigDict, name: str, workdir: str, configs: StageConfigs
) -> ml_collections.ConfigDict:
  """The config a training stage of the chain runs: its own preset with the speedrun's overrides."""
  block = sr[name]
  cfg = configs.stage(name, block.preset)
  apply_overrides(cfg, {k: v for k, v in block.items() if k != "preset"}, name)
  if name == "pretrain":  # the crawl's corpus joins the mix, and so the tokenizer's training text
    cfg.data.sources += f";files:{writer.shard_glob(os.path.join(workdir, 'crawl'))}@{sr.crawl_weight}"
  return cfg


class Chain:
  """The chain's state (speedrun.json) and its stages, run in order, skipping the finished ones."""

  def __init__(self, sr: ml_collections.ConfigDict, workdir: str, configs: StageConfigs, input_glob: str | None = None):
    self.sr, self.workdir, self.configs, self.input_glob = sr, workdir, configs, input_glob
    self.stages = [s.strip() for s in sr.stages.split(",") if s.strip()]
    unknown = [s for s in self.stages if s not in STAGES]
    if unknown:
      raise ValueError(f"stages={sr.stages!r}: unknown stage(s) {unknown}")
    for name in TRAINING:  # every override names a key of its stage's config, checked before any work
      stage_config(sr, name, workdir, configs)
    self.path = fs.join(workdir, STATE_FILE)
    fs.makedirs(workdir)
    fresh = {"preset": sr.preset, "started": _now(), "stages": {}, "config": sr.to_dict()}
    self.state = json.loads(fs.read_text(self.path)) if fs.exists(self.path) else fresh

  def run_dir(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def run(self) -> dict[str, Any]:
    t_start = time.perf_counter()
    todo = [s for s in self.stages if self.state["stages"].get(s, {}).get("status") != "done"]
    for i, name in enumerate(self.stages, 1):
      if name not in todo:
        print(f"[{i}/{len(self.stages)}] {name}: done before ({self.state['stages'][name]['wall_s']:.0f} s), skipped")
        continue
      left = sum(self.sr.expected_s.get(s, 0) for s in todo[todo.index(name) :])
      print(
          f"[{i}/{len(self.stages)}] {name}: starting; elapsed {(time.perf_counter() - t_start) / 60:.1f} min, "
          f"ETA {left / 60:.0f} min for the rest",
          flush=True,
      )
      t0 = time.perf_counter()
      out = self.runner(name)()
      wall = time.perf_counter() - t0
      self.state["stages"][name] = {"status": "done", "wall_s": wall, "finished": _now(), **(out or {})}
      fs.write_text(self.path, json.dumps(self.state, indent=2, default=str))
      print(f"[{i}/{len(self.stages)}] {name}: done in {wall / 60:.1f} min", flush=True)
    return self.state

  def runner(self, name: str) -> Callable[[], dict[str, Any] | None]:
    if name == "crawl":
      return self.crawl
    if name in TRAINING:
      return lambda: self.train(name)
    if name in EVALUATES:
      return lambda: self.evaluate(EVALUATES[name])
    return self.report

  def crawl(self) -> dict[str, Any]:
    cfg = self.configs.crawl(self.sr.crawl.preset)
    apply_overrides(cfg, {k: v for k, v in self.sr.crawl.items() if k != "preset"}, "crawl")
    out = self.run_dir("crawl")
    if self.input_glob:
      paths, _ = inputs_lib.unique_paths(inputs_lib.find_inputs(self.input_glob, "", 0, 0, None, 0))
    else:
      d = cfg.input.demo
      paths = demo.write_demo_crawl(
          os.path.join(out, "_demo_warc"), seed=d.seed, num_files=d.num_files, pages_per_file=d.pages_per_file
      )
    rep = local_runner.run(cfg, paths, out, progress=cfg.runner.progress)
    return {"run": "crawl", "kept": rep.get("kept")}

  def train(self, name: str) -> dict[str, Any]:
    workdir = self.run_dir(name)
    cfg = stage_config(self.sr, name, self.workdir, self.configs)
    init_from = self.run_dir(INIT_FROM[name]) if name in INIT_FROM else None
    out = base.run(TRAINING[name], cfg, workdir, init_from=init_from, default_config=self.configs.default)
    if out.get("preempted"):
      raise Preempted(f"{name} was preempted: rerun the speedrun to resume it")
    return {"run": name, "step": out.get("step")}

  def evaluate(self, name: str) -> dict[str, Any]:
    e = self.sr.eval
    opts = run_eval.Options(
        max_examples=e.max_examples, arithmetic=e.arithmetic, batch_size=e.batch_size, max_new_tokens=e.max_new_tokens
    )
    _, path = run_eval.evaluate_workdir(self.run_dir(name), opts, lambda: self.configs.default("sft"))
    return {"run": name, "eval": os.path.relpath(path, self.workdir)}

  def report(self) -> dict[str, Any]:
    """The report card, then the seed's claims measured on this chain as its last section (and claims.json)."""
    measured = claims.measure(self.workdir, compute_n=self.sr.get("claims_n") or None)
    if self.configs.report is None:
      return {"report": None, "claims": {c.name: c.shows for c in measured}}
    path = self.configs.report(self.workdir, bool(self.sr.samples))
    if path:
      fs.write_text(path, fs.read_text(path).rstrip() + "\n\n" + claims.markdown(measured) + "\n")
    return {
        "report": os.path.relpath(path, self.workdir) if path else None,
        "claims": {c.name: c.shows for c in measured},
    }


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
