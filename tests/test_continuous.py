"""Continuous batching: rows that join a running decode, leave it or are cancelled get their solo completions."""

import numpy as np
import pytest

from nanolm_jax import continuous as C
from nanolm_jax import engine as E
from nanolm_jax import tokenizer as tokenizer_lib

from tests.test_engine import _shared

V = 512
GREEDY = E.SamplingParams(temperature=0.0, max_new_tokens=12)
SAMPLED = E.SamplingParams(temperature=1.0, max_new_tokens=10)


@pytest.fixture(scope="module")
def gpt2():
  return _shared("tiny")


@pytest.fixture(scope="module")
def tok(small_tokenizer):
  return tokenizer_lib.SentencePieceTokenizer.load(small_tokenizer)


def _prompt(n, seed=0):
  return np.random.default_rng(seed).integers(300, V, size=n).tolist()


def _same(got: E.Completion, want: E.Completion):
  assert got.tokens == want.tokens
  assert got.finish_reason == want.finish_reason and got.stop == want.stop
  np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-4)
  np.testing.assert_allclose(got.sampling_logprobs, want.sampling_logprobs, atol=1e-4)


def _solo(eng, prompt, sp, seed=0, row=0, **kw):
  """Engine.generate's row `row` of a call with `seed` (rows before it: copies of the prompt)."""
  return eng.generate([prompt] * (row + 1), sp, seed=seed, **kw)[row]


def _request(prompt, sp, done, key, **kw):
  return C.Request(prompt, sp, on_done=lambda c: done.__setitem__(key, c), **kw)


def test_rows_joining_mid_decode_get_their_solo_completions(gpt2):
  m, params = gpt2
  eng = E.Engine(m, params, chunk_steps=3)
  long_sp = E.SamplingParams(temperature=0.0, max_new_tokens=30)
  a, b, c = _prompt(5, 1), _prompt(19, 2), _prompt(3, 3)
  dec, done = C.SlotDecoder(eng, slots=4, max_new_tokens=32), {}
  dec.add(_request(a, long_sp, done, "a"))
  dec.step()
  dec.step()  # a is 6 tokens in; b's prompt is longer than the cache's past (front padding), c is sampled
  dec.add(_request(b, GREEDY, done, "b"))
  dec.add(_request(c, SAMPLED, done, "c", seed=7, row=2))
  while dec.busy:
    dec.step()
  _same(done["a"], _solo(eng, a, long_sp))
  _same(done["b"], _solo(eng, b, GREEDY))
  _same(done["c"], _solo(eng, c, SAMPLED, seed=7, row=2))
  # a alone decodes at batch 1; b and c grow it to 4; once they are done a goes on alone at batch 1 again.
  assert dec.stats["joins"] == 3 and dec.stats["relayouts"] >= 2 and dec.stats["resizes"] == 2 and dec.active == 0


def test_generate_in_fewer_slots_than_rows_matches_the_engine(gpt2):
  m, params = gpt2
  eng = E.Engine(m, params, chunk_steps=4)
  prompts = [_prompt(n, n) for n in (4, 9, 6)]
  full = eng.generate(prompts, SAMPLED, n=3, seed=11)
  stop = full[1].tokens[3]  # some rows stop early, others run to max_new_tokens: slots are refilled
  want = eng.generate(prompts, SAMPLED, n=3, seed=11, stop_tokens=(stop,))
  got = C.generate(eng, prompts, SAMPLED, n=3, seed=11, stop_tokens=(stop,), slots=2)
  assert len({len(w.tokens) for w in want}) > 1
  for g, w in zip(got, want):
    assert (g.prompt_index, g.sample_index) == (w.prompt_index, w.sample_index)
    _same(g, w)


def test_compaction_keeps_completions_and_bounds_the_cache(gpt2):
  m, params = gpt2
  eng = E.Engine(m, params, chunk_steps=2)
  dec, done = C.SlotDecoder(eng, slots=2, max_new_tokens=16), {}
  prompts = [_prompt(3 + i % 12, 20 + i) for i in range(24)]
  for i, p in enumerate(prompts):
    dec.add(_request(p, GREEDY, done, i))
  while dec.busy:
    dec.step()
  # 24 rows of 12 steps in 2 slots write more slots than the cache holds: it was compacted, not grown.
  assert dec.stats["relayouts"] >= 2 and dec._cache_len <= 128  # pylint: disable=protected-access
  for i, p in enumerate(prompts):
    _same(done[i], _solo(eng, p, GREEDY))


def test_cancelled_row_frees_its_slot_for_a_waiting_row(gpt2):
  m, params = gpt2
  eng = E.Engine(m, params, chunk_steps=2)
  dec, done, streamed = C.SlotDecoder(eng, slots=1, max_new_tokens=32), {}, []
  long_sp = E.SamplingParams(temperature=0.0, max_new_tokens=30)
  a = _request(_prompt(6, 4), long_sp, done, "a", on_token=lambda t, d, g: streamed.append(t))
  dec.add(a)
  dec.add(_request(_prompt(8, 5), GREEDY, done, "b"))
  dec.step()
  dec.step()
  assert dec.active == 1 and len(dec.waiting) == 1 and len(streamed) == 4  # b waits for the only slot
  a.cancelled = True
  dec.step()
  assert done["a"].finish_reason == "cancelled" and len(streamed) == 4  # a stopped at the chunk boundary
  assert dec.stats["cancelled"] == 1 and dec.stats["joins"] == 2  # b took a's slot
  while dec.busy:
    dec.step()
  _same(done["b"], _solo(eng, _prompt(8, 5), GREEDY))


def test_per_row_stops_and_streaming(gpt2, tok):
  m, params = gpt2
  eng = E.Engine(m, params, tok, chunk_steps=3)
  p = tok.encode("The function", bos=True)
  full = eng.generate([p], GREEDY)[0]
  text = tok.decode(full.tokens)
  needle = text[len(text) // 2 : len(text) // 2 + 2]
  dec, done, deltas = C.SlotDecoder(eng, slots=4, max_new_tokens=16), {}, []
  kw = {"on_token": lambda t, d, g: deltas.append(d), "stream_text": True}
  dec.add(_request(p, GREEDY, done, "tok", stop_tokens=(full.tokens[4],)))
  dec.add(_request(p, GREEDY, done, "str", stop_strings=("\x00never", needle), **kw))
  dec.add(_request(p, GREEDY, done, "none"))
  while dec.busy:
    dec.step()
  _same(done["tok"], eng.generate([p], GREEDY, stop_tokens=(full.tokens[4],))[0])
  want = eng.generate([p], GREEDY, stop_strings=("\x00never", needle))[0]
  _same(done["str"], want)
  assert done["str"].text == want.text and want.text in "".join(deltas)
  _same(done["none"], full)


def test_bad_rows_are_refused_when_added(gpt2):
  m, params = gpt2
  dec = C.SlotDecoder(E.Engine(m, params), slots=2)
  with pytest.raises(ValueError, match="prompt"):
    dec.add(C.Request([], GREEDY))
  with pytest.raises(ValueError, match="prompt"):
    dec.add(C.Request([V + 1], GREEDY))
  with pytest.raises(ValueError, match="stop tokens"):
    dec.add(C.Request([5], GREEDY, stop_tokens=tuple(range(20))))
