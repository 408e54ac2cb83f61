r"""One command from nothing to a chat model and its report card.

  python -m experiments.speedrun                                  # the cpu preset into runs/speedrun (~30 min, 2 cores)
  python -m experiments.speedrun --config=configs/speedrun.py:gpu --input='/data/warc/*.warc.gz' --workdir=/ckpt/sr
  python -m experiments.speedrun --config.sft.train.steps=500      # any stage's config, nested under its name

The chain, in one process: demo crawl (or --input) -> tokenizer trained on the crawl + the embedded corpus (inside
the pretraining stage) -> pretraining -> evaluation -> SFT -> evaluation -> GRPO -> evaluation -> reward model -> RLHF
-> evaluation -> report (report.md, report.json and their plots in the folder). Every stage's run is a normal run
folder under --workdir (crawl/, pretrain/, sft/, grpo/, reward_model/, rlhf/), so the chat CLI, the server and
`experiments.evaluate` read them as they read any run. speedrun.json records each finished stage and its wall time:
a rerun skips finished stages, and a training stage that was killed resumes from its last checkpoint.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
from ml_collections import config_flags
import ml_collections

import configs
from configs import crawl as crawl_configs
from configs import speedrun as speedrun_configs
from experiments import evaluation
from nanolm_jax import fs
from nanolm_jax import metrics
from nanolm_jax import runs
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

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(configs.__file__), "speedrun.py") + ":cpu", "Speedrun config[:preset]."
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/speedrun", "The speedrun folder (every stage's run lives inside).")
_INPUT = flags.DEFINE_string(
    "input", None, "WARC files (a local glob) for the crawl; default: the generated demo crawl."
)

STATE_FILE = "speedrun.json"
TRAINING = {"pretrain": pretrain.STAGE, "sft": sft.STAGE, "grpo": grpo.STAGE}
TRAINING |= {"reward_model": reward_model.STAGE, "rlhf": rlhf.STAGE}
# Where each training stage starts from (a stage of this chain), and which run each evaluation scores.
INIT_FROM = {"sft": "pretrain", "grpo": "sft", "reward_model": "sft", "rlhf": "reward_model"}
EVALUATES = {"eval_base": "pretrain", "eval_sft": "sft", "eval_grpo": "grpo", "eval_rlhf": "rlhf"}


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Any, where: str) -> None:
  """Sets the nested `overrides` onto `cfg`; a key the stage's config does not have is an error naming it."""
  for key, value in overrides.items():
    if key not in cfg:
      raise ValueError(f"speedrun override {where}.{key}: the stage's config has no key {key!r}")
    if isinstance(value, (dict, ml_collections.ConfigDict)) and isinstance(cfg[key], ml_collections.ConfigDict):
      apply_overrides(cfg[key], value, f"{where}.{key}")
    else:
      cfg[key] = value


def stage_config(sr: ml_collections.ConfigDict, name: str, workdir: str) -> ml_collections.ConfigDict:
  """The config a training stage of the chain runs: its own preset with the speedrun's overrides."""
  block = sr[name]
  cfg = importlib.import_module(f"configs.{name}").get_config(block.preset)
  apply_overrides(cfg, {k: v for k, v in block.items() if k != "preset"}, name)
  if name == "pretrain":  # the crawl's corpus joins the mix, and so the tokenizer's training text
    cfg.data.sources += f";files:{writer.shard_glob(os.path.join(workdir, 'crawl'))}@{sr.crawl_weight}"
  return cfg


class Speedrun:
  """The chain's state (speedrun.json) and its stages, run in order, skipping the finished ones."""

  def __init__(self, sr: ml_collections.ConfigDict, workdir: str, input_glob: str | None):
    self.sr, self.workdir, self.input_glob = sr, workdir, input_glob
    self.stages = [s.strip() for s in sr.stages.split(",") if s.strip()]
    unknown = [s for s in self.stages if s not in speedrun_configs.STAGES]
    if unknown:
      raise ValueError(f"stages={sr.stages!r}: unknown stage(s) {unknown}")
    for name in TRAINING:  # every override names a key of its stage's config, checked before any work
      stage_config(sr, name, workdir)
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
    cfg = crawl_configs.get_config(self.sr.crawl.preset)
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
    cfg = stage_config(self.sr, name, self.workdir)
    init_from = self.run_dir(INIT_FROM[name]) if name in INIT_FROM else None
    out = base.run(TRAINING[name], cfg, workdir, init_from=init_from, default_config=configs.default_config)
    if out.get("preempted"):
      raise SystemExit(f"{name} was preempted: rerun the speedrun to resume it")
    return {"run": name, "step": out.get("step")}

  def evaluate(self, name: str) -> dict[str, Any]:
    e = self.sr.eval
    opts = evaluation.Options(
        max_examples=e.max_examples, arithmetic=e.arithmetic, batch_size=e.batch_size, max_new_tokens=e.max_new_tokens
    )
    _, path = evaluation.evaluate_workdir(self.run_dir(name), opts)
    return {"run": name, "eval": os.path.relpath(path, self.workdir)}

  def report(self) -> dict[str, Any]:
    try:
      from experiments import report as report_cli  # pylint: disable=g-import-not-at-top
    except ImportError:  # the report card module is optional for the chain itself
      return {"report": None}
    path = report_cli.write_report(self.workdir, samples=self.sr.samples)
    return {"report": os.path.relpath(path, self.workdir)}


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def main(argv):
  del argv
  metrics.quiet_library_logs()
  t0 = time.perf_counter()
  try:
    sr = Speedrun(_CONFIG.value, _WORKDIR.value, _INPUT.value)
    state = sr.run()
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"speedrun error: {e}")
  total = sum(s.get("wall_s", 0) for s in state["stages"].values())
  print(
      f"speedrun {state['preset']} in {fs.abspath(_WORKDIR.value)}: stages {total / 60:.1f} min in all, this call "
      f"{(time.perf_counter() - t0) / 60:.1f} min"
  )
  if runs.is_run(sr.run_dir("rlhf")):
    print(f"chat with it: python -m experiments.chat --workdir={sr.run_dir('rlhf')}")


if __name__ == "__main__":
  app.run(main)
