"""Reward model (issue 15): the hidden-state path, the reward read at the reply's last token (with padding), layer
truncation, learning a separable preference, the batches' resume and layout, config errors before training, and (slow)
a run on the shared trainer whose checkpoint the scorer restores."""

import json
import os
import types

import flax.linen as nn
import jax
import jax.numpy as jnp

import numpy as np
import optax
import pytest

from configs import reward_model as rm_configs
from configs import sft as sft_configs
from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import model as model_lib
from nanolm_jax import runs
from nanolm_jax import train_step as step_lib
from nanolm_jax.posttrain import preferences
from nanolm_jax.posttrain import reward_model as rm_lib
from nanolm_jax.stages import base
from nanolm_jax.stages import reward_model as rm_stage


def _mc(**kw):
  base_kw = dict(vocab_size=64, num_layers=2, num_heads=2, num_kv_heads=2, d_model=32, d_ff=64, max_len=24)
  return model_lib.ModelConfig(**{**base_kw, "dtype": "float32", **kw})


@pytest.mark.parametrize("style,tie", [("gpt2", True), ("llama", False)])
def test_hidden_path_gives_the_same_logits(style, tie):
  mc = _mc(style=style, tie_embeddings=tie)
  model = model_lib.Transformer(mc)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 10), 0, 64)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), tokens)["params"])
  logits = model.apply({"params": params}, tokens)
  h = model.apply({"params": params}, tokens, return_hidden=True)
  head = params["embed"].T if tie else params["lm_head"]
  np.testing.assert_allclose(jnp.einsum("bld,dv->blv", h, head), logits, rtol=1e-5, atol=1e-5)
  hidden_only = nn.unbox(model.init(jax.random.PRNGKey(0), tokens, return_hidden=True)["params"])
  assert "lm_head" not in hidden_only  # the reward model carries no LM head


def test_reward_is_the_head_on_the_hidden_state_at_last_index_with_padding():
  mc = _mc()
  model = rm_lib.RewardModel(mc)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"])
  rows = [[1, 5, 6, 7, 2], [1, 9, 3], [1, 4, 4, 4, 4, 8, 2, 3]]
  rendered = [{"prompt": r[:2], "chosen": r[2:], "rejected": r[2:][::-1]} for r in rows]
  body = model_lib.Transformer(mc)
  # jitted: op-by-op the 6 unpadded forwards and 2 batches took 14 s of the suite, compiled ~3 s
  hidden = jax.jit(lambda p, t: body.apply({"params": p}, t, return_hidden=True))
  want = []  # each row unpadded, run on its own: chosen rows, then rejected rows
  for side in (0, 1):
    for r in rows:
      alone = jnp.asarray([r[:2] + (r[2:] if side == 0 else r[2:][::-1])])
      want.append(float(rm_lib.apply_head(hidden(params[rm_lib.BODY], alone), params[rm_lib.HEAD])[0, -1]))
  score = jax.jit(lambda p, b: rm_lib.rewards(model, p, b))
  for padding in preferences.PADDINGS:
    batch = preferences.pair_batch(rendered, 16, pad_id=0, padding=padding)
    np.testing.assert_allclose(np.asarray(score(params, batch)), want, rtol=1e-5, atol=1e-5)


def test_scorer_chunks_give_the_scores_of_rows_scored_alone():
  # Rows of several lengths over several chunks (padded to a full chunk and a length bucket each) score as alone.
  mc = _mc()
  model = rm_lib.RewardModel(mc)
  params = nn.unbox(model.init(jax.random.PRNGKey(1), jnp.zeros((1, 16), jnp.int32))["params"])
  tok = types.SimpleNamespace(pad_id=0)
  rows = [[1, *range(5, 5 + n)] for n in (3, 9, 1, 14, 6)]
  alone = [float(rm_lib.Scorer(model, params, tok, chunk=1, bucket=1).score_tokens([r])[0]) for r in rows]
  got = rm_lib.Scorer(model, params, tok, chunk=2, bucket=8).score_tokens(rows)
  np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-5)


def test_truncate_layers_keeps_the_first_blocks():
  tree = {"embed": 1, "layer_0": 2, "layer_1": 3, "layer_10": 4, "ln_f": 5}
  assert rm_lib.truncate_layers(tree, 1, scan_layers=False) == {"embed": 1, "layer_0": 2, "ln_f": 5}
  scanned = {"embed": np.zeros(2), "layers": {"w": np.arange(12).reshape(4, 3)}}
  np.testing.assert_array_equal(
      rm_lib.truncate_layers(scanned, 2, scan_layers=True)["layers"]["w"], [[0, 1, 2], [3, 4, 5]]
  )


def _toy_pairs(rng, n):
  """Separable pairs: the chosen reply's last token is one of 10..14, the rejected one's one of 15..19 (drawn
  independently, so a random model is near chance); the rest, shared by both sides, is noise."""
  rendered = []
  for _ in range(n):
    prompt = [1, *rng.integers(20, 60, size=rng.integers(2, 6)).tolist()]
    noise = rng.integers(20, 60, size=rng.integers(1, 5)).tolist()
    rendered.append(
        {
            "prompt": prompt,
            "chosen": noise + [int(rng.integers(10, 15))],
            "rejected": noise + [int(rng.integers(15, 20))],
        }
    )
  return rendered


def test_a_few_steps_learn_a_separable_preference():
  mc = _mc()
  model = rm_lib.RewardModel(mc)
  tx = optax.adam(3e-3)
  state = step_lib.init_state(nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"]), tx)
  apply = lambda p, t, s, q: model.apply({"params": p}, t, s, q)
  # 2 microbatches of 8 pairs: the batches come as 2 consecutive pair batches (groups=2), one per microbatch
  step = jax.jit(step_lib.make_train_step(rm_lib.make_loss(apply, 0.01), tx, microbatches=2))
  rng = np.random.default_rng(0)
  held = rm_stage.batch_of(_toy_pairs(rng, 64), np.zeros(64, np.float32), 16, 0, 1)

  score = jax.jit(lambda p: rm_lib.rewards(model, p, held))

  def held_out(params):
    r = np.asarray(score(params))
    return rm_lib.pair_metrics(r[:64], r[64:])

  before = held_out(state.params)
  data = rm_stage.PairBatches(_toy_pairs(rng, 128), np.zeros(128, np.float32), 16, 16, 0, seed=0, groups=2)
  losses = []
  for _ in range(30):
    state, m = step(state, next(data))
    losses.append(float(m["loss"]))
  after = held_out(state.params)
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2, losses
  assert after["rm_accuracy"] >= 0.9 and before["rm_accuracy"] < 0.75, (before, after)
  assert after["rm_bt_loss"] < before["rm_bt_loss"] and after["rm_n"] == 64


def test_pair_batches_resume_and_keep_pairs_within_a_microbatch():
  rendered = [{"prompt": [1, 2], "chosen": [3 + i, 2], "rejected": [40 + i, 2]} for i in range(10)]
  margins = np.arange(10, dtype=np.float32)
  data = rm_stage.PairBatches(rendered, margins, 4, 8, 0, seed=3, groups=2)
  for _ in range(3):
    next(data)
  state = data.get_state()
  want = [next(data) for _ in range(4)]  # crosses an epoch boundary (10 pairs, 4 a batch)
  again = rm_stage.PairBatches(rendered, margins, 4, 8, 0, seed=3, groups=2)
  again.set_state(json.loads(json.dumps(state)))
  for w in want:
    g = next(again)
    for k in w:
      np.testing.assert_array_equal(g[k], w[k])
  b = want[0]
  assert b["tokens"].shape == (8, 8) and b["last_index"].shape == (8, 1) and b["margin"].shape == (8, 1)
  for g in range(2):  # each half is a pair batch: chosen rows, then their rejected rows with the same margins
    half = slice(4 * g, 4 * g + 4)
    chosen, rejected = b["tokens"][half][:2, 2], b["tokens"][half][2:, 2]
    np.testing.assert_array_equal(rejected - chosen, 37)
    np.testing.assert_array_equal(b["margin"][half][:2], b["margin"][half][2:])


def test_packed_pairs_give_the_loss_of_padded_pairs():
  # Segment masks and restarted positions make a packed pair score as it does in its own padded rows, so the loss
  # and its metrics agree; the packed iterator resumes at the same batch.
  mc = _mc(max_len=48)
  model = rm_lib.RewardModel(mc)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"])
  loss_fn = jax.jit(rm_lib.make_loss(lambda p, t, s, q: model.apply({"params": p}, t, s, q), 0.01))
  rendered = _toy_pairs(np.random.default_rng(2), 6)
  margins = np.linspace(0.0, 1.0, 6).astype(np.float32)
  padded = rm_stage.batch_of(rendered, margins, 16, 0, 1)
  packed, used = preferences.pack_pairs(rendered, 48, 0, rows=3, margins=margins)
  assert used == 6 and (packed["reward_side"] == 1).sum(axis=1).max() >= 2  # rows share pairs
  num_pad, den_pad, aux_pad = loss_fn(params, padded)
  num_pack, den_pack, aux_pack = loss_fn(params, packed)
  assert float(den_pad) == float(den_pack) == 6
  np.testing.assert_allclose(num_pack, num_pad, rtol=1e-5)
  for k in aux_pad:
    np.testing.assert_allclose(aux_pack[k], aux_pad[k], rtol=1e-4, atol=1e-6)
  data = rm_stage.PairBatches(rendered, margins, 4, 48, 0, seed=1, packed_rows=1)
  next(data)
  again = rm_stage.PairBatches(rendered, margins, 4, 48, 0, seed=1, packed_rows=1)
  again.set_state(data.get_state())
  for _ in range(5):  # across epochs (6 pairs, two or three a row)
    want, got = next(data), next(again)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_head_survives_a_checkpoint_round_trip(tmp_path):
  model = rm_lib.RewardModel(_mc())
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
  params = {**params, rm_lib.HEAD: params[rm_lib.HEAD] + 1.5}
  state = step_lib.init_state(params, optax.sgd(0.1))
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  ckpt.save(7, state, {"epoch": 0, "index": 3}, {"stage": "reward_model"})
  ckpt.close()
  step, restored = ckpt_lib.restore_params(str(tmp_path))
  assert step == 7
  np.testing.assert_array_equal(restored[rm_lib.HEAD], params[rm_lib.HEAD])
  np.testing.assert_array_equal(restored[rm_lib.BODY]["embed"], params[rm_lib.BODY]["embed"])


@pytest.fixture
def fake_sft_run(tmp_path):
  """A run folder with only a config: enough for the config checks, which come before any weights are read."""
  d = str(tmp_path / "sft")
  cfg = sft_configs.get_config("tiny")
  cfg.model = model_lib.default_model_config()
  runs.write_config(d, cfg)
  return d


def _prepare(init_from, workdir, **rm):
  cfg = rm_configs.get_config("tiny")
  cfg.rm.update(**rm)
  return base.prepare_config(rm_stage.STAGE, cfg, workdir, init_from=init_from)


def test_bad_configs_fail_before_training(fake_sft_run, tmp_path):
  w = str(tmp_path / "rm")
  with pytest.raises(ValueError, match="matches no files"):
    _prepare(fake_sft_run, w, train_file=str(tmp_path / "missing.jsonl"), val_file=str(tmp_path / "missing.jsonl"))
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"chosen": "x"}\nnot json\n')
  with pytest.raises(ValueError, match="no valid pair"):
    _prepare(fake_sft_run, w, train_file=str(bad), val_file=str(bad))
  with pytest.raises(ValueError, match="needs rm.val_file"):
    _prepare(fake_sft_run, w, train_file=str(bad))
  with pytest.raises(ValueError, match="rm.num_layers=9"):
    _prepare(fake_sft_run, w, num_layers=9)
  with pytest.raises(ValueError, match="rm.pairs_per_step"):
    _prepare(fake_sft_run, w, pairs_per_step=0)
  assert not os.path.exists(w)  # nothing was written


def test_presets_size_the_proxies():
  assert rm_configs.get_config("tiny").rm.num_layers == 0
  assert [rm_configs.get_config(f"layers{k}").rm.num_layers for k in (1, 2, 3)] == [1, 2, 3]
  with pytest.raises(ValueError, match="unknown preset"):
    rm_configs.get_config("huge")


# --- on the shared trainer ---------------------------------------------------------------------------------------


def _write_pairs(path, n, seed):
  rng = np.random.default_rng(seed)
  good, bad = ["Yes, gladly.", "Sure, here it is.", "Of course."], ["No.", "Go away.", "Whatever."]
  pairs = [
      preferences.PreferencePair(
          [{"role": "user", "content": f"Question {int(rng.integers(100))}?"}],
          str(rng.choice(good)),
          str(rng.choice(bad)),
      )
      for _ in range(n)
  ]
  preferences.write_jsonl(str(path), pairs)
  return str(path)


@pytest.mark.slow
def test_stage_trains_evaluates_resumes_and_the_scorer_restores_it(one_step_run, tmp_path):
  base_dir = one_step_run
  rm = rm_configs.get_config("layers1")
  # packed (the default): 8 rows of 64 tokens, each pair's two sides side by side
  rm.train.update(steps=4, seq_len=64, eval_every=2, checkpoint_every=2, async_checkpointing=False, log_every=1)
  rm.rm.update(
      pairs_per_step=4,
      packed_rows=8,
      train_file=_write_pairs(tmp_path / "train.jsonl", 32, 0),
      val_file=_write_pairs(tmp_path / "val.jsonl", 12, 1),
  )
  rm.optim.update(lr=1e-3, warmup_steps=0)
  workdir = str(tmp_path / "rm")
  out = base.run(rm_stage.STAGE, rm, workdir, init_from=base_dir)
  assert out["step"] == 4 and out["rm_n"] == 12
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows if "rm_accuracy" in r][:3] == [0, 2, 4]
  assert runs.read_config(workdir).model.num_layers == 1
  ev = runs.read_eval(workdir)
  score = rm_lib.load_reward_model(workdir)
  pairs, _ = preferences.load_jsonl(rm.rm.val_file)
  r_c = score([p.conversation("chosen") for p in pairs])
  r_r = score([p.conversation("rejected") for p in pairs])
  assert rm_lib.pair_metrics(r_c, r_r)["rm_accuracy"] == pytest.approx(ev["rm_accuracy"])
  rm.train.steps = 6  # a rerun resumes at step 4 from the checkpoint (head and data position included)
  out = base.run(rm_stage.STAGE, rm, workdir)
  assert out["step"] == 6
