"""HF interop against transformers itself: imported GPT-2 / Llama give transformers' logits, exported runs load in
transformers with our logits and greedy tokens, the tokenizer exports, and pickled weights are never read."""

import dataclasses
import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import subprocess
import sys

torch = pytest.importorskip("torch", reason="HF interop tests need the 'hf' extra: pip install -e .[hf]")
transformers = pytest.importorskip("transformers", reason="HF interop tests need the 'hf' extra: pip install -e .[hf]")
tokenizers = pytest.importorskip("tokenizers", reason="HF interop tests need the 'hf' extra: pip install -e .[hf]")
# One thread: the references are tiny matmuls, and two threads spin-waiting for each other (sharing the cores with the
# other test worker) cost ~10 ms of CPU a layer — most of this file's time.
torch.set_num_threads(1)

# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import pretrain as pretrain_configs
from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import model as model_lib
from nanolm_jax import engine
from nanolm_jax.stages import pretrain as pretraining
from nanolm_jax import runs
from nanolm_jax import sharding as shd
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import train_step as step_lib
from nanolm_jax import trainer
from nanolm_jax.interop import hf
from nanolm_jax import hf_tokenizer
from tests.conftest import REPO, make_config, tiny_overrides

# End-to-end runs / subprocess CLIs: left out of the inner loop (pytest -m "not slow"), always in CI.
pytestmark = pytest.mark.slow

TOL = 1e-4
TEXTS = ("def foo(x):\n    return x + 1  # done", "The quick brown fox, 1234 times.", "  spaces\n\n\ttabs")
VOCAB = 320


@pytest.fixture(autouse=True)
def _no_unpickling(monkeypatch):
  """Every test here fails if anything unpickles (pickle.load(s) or torch.load)."""

  def refuse(*args, **kwargs):
    raise AssertionError("unpickling attempted")

  monkeypatch.setattr(pickle, "load", refuse)
  monkeypatch.setattr(pickle, "loads", refuse)
  monkeypatch.setattr(torch, "load", refuse)


@pytest.fixture(scope="module")
def byte_level_tokenizer(tmp_path_factory, small_corpus) -> str:
  """tokenizer.json of a GPT-2-style byte-level BPE trained on the small corpus."""
  path = small_corpus.split(":", 1)[1]
  with open(path) as f:
    texts = [json.loads(line)["text"] for line in f]
  tok = tokenizers.ByteLevelBPETokenizer()
  tok.train_from_iterator(texts[:200], vocab_size=VOCAB, special_tokens=["<|endoftext|>"], show_progress=False)
  out = str(tmp_path_factory.mktemp("bl") / "tokenizer.json")
  tok.save(out)
  return out


def _perturbed(model):
  # Fresh norms are ones and biases zeros: noise makes a mix-up of scales, biases or halves visible in the logits.
  torch.manual_seed(1)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.2 * torch.randn_like(p))
  return model.eval()


HF_MODELS = {
    "gpt2_tied": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_layer=2, n_embd=32, n_head=4, n_positions=48, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0
        )
    ),
    "gpt2_untied": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_layer=2,
            n_embd=32,
            n_head=4,
            n_positions=48,
            vocab_size=VOCAB + 3,
            bos_token_id=0,
            eos_token_id=0,
            tie_word_embeddings=False,
            layer_norm_epsilon=1e-6,
        )
    ),
    "llama_gqa_untied": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=48,
            vocab_size=VOCAB,
            max_position_embeddings=48,
            rope_theta=500.0,
            rms_norm_eps=1e-5,
            bos_token_id=0,
            eos_token_id=0,
            tie_word_embeddings=False,
        )
    ),
    "llama_mqa_tied": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_heads=1,
            intermediate_size=40,
            vocab_size=VOCAB,
            max_position_embeddings=48,
            bos_token_id=0,
            eos_token_id=0,
            tie_word_embeddings=True,
        )
    ),
}


def _hf_logits(model, ids_BxL: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(ids_BxL)).logits.float().numpy()


def _our_logits(run, ids_BxL: np.ndarray) -> np.ndarray:
  return np.asarray(jax.jit(run.model.apply)({"params": run.params}, jnp.asarray(ids_BxL)))


@pytest.mark.parametrize("name", sorted(HF_MODELS))
def test_import_gives_transformers_logits(name, tmp_path, byte_level_tokenizer):
  model = _perturbed(HF_MODELS[name]())
  src = str(tmp_path / "hf")
  model.save_pretrained(src)
  with open(byte_level_tokenizer) as f, open(os.path.join(src, "tokenizer.json"), "w") as g:
    g.write(f.read())
  assert os.path.exists(os.path.join(src, "model.safetensors"))
  hf.import_hf(src, str(tmp_path / "run"), pretrain_configs.get_config("tiny"))

  run = runs.load_run(str(tmp_path / "run"))
  assert isinstance(run.tokenizer, hf_tokenizer.HFTokenizer)
  assert run.tokenizer.bos_id == run.tokenizer.eos_id == 0  # from the HF config: '<|endoftext|>'
  with pytest.raises(KeyError, match="base-model prompting"):
    run.tokenizer.special_id("user")
  ids = [run.tokenizer.encode(t, bos=True)[:12] for t in TEXTS]
  ids_BxL = np.array([x + [0] * (12 - len(x)) for x in ids], np.int64)
  diff = np.abs(_our_logits(run, ids_BxL) - _hf_logits(model, ids_BxL)).max()
  print(f"import {name}: max |logit diff| = {diff:.2e}")
  assert diff <= TOL


def test_imported_run_resumes_in_the_trainer(tmp_path, byte_level_tokenizer):
  """The step-0 checkpoint has the trainer's full state tree, so fine-tuning an imported model can start from it."""
  src = str(tmp_path / "hf")
  HF_MODELS["llama_gqa_untied"]().save_pretrained(src)
  with open(byte_level_tokenizer) as f, open(os.path.join(src, "tokenizer.json"), "w") as g:
    g.write(f.read())
  hf.import_hf(src, str(tmp_path / "run"), pretrain_configs.get_config("tiny"))
  cfg, params = ckpt_lib.load_params(str(tmp_path / "run"))
  mesh = shd.make_mesh(cfg.mesh)
  setup = trainer.make_sharded_step(cfg, model_lib.build_model(cfg, mesh), mesh, lambda *a: None)
  step, state, _ = ckpt_lib.Checkpointer(str(tmp_path / "run")).restore_latest(setup.abstract_state)
  assert step == 0 and isinstance(state, step_lib.TrainState)
  np.testing.assert_array_equal(np.asarray(state.params["embed"]), np.asarray(params["embed"]))


def test_pickle_only_folder_is_rejected(tmp_path):
  src = tmp_path / "hf"
  src.mkdir()
  model = HF_MODELS["gpt2_tied"]()
  (src / "config.json").write_text(model.config.to_json_string())
  (src / "pytorch_model.bin").write_bytes(b"not even read")
  with pytest.raises(ValueError, match=r"only pickled PyTorch weights \(pytorch_model.bin\).*safetensors"):
    hf.import_hf(str(src), str(tmp_path / "run"), pretrain_configs.get_config("tiny"))
  assert not (tmp_path / "run" / "config.json").exists()


def _convert(*args: str) -> subprocess.CompletedProcess:
  """Runs the convert entrypoint as a user would (a subprocess: absl flags are process-global)."""
  return subprocess.run(
      [sys.executable, "-m", "experiments.convert", *args], cwd=REPO, capture_output=True, text=True, timeout=300
  )


def test_cli_rejects_bad_arguments(tmp_path):
  p = _convert(f"--workdir={tmp_path}")
  assert p.returncode != 0 and "exactly one of" in p.stderr
  p = _convert(f"--workdir={tmp_path / 'run'}", f"--from_hf={tmp_path / 'nothing'}")
  assert p.returncode != 0 and "no config.json" in p.stderr


# --- export -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["tiny", "llama_tiny"])
def trained_run(request, small_corpus, small_tokenizer, tmp_path_factory) -> str:
  """A tiny run trained a few steps; the Llama one scans its layers and uses a non-default RoPE base."""
  extra = {"train.steps": 3, "train.eval_every": 0, "train.checkpoint_every": 0}
  if request.param == "llama_tiny":
    extra.update({"model.scan_layers": True, "model.rope_theta": 20000.0, "model.norm_eps": 1e-6})
  cfg = make_config(request.param, **{**tiny_overrides(small_corpus, small_tokenizer), **extra})
  workdir = str(tmp_path_factory.mktemp(f"run_{request.param}"))
  # No eval or end-of-run samples: they only add compile time here.
  trainer.train(cfg, workdir, dataclasses.replace(pretraining.build(None), make_eval_data=None, on_end=None))
  return workdir


def test_export_loads_in_transformers_with_our_logits_and_greedy_tokens(trained_run, tmp_path):
  out = str(tmp_path / "hf")
  _convert(f"--workdir={trained_run}", f"--export_hf={out}")
  assert not [f for f in os.listdir(out) if f.endswith((".bin", ".pt", ".pkl"))]
  run = runs.load_run(trained_run)
  model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  expected = "LlamaForCausalLM" if run.model.cfg.llama else "GPT2LMHeadModel"
  assert type(model).__name__ == expected
  if run.model.cfg.llama:
    assert model.config.num_key_value_heads == 2 and not model.config.tie_word_embeddings

  # Logits on a right-padded batch (no attention mask needed: causal, padding only at the end).
  tok = run.tokenizer
  ids = [tok.encode(t, bos=True)[:20] for t in TEXTS]
  ids_BxL = np.array([x + [tok.pad_id] * (20 - len(x)) for x in ids], np.int64)
  diff = np.abs(_our_logits(run, ids_BxL) - _hf_logits(model, ids_BxL)).max()
  print(f"export {run.model.cfg.style}: max |logit diff| = {diff:.2e}")
  assert diff <= TOL

  # Greedy decoding, same number of new tokens (eos disabled on both sides).
  n = 12
  prompt = tok.encode("The function", bos=True)
  ours = engine.generate(
      run.model,
      {"params": run.params},
      [prompt],
      engine.SamplingParams(temperature=0.0, max_new_tokens=n),
      jax.random.PRNGKey(0),
      eos_id=-1,
  )[0]
  gen = transformers.GenerationConfig(
      do_sample=False,
      max_new_tokens=n,
      min_new_tokens=n,
      eos_token_id=None,
      pad_token_id=tok.pad_id,
      bos_token_id=tok.bos_id,
  )
  with torch.no_grad():
    theirs = model.generate(torch.tensor([prompt]), generation_config=gen)[0, len(prompt) :].tolist()
  assert ours == theirs and len(ours) == n

  # The exported tokenizer tokenizes like ours; importing the export gives back the same model and ids.
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  for t in TEXTS:
    assert hf_tok(t, add_special_tokens=False)["input_ids"] == tok.encode(t)
    assert hf_tok(t)["input_ids"] == tok.encode(t, bos=True)
  hf.import_hf(out, str(tmp_path / "back"), pretrain_configs.get_config("tiny"))
  back = runs.load_run(str(tmp_path / "back"))
  assert [back.tokenizer.encode(t, bos=True) for t in TEXTS] == [tok.encode(t, bos=True) for t in TEXTS]
  assert back.tokenizer.special_id("user") == tok.special_id("user")
  np.testing.assert_allclose(_our_logits(back, ids_BxL), _our_logits(run, ids_BxL), atol=1e-5)


def test_export_of_gqa_gpt2_is_refused():
  from nanolm_jax import model as model_lib

  mc = model_lib.ModelConfig(style="gpt2", num_heads=4, num_kv_heads=2)
  with pytest.raises(ValueError, match="no grouped-query attention"):
    hf.hf_config_from_model(mc, tokenizer_lib.BOS_ID, tokenizer_lib.EOS_ID, tokenizer_lib.PAD_ID, "float32")


def test_blimp_logprobs_equal_transformers_on_the_exported_weights(trained_run, tmp_path):
  """The evaluation harness's per-pair BLiMP log-probabilities (bucketed, padded, batched) against transformers'
  forward of the same weights, one unpadded sentence at a time, summed in float64."""
  from nanolm_jax.evals import harness  # pylint: disable=g-import-not-at-top
  from nanolm_jax.evals import scoring  # pylint: disable=g-import-not-at-top
  from nanolm_jax.evals import tasks as tasks_lib  # pylint: disable=g-import-not-at-top

  out = str(tmp_path / "hf")
  hf.export_hf(trained_run, out)
  run = runs.load_run(trained_run)
  model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  task = tasks_lib.load_task(tasks_lib.REGISTRY["blimp"], max_examples=67)  # one pair of each phenomenon
  scorer = scoring.LogLikelihood(run.model, run.params, batch_size=16)
  ours = harness.score_choice_task(scorer, run.tokenizer, task)["logprobs"]
  worst = 0.0
  for item, pair in zip(task.items, ours):
    for sentence, lp in zip(item.continuations, pair):
      ids = scoring.encode_row(run.tokenizer, "", sentence, run.model.cfg.max_len)[0]
      with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]])).logits[0].double()
      ref = torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum().item()
      worst = max(worst, abs(lp - ref))
  print(f"{run.model.cfg.style}: max |BLiMP log-prob diff| over {2 * len(ours)} sentences = {worst:.2e}")
  assert worst <= TOL
