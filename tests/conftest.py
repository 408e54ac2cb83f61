"""Shared test setup: 8 simulated CPU devices, a private cache, a small corpus and tokenizer, a tiny config."""

import json
import os
import sys
import tempfile

# Must happen before jax is imported anywhere: sharding tests need several devices on a CPU-only machine.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("NANOLM_CACHE", tempfile.mkdtemp(prefix="nanolm_test_cache_"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA's persistent compilation cache, shared by the test processes and the CLIs they start: most runs compile the
# same tiny programs, and a compile is most of a tiny run's time (a 4-step CLI run: 17.6 s cold, 8.8 s warm).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "nanolm_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

import pytest  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


# The longest files, longest first (measured: a quiet 2-core run). pytest-xdist hands out whole files in collection
# order (pytest.ini: --dist loadfile --no-loadscope-reorder); its default order, most tests first, left these few-test
# files for the end, one worker running them alone while the other sat idle.
LONGEST_FIRST = (
    "test_multihost.py",
    "test_gcs.py",
    "test_pretrain_cli.py",
    "test_sft.py",
    "test_compile.py",
    "test_sharding.py",
    "test_rl.py",
    "test_reward_model.py",
    "test_rlhf.py",
    "test_evals.py",
    "test_chat_cli.py",
    "test_interop.py",
    "test_trainer.py",
    "test_model.py",
)


def pytest_collection_modifyitems(items):
  """Longest files first, then the other files with slow tests, then the rest (each in its own order)."""

  def rank(item):
    name = item.path.name
    if name in LONGEST_FIRST:
      return LONGEST_FIRST.index(name)
    return len(LONGEST_FIRST) + (0 if name in slow_files else 1)

  slow_files = {item.path.name for item in items if item.get_closest_marker("slow")}
  items.sort(key=rank)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> str:
  """A `files:` source of real English prose (Python's pydoc topics), as JSONL."""
  import pydoc_data.topics  # pylint: disable=g-import-not-at-top

  d = tmp_path_factory.mktemp("small_corpus")
  path = d / "docs.jsonl"
  with open(path, "w") as f:
    for name in sorted(pydoc_data.topics.topics):
      f.write(json.dumps({"text": pydoc_data.topics.topics[name]}) + "\n")
  return f"files:{path}"


@pytest.fixture(scope="session")
def small_tokenizer(small_corpus, tmp_path_factory) -> str:
  """Path of a 512-token BPE tokenizer trained on small_corpus."""
  from nanolm_jax import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  from nanolm_jax.data import sources  # pylint: disable=g-import-not-at-top

  cfg = sources.default_data_config()
  cfg.sources = small_corpus
  path = str(tmp_path_factory.mktemp("tok") / "tokenizer.model")
  tokenizer_lib.SentencePieceTokenizer.train(sources.iter_texts(cfg, "train"), 512, path)
  return path


def tiny_overrides(corpus: str, tokenizer: str) -> dict:
  """Dotted overrides that make the pretraining config run in seconds in tests."""
  return {
      "model.vocab_size": 512,
      "model.num_layers": 2,
      "model.num_heads": 4,
      "model.d_model": 64,
      "model.max_len": 64,
      "model.dtype": "float32",
      "train.seq_len": 32,
      "train.batch_size": 8,
      "train.steps": 6,
      "train.eval_every": 3,
      "train.eval_batches": 2,
      "train.eval_tasks": "",  # BLiMP at every eval step is tested on its own (test_evals.py)
      "train.log_every": 1,
      "train.checkpoint_every": 3,
      "train.async_checkpointing": False,
      "optim.warmup_steps": 2,
      "data.sources": corpus,
      "tokenizer.path": tokenizer,
      "sample.max_new_tokens": 8,
  }


def make_config(preset: str = "tiny", **overrides):
  from configs import pretrain  # pylint: disable=g-import-not-at-top

  cfg = pretrain.get_config(preset)
  cfg.model.dtype = "float32"  # tests compare numbers tightly; bf16 is tested where it is the point
  cfg.train.eval_tasks = ""  # BLiMP at every eval step is tested on its own (test_evals.py)
  for key, value in overrides.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def cli_args(overrides: dict) -> list[str]:
  return [f"--config.{k}={v}" for k, v in overrides.items()]


@pytest.fixture(scope="session")
def one_step_run(small_corpus, small_tokenizer, tmp_path_factory) -> str:
  """A pretraining run folder of one step at seq_len 64 (a near-random model): the starting run of the stage tests
  that only exercise machinery (reward model, RLHF). Read-only for its users."""
  from nanolm_jax import trainer  # pylint: disable=g-import-not-at-top
  from nanolm_jax.stages import pretrain as pretraining  # pylint: disable=g-import-not-at-top

  cfg = make_config("tiny", **tiny_overrides(small_corpus, small_tokenizer))
  cfg.train.update(steps=1, eval_every=0, checkpoint_every=1, seq_len=64)
  workdir = str(tmp_path_factory.mktemp("one_step_run"))
  trainer.train(cfg, workdir, pretraining.build(None))
  return workdir


@pytest.fixture(scope="session")
def one_step_reward_model(one_step_run, tmp_path_factory) -> dict[str, str]:
  """A one-block reward-model run of 2 steps from one_step_run on padded gold-task pairs ("I don't know." over a
  garbled reply): the starting run of the RLHF and DPO stage tests. {'run', 'train_file'}; read-only for its users."""
  from configs import reward_model as rm_configs  # pylint: disable=g-import-not-at-top
  from nanolm_jax.posttrain import gold_judge  # pylint: disable=g-import-not-at-top
  from nanolm_jax.posttrain import preferences  # pylint: disable=g-import-not-at-top
  from nanolm_jax.stages import base  # pylint: disable=g-import-not-at-top
  from nanolm_jax.stages import reward_model as rm_stage  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp("one_step_reward_model")
  files = {}
  for split, n in (("train", 16), ("validation", 8)):
    convs = gold_judge.prompts(gold_judge.default_gold_config(), n, split)
    files[split] = str(root / f"{split}.jsonl")
    preferences.write_jsonl(
        files[split], [preferences.PreferencePair(c, "I don't know.", "Zorla Zorla.") for c in convs]
    )
  rm = rm_configs.get_config("layers1")  # a proxy of fewer blocks than the policy
  rm.train.update(steps=2, seq_len=48, eval_every=0, checkpoint_every=2, async_checkpointing=False)
  # padded pairs (the reward-model stage test trains packed ones)
  rm.rm.update(pairs_per_step=4, packed_rows=0, train_file=files["train"], val_file=files["validation"])
  base.run(rm_stage.STAGE, rm, str(root / "rm"), init_from=one_step_run)
  return {"run": str(root / "rm"), "train_file": files["train"]}
