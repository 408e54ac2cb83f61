"""Engine: cache decoding vs recompute, batch/padding independence, sampling statistics, shared prefill, stops, tools."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanolm_jax import chat
from nanolm_jax import engine as E
from nanolm_jax import model as M
from nanolm_jax import sharding as shd
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.tools import calculator

from tests.conftest import make_config

V = 512
GREEDY = E.SamplingParams(temperature=0.0, max_new_tokens=16)


def _cfg(preset="tiny", **over):
  return make_config(
      preset, **{"model.vocab_size": V, "model.d_model": 64, "model.num_layers": 2, "model.max_len": 64, **over}
  )


def _model_and_params(preset="tiny"):
  """Random params drawn in numpy (compiling model.init costs seconds on a busy CPU).

  A large weight scale makes the greedy output vary from step to step (not one repeated token).
  """
  m = M.build_model(_cfg(preset), mesh=None)
  shapes = nn.unbox(jax.eval_shape(m.init, jax.random.PRNGKey(1), jnp.zeros((1, 8), jnp.int32))["params"])
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map_with_path(
      lambda path, a: np.ones(a.shape, a.dtype)
      if "scale" in jax.tree_util.keystr(path)
      else (rng.normal(size=a.shape) * 0.3).astype(a.dtype),
      shapes,
  )
  return m, jax.tree.map(jnp.asarray, params)


_MODELS = {}


def _shared(preset):
  # One model object per preset, so tests share its compiled engine programs (engine._PROGRAMS is keyed by model).
  if preset not in _MODELS:
    _MODELS[preset] = _model_and_params(preset)
  return _MODELS[preset]


@pytest.fixture(scope="module")
def gpt2():
  return _shared("tiny")


_sample = jax.jit(E.sample_token)


@pytest.fixture(scope="module")
def tok(small_tokenizer):
  return tokenizer_lib.SentencePieceTokenizer.load(small_tokenizer)


def _prompts():
  rng = np.random.default_rng(0)
  return [rng.integers(300, V, size=n).tolist() for n in (5, 11, 3)]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "llama_tiny"])
def test_cached_decoding_matches_recompute_at_every_step(preset):
  m, params = _shared(preset)
  prompts = _prompts()
  outs = E.Engine(m, params).generate(prompts, GREEDY)
  # Full recompute of every prompt + completion in one right-padded batch (causal, so padding changes nothing).
  seqs = np.zeros((len(prompts), 32), np.int32)
  for i, (p, o) in enumerate(zip(prompts, outs)):
    seqs[i, : len(p) + len(o.tokens)] = p + o.tokens
  logp_all = np.asarray(jax.jit(lambda x: jax.nn.log_softmax(m.apply({"params": params}, x), axis=-1))(seqs))
  for i, (p, o) in enumerate(zip(prompts, outs)):
    steps = logp_all[i, len(p) - 1 : len(p) + len(o.tokens) - 1]  # the distributions the engine sampled from
    assert len(o.tokens) == GREEDY.max_new_tokens and o.finish_reason == "length"
    np.testing.assert_array_equal(np.argmax(steps, -1), o.tokens)
    np.testing.assert_allclose(o.logprobs, steps[np.arange(len(o.tokens)), o.tokens], atol=1e-4)
  assert len({tuple(o.tokens) for o in outs}) == 3 and len(set(outs[0].tokens)) > 3


@pytest.mark.slow
def test_output_does_not_depend_on_batch_padding_or_chunking(gpt2):
  m, params = gpt2
  prompts = _prompts()
  eng = E.Engine(m, params, chunk_steps=3)
  alone = eng.generate(prompts[:1], GREEDY)[0].tokens
  batched = eng.generate(prompts, GREEDY)  # other rows, longer padding, another batch bucket
  assert batched[0].tokens == alone
  assert E.Engine(m, params).generate(prompts[2:] + prompts[:1], GREEDY)[1].tokens == alone
  # Sampling too: the key of token t of completion r is fold_in(fold_in(seed, r), t), whatever the batch.
  s = E.SamplingParams(temperature=1.0, max_new_tokens=10)
  a = eng.generate(prompts[:1], s, seed=5)[0]
  b = E.Engine(m, params, chunk_steps=16).generate(prompts, s, seed=5)[0]
  assert a.tokens == b.tokens and a.tokens != alone


def _chi_square(counts, probs):
  expected = probs * counts.sum()
  keep = expected > 0
  assert counts[~keep].sum() == 0
  return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()), int(keep.sum()) - 1


# 99.9% quantiles of chi-square with df degrees of freedom.
_CHI2_999 = {2: 13.82, 3: 16.27, 4: 18.47, 7: 24.32}


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.0, 4, 1.0), (1.0, 0, 0.8)])
def test_sampling_frequencies_match_the_filtered_distribution(temperature, top_k, top_p):
  logits = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0], np.float32)
  n = 40_000
  toks, logp = _sample(
      jnp.tile(logits, (n, 1)), jax.random.PRNGKey(0), jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p)
  )
  # Reference distribution computed directly in numpy: softmax(logits / T), restricted to the kept set, renormalised.
  p = np.exp(logits / temperature - np.max(logits / temperature))
  p /= p.sum()
  keep = np.ones(8, bool)
  if top_k:
    keep[top_k:] = False  # logits are sorted descending
  if top_p < 1:
    before = np.cumsum(p) - p
    keep &= before < top_p
  q = np.where(keep, p, 0.0)
  q /= q.sum()
  counts = np.bincount(np.asarray(toks), minlength=8)
  stat, df = _chi_square(counts, q)
  assert stat < _CHI2_999[df], (counts, q * n)
  # Returned logprobs are under the unfiltered temperature-1 distribution.
  ref = logits - np.log(np.exp(logits).sum())
  np.testing.assert_allclose(np.asarray(logp), ref[np.asarray(toks)], atol=1e-5)


def test_top_k_top_p_never_emit_excluded_tokens():
  logits = jax.random.normal(jax.random.PRNGKey(3), (512, 50)) * 3
  order = np.argsort(-np.asarray(logits), axis=-1)
  toks, _ = _sample(logits, jax.random.PRNGKey(4), jnp.float32(1.5), jnp.int32(5), jnp.float32(1.0))
  assert all(t in order[i, :5] for i, t in enumerate(np.asarray(toks)))
  probs = np.asarray(jax.nn.softmax(logits / 1.5, axis=-1))
  toks, _ = _sample(logits, jax.random.PRNGKey(5), jnp.float32(1.5), jnp.int32(0), jnp.float32(0.5))
  for i, t in enumerate(np.asarray(toks)):
    sorted_p = probs[i, order[i]]
    nucleus = order[i, : int(np.searchsorted(np.cumsum(sorted_p), 0.5) + 1)]
    assert t in nucleus


@pytest.mark.slow
def test_n_samples_share_one_prefill(gpt2):
  m, params = gpt2
  p = _prompts()[1]
  eng = E.Engine(m, params)
  s = E.SamplingParams(temperature=1.0, max_new_tokens=8)
  outs = eng.generate([p, p], s, n=2, seed=0)  # a repeated prompt is prefilled once as well
  assert eng.stats["prefill_calls"] == 1 and eng.stats["prefill_rows"] == 1
  assert [(o.prompt_index, o.sample_index) for o in outs] == [(i, j) for i in range(2) for j in range(2)]
  assert len({tuple(o.tokens) for o in outs}) == 4  # different rows draw different tokens
  # Every row decodes from the same prefilled cache: greedy samples are all the single-prompt greedy output.
  greedy = eng.generate([p], GREEDY, n=3)
  assert eng.stats["prefill_rows"] == 2
  ref = E.Engine(m, params).generate([p], GREEDY)[0].tokens
  assert all(o.tokens == ref for o in greedy)


@pytest.mark.slow
def test_no_recompile_for_same_buckets(gpt2):
  m, params = gpt2
  eng = E.Engine(m, params)
  rng = np.random.default_rng(1)
  eng.generate([rng.integers(0, V, 9).tolist()], GREEDY)
  sizes = (eng._programs.prefill._cache_size(), eng._programs.decode._cache_size())  # pylint: disable=protected-access
  # Another length in the same power-of-two bucket, other sampling knobs, another seed: nothing new compiles.
  eng.generate(
      [rng.integers(0, V, 13).tolist()],
      E.SamplingParams(temperature=0.7, top_k=5, top_p=0.9, max_new_tokens=10),
      seed=3,
  )
  assert (eng._programs.prefill._cache_size(), eng._programs.decode._cache_size()) == sizes  # pylint: disable=protected-access


@pytest.mark.slow
def test_stop_tokens_and_stop_strings(gpt2, tok):
  m, params = gpt2
  eng = E.Engine(m, params, tok)
  p = tok.encode("The function", bos=True)
  full = eng.generate([p], GREEDY)[0]
  stop_tok = full.tokens[4]
  first = full.tokens.index(stop_tok)
  out = eng.generate([p], GREEDY, stop_tokens=(stop_tok,))[0]
  assert out.tokens == full.tokens[: first + 1] and out.finish_reason == "stop" and out.stop == stop_tok
  assert out.text == tok.decode(full.tokens[:first])
  text = tok.decode(full.tokens)
  needle = text[len(text) // 2 : len(text) // 2 + 2]
  out = eng.generate([p], GREEDY, stop_strings=("\x00never", needle))[0]
  assert out.finish_reason == "stop" and out.stop == needle
  assert out.text == text[: text.find(needle)]
  assert needle in tok.decode(out.tokens) and needle not in tok.decode(out.tokens[:-1])


@pytest.mark.slow
def test_streaming_callback_sees_every_token_in_order(gpt2, tok):
  m, params = gpt2
  seen = {0: [], 1: []}
  text = {0: "", 1: ""}

  def on_token(row, token, delta, generated):
    assert generated
    seen[row].append(token)
    text[row] += delta

  outs = E.Engine(m, params, tok, chunk_steps=5).generate([tok.encode("A", bos=True)], GREEDY, n=2, on_token=on_token)
  for r, o in enumerate(outs):
    assert seen[r] == o.tokens and text[r] == tok.decode(o.tokens)


class _Fake:
  """A fake model that puts all its mass on next_tokens(tokens, positions): drives the engine through known text."""

  def __init__(self, vocab_size, max_len):
    self.cfg = M.ModelConfig(
        vocab_size=vocab_size, num_layers=1, num_heads=1, num_kv_heads=1, d_model=2, d_ff=2, max_len=max_len
    )
    self.mesh, self.rules = None, ()

  def next_tokens(self, tokens_BxL, positions_BxL):
    raise NotImplementedError

  def apply(self, variables, tokens_BxL, segment_ids_BxL=None, positions_BxL=None, cache=None):
    del variables, segment_ids_BxL
    nxt = self.next_tokens(tokens_BxL, positions_BxL)
    logits = jnp.where(jax.nn.one_hot(nxt, self.cfg.vocab_size) > 0, 30.0, 0.0)
    # Touch the cache with the input so the fake has the real data flow (and the cache is really written).
    touch = lambda c: c.at[:, 0, 0, 0].add(tokens_BxL[:, 0].astype(c.dtype))  # pylint: disable=unnecessary-lambda-assignment
    cache = {
        **cache,
        "k": [touch(c) for c in cache["k"]],
        "v": [touch(c) for c in cache["v"]],
        "index": cache["index"] + tokens_BxL.shape[1],
    }
    return logits, cache


class _Scripted(_Fake):
  """Next token = script[position + 1], whatever the input: forced tokens are the only way off the script."""

  def __init__(self, script, vocab_size, max_len=64):
    super().__init__(vocab_size, max_len)
    self.script = np.array(list(script) + [0] * (max_len + 1 - len(script)), np.int32)

  def next_tokens(self, tokens_BxL, positions_BxL):
    return jnp.asarray(self.script)[positions_BxL + 1]


@pytest.mark.slow
def test_tool_call_is_intercepted_and_result_forced(tok):
  s = {
      n: tok.special_id(n) for n in ("tool_call_start", "tool_call_end", "tool_result_start", "tool_result_end", "end")
  }
  prompt = chat.render_for_completion([{"role": "user", "content": "What is 6*7?"}], tok)
  said = tok.encode("Let me compute.")
  call = [s["tool_call_start"]] + tok.encode("calculator: 6*7") + [s["tool_call_end"]]
  result = [s["tool_result_start"]] + tok.encode("42") + [s["tool_result_end"]]
  after = tok.encode("It is 42.") + [s["end"]]
  # Where the result goes, the script wants other tokens: only forcing can put the result there.
  filler = tok.encode("zzzz" * len(result))[: len(result)]
  assert len(filler) == len(result) and filler != result
  fake = _Scripted(prompt + said + call + filler + after, tok.vocab_size)
  for chunk in (1, 16):
    eng = E.Engine(fake, {}, tok, tools=[calculator.Calculator()], chunk_steps=chunk)
    out = eng.generate(
        [prompt], E.SamplingParams(temperature=1.0, max_new_tokens=40), stop_tokens=chat.stop_tokens(tok)
    )[0]
    assert out.tokens == said + call + result + after
    n1 = len(said + call)
    assert out.generated_mask == [True] * n1 + [False] * len(result) + [True] * len(after)
    assert all(lp == 0.0 for lp in out.logprobs[n1 : n1 + len(result)])
    assert out.tool_calls == [{"name": "calculator", "arguments": "6*7", "result": "42"}]
    assert out.finish_reason == "stop" and out.stop == s["end"]
    assert chat.parse_completion(out.tokens, tok) == [
        {"role": "assistant", "content": "Let me compute.", "tool_calls": [{"name": "calculator", "arguments": "6*7"}]},
        {"role": "tool", "name": "calculator", "content": "42"},
        {"role": "assistant", "content": "It is 42."},
    ]
  # Without tools the same model just samples the filler.
  out = E.Engine(fake, {}, tok).generate(
      [prompt], E.SamplingParams(max_new_tokens=40), stop_tokens=chat.stop_tokens(tok)
  )[0]
  assert out.tokens == said + call + filler + after and all(out.generated_mask)


class _TwoScripts(_Fake):
  """Next token = table[position, token]: rows with different prompts follow different scripts."""

  def __init__(self, scripts, vocab_size, max_len=128):
    """scripts: (prompt, completion) pairs; the table is only read from each prompt's last token on."""
    super().__init__(vocab_size, max_len)
    table = np.zeros((max_len, vocab_size), np.int32)
    seen = {}
    for prompt, completion in scripts:
      script = prompt + completion
      for pos in range(len(prompt) - 1, len(script) - 1):
        a, b = script[pos], script[pos + 1]
        assert seen.setdefault((pos, a), b) == b, "the scripts disagree at one (position, token)"
        table[pos, a] = b
    self.table = table

  def next_tokens(self, tokens_BxL, positions_BxL):
    return jnp.asarray(self.table)[positions_BxL, tokens_BxL]


@pytest.mark.slow
def test_cache_grows_when_a_paused_row_runs_out_of_slots(tok):
  # Row a calls a tool early while row b keeps sampling: a waits (its cache slots pass unused) until the chunk ends.
  # a's completion is 2 tokens short of the 64 slots given to decoding, so the wait runs it out: the engine must
  # grow the cache and a's completion must be what it is alone.
  s = {
      n: tok.special_id(n) for n in ("tool_call_start", "tool_call_end", "tool_result_start", "tool_result_end", "end")
  }
  pa = tok.encode("Please compute it", bos=True)
  pb = tok.encode("Tell me a story", bos=True)
  said = tok.encode("Let me compute.")
  call = [s["tool_call_start"]] + tok.encode("calculator: 6*7") + [s["tool_call_end"]]
  result = [s["tool_result_start"]] + tok.encode("42") + [s["tool_result_end"]]
  tail = tok.encode(" ".join(["It is forty two, as the calculator says"] * 12))
  head = len(said) + len(call) + len(result)
  after = tail[: 62 - head - 1] + [s["end"]]
  story = tok.encode(
      "Once upon a time there was a small model that liked to count sheep, one by one, all night "
      "long, until the sun came up again."
  )[:40] + [s["end"]]
  a_done = said + call + result + after
  assert len(a_done) == 62 and 16 < len(said + call) < 32 < len(story)  # a pauses in chunk 2, b runs through it
  fake = _TwoScripts([(pa, a_done), (pb, story)], tok.vocab_size)
  sp = E.SamplingParams(temperature=1.0, max_new_tokens=62)
  eng = E.Engine(fake, {}, tok, tools=[calculator.Calculator()], chunk_steps=16)
  both = eng.generate([pa, pb], sp, stop_tokens=chat.stop_tokens(tok))
  assert eng.stats["cache_grows"] >= 1
  assert both[0].tokens == a_done and both[0].finish_reason == "stop" and both[0].tool_calls[0]["result"] == "42"
  assert both[1].tokens == story
  alone = E.Engine(fake, {}, tok, tools=[calculator.Calculator()], chunk_steps=16).generate(
      [pa], sp, stop_tokens=chat.stop_tokens(tok)
  )[0]
  assert alone.tokens == a_done and alone.logprobs == both[0].logprobs


@pytest.mark.slow
def test_unknown_tool_gets_an_error_result(tok):
  s = {n: tok.special_id(n) for n in ("tool_call_start", "tool_call_end", "end")}
  prompt = tok.encode("Q", bos=True)
  call = [s["tool_call_start"]] + tok.encode("weather: Paris") + [s["tool_call_end"]]
  fake = _Scripted(prompt + call, tok.vocab_size)
  out = E.Engine(fake, {}, tok, tools=[calculator.Calculator()]).generate(
      [prompt], E.SamplingParams(max_new_tokens=30)
  )[0]
  assert out.tool_calls[0]["name"] == "weather" and "unknown tool 'weather'" in out.tool_calls[0]["result"]
  assert "calculator" in out.tool_calls[0]["result"]


def test_bad_input_is_named(gpt2):
  m, params = gpt2
  eng = E.Engine(m, params)
  long_prompt = list(range(10, 80))  # 70 tokens, context 64
  with pytest.raises(ValueError, match="70 tokens but the model's context is 64"):
    eng.generate([long_prompt], GREEDY)
  out = eng.generate([long_prompt], E.SamplingParams(temperature=0, max_new_tokens=10), truncate_prompt=True)[0]
  assert out.prompt_tokens == 54 and len(out.tokens) == 10
  for bad, name in [
      (dict(temperature=-1.0), "temperature"),
      (dict(top_k=-2), "top_k"),
      (dict(top_p=0.0), "top_p"),
      (dict(max_new_tokens=0), "max_new_tokens"),
      (dict(temperature=float("nan")), "temperature"),
  ]:
    with pytest.raises(ValueError, match=name):
      eng.generate([[1, 2]], E.SamplingParams(**bad))
  with pytest.raises(ValueError, match="empty"):
    eng.generate([[]], GREEDY)
  with pytest.raises(ValueError, match="outside the vocabulary"):
    eng.generate([[1, V + 3]], GREEDY)
  with pytest.raises(ValueError, match="n \\(samples per prompt\\)"):
    eng.generate([[1]], GREEDY, n=0)
  with pytest.raises(ValueError, match="SamplingParams for 1 prompts"):
    eng.generate([[1]], [GREEDY, GREEDY])


def test_per_prompt_sampling_and_sampling_logprobs(gpt2):
  m, params = gpt2
  p = _prompts()[0]
  greedy, sampled, top1 = E.Engine(m, params).generate(
      [p, p, p],
      [
          GREEDY,
          E.SamplingParams(temperature=1.0, max_new_tokens=12),
          E.SamplingParams(temperature=1.0, top_k=1, max_new_tokens=5),
      ],
      seed=0,
  )
  assert sampled.tokens != greedy.tokens
  assert top1.tokens == greedy.tokens[:5] and top1.finish_reason == "length"
  assert np.allclose(top1.sampling_logprobs, 0.0) and np.allclose(top1.logprobs, greedy.logprobs[:5], atol=1e-5)
  assert all(sl >= lp - 1e-5 for sl, lp in zip(sampled.sampling_logprobs, sampled.logprobs))  # same T=1, no filter


@pytest.mark.slow
def test_sharded_decoding_matches_single_device(gpt2):
  m, params = gpt2
  cfg = _cfg()
  mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = M.build_model(cfg, mesh)
  prompts = _prompts()
  ref = E.Engine(m, params).generate(prompts, GREEDY)
  eng = E.Engine(sharded, params, mesh=mesh)
  outs = eng.generate(prompts, GREEDY)
  assert [o.tokens for o in outs] == [o.tokens for o in ref]
  np.testing.assert_allclose([o.logprobs for o in outs], [o.logprobs for o in ref], atol=1e-4)


def test_legacy_generate_still_works(gpt2):
  m, params = gpt2
  p = _prompts()[0]
  outs = E.generate(m, {"params": params}, [p], GREEDY, jax.random.PRNGKey(0), eos_id=-1)
  assert outs[0] == E.Engine(m, params).generate([p], GREEDY)[0].tokens
  with pytest.raises(ValueError, match="exceeds the model's context"):
    E.generate(m, {"params": params}, [list(range(60))], GREEDY, jax.random.PRNGKey(0))
