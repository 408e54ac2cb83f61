"""Preference pairs: each record format on inline examples, bad JSONL lines counted and named, TFDS records, and the
rendered / padded batch (rows, reply mask, reward index, left truncation) written out by hand."""

import gzip
import json

import numpy as np
import pytest

from nanolm_jax import chat
from nanolm_jax.posttrain import preferences as prefs


class CharTokenizer:
  """Byte-level stand-in for the project tokenizer: what chat rendering needs, with readable ids."""

  SPECIALS = ("system", "user", "assistant", "tool", "start", "end")
  SPECIALS += ("tool_call_start", "tool_call_end", "tool_result_start", "tool_result_end")
  pad_id, bos_id, eos_id = 0, 1, 2

  def special_id(self, name):
    return 3 + self.SPECIALS.index(name)

  def encode(self, text, bos=False, eos=False):
    return [100 + b for b in text.encode()]


TOK = CharTokenizer()
S, U, A, E = TOK.special_id("start"), TOK.special_id("user"), TOK.special_id("assistant"), TOK.special_id("end")
enc = TOK.encode

Q = [{"role": "user", "content": "Hi?"}]


def test_trl_plain_text():
  pair = prefs.from_record({"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."})
  assert pair == prefs.PreferencePair(Q, "Hello!", "Go away.")


def test_trl_conversational_explicit_prompt_with_system_and_margin():
  record = {
      "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}],
      "chosen": [{"role": "assistant", "content": "Hello!"}],
      "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "Go away."}]}],  # OpenAI parts
      "margin": 1.5,
  }
  pair = prefs.from_record(record)
  assert pair.prompt == [{"role": "system", "content": "Be kind."}, *Q]
  assert (pair.chosen, pair.rejected, pair.margin) == ("Hello!", "Go away.", 1.5)


def test_ultrafeedback_binarized_repeats_the_prompt_in_chosen():
  record = {
      "prompt": "Hi?",
      "chosen": [{"content": "Hi?", "role": "user"}, {"content": "Hello!", "role": "assistant"}],
      "rejected": [{"content": "Hi?", "role": "user"}, {"content": "Go away.", "role": "assistant"}],
      "score_chosen": 8.0,
      "score_rejected": 2.0,
  }
  assert prefs.from_record(record) == prefs.PreferencePair(Q, "Hello!", "Go away.")


def test_implicit_prompt_multi_turn_common_prefix():
  turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
  record = {
      "chosen": turns + [{"role": "assistant", "content": "good"}],
      "rejected": turns + [{"role": "assistant", "content": "bad"}],
  }
  assert prefs.from_record(record) == prefs.PreferencePair(turns, "good", "bad")
  # identical replies still split at the last message (a tie in content, not a format error)
  same = {"chosen": record["chosen"], "rejected": record["chosen"]}
  assert prefs.from_record(same) == prefs.PreferencePair(turns, "good", "good")


def test_anthropic_hh_transcripts():
  record = {
      "chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: 6.",
      "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: Seven.",
  }
  pair = prefs.from_record(record)
  assert pair.prompt == [
      {"role": "user", "content": "What is 2+2?"},
      {"role": "assistant", "content": "4."},
      {"role": "user", "content": "And 3+3?"},
  ]
  assert (pair.chosen, pair.rejected) == ("6.", "Seven.")


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}, "differ before"),
        ({"chosen": "just text", "rejected": "other"}, 'no "Human:"'),
        ({"chosen": "\n\nHuman: A\n\nAssistant:", "rejected": "\n\nHuman: A\n\nAssistant: y"}, "empty content"),
        ({"prompt": "Hi?", "chosen": "x"}, 'no "chosen" and "rejected"'),
        ({"prompt": "Hi?", "chosen": "x", "rejected": 3}, '"rejected" must be text'),
        ({"prompt": "Hi?", "chosen": "x", "rejected": "y", "margin": "big"}, "margin"),
        ({"prompt": [{"role": "wizard", "content": "x"}], "chosen": "x", "rejected": "y"}, "unknown role"),
        (["not", "an", "object"], "not an object"),
    ],
)
def test_bad_records_say_why(record, reason):
  with pytest.raises(prefs.PreferenceError, match=reason):
    prefs.from_record(record)


def test_jsonl_bad_lines_counted_and_named(tmp_path):
  good = {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}
  lines = [
      json.dumps(good),
      "{not json",
      "",  # blank lines are not records
      json.dumps({"prompt": "Hi?", "chosen": "Hello!"}),
      json.dumps({"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: A\n\nAssistant: y"}),
  ]
  (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
  with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
    f.write(json.dumps(good) + "\n")
  pairs, stats = prefs.load_jsonl(str(tmp_path / "*.jsonl*"))
  assert len(pairs) == 3 and pairs[0] == prefs.PreferencePair(Q, "Hello!", "Go away.")
  assert (stats["files"], stats["pairs"], stats["bad"]) == (2, 3, 2)
  (p2, n2, why2), (p4, n4, why4) = stats["bad_lines"]
  assert p2.endswith("a.jsonl") and n2 == 2 and why2.startswith("not JSON")
  assert p4 == p2 and n4 == 4 and '"rejected"' in why4


def test_jsonl_missing_or_empty_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="matches no files"):
    prefs.load_jsonl(str(tmp_path / "none*.jsonl"))
  with pytest.raises(ValueError, match="does not exist"):
    prefs.load_jsonl([str(tmp_path / "gone.jsonl")])
  (tmp_path / "bad.jsonl").write_text("{}\n[1]\n")
  with pytest.raises(ValueError, match=r"no valid pair \(2 bad line\(s\); first problem: .*line 1"):
    prefs.load_jsonl(str(tmp_path / "bad.jsonl"))


def test_write_then_read_round_trip(tmp_path):
  pairs = [
      prefs.PreferencePair([{"role": "system", "content": "S"}, *Q], "Hello!", "Go away.", margin=0.5),
      prefs.PreferencePair(Q, "Yes", "No"),
  ]
  path = str(tmp_path / "pairs.jsonl.gz")
  assert prefs.write_jsonl(path, pairs) == 2
  assert prefs.load_jsonl(path)[0] == pairs


def test_tfds_records_bytes_and_columnar(monkeypatch):
  from nanolm_jax.data.tfds_compat import tfds  # pylint: disable=g-import-not-at-top

  records = [
      {"chosen": b"\n\nHuman: A\n\nAssistant: x", "rejected": b"\n\nHuman: A\n\nAssistant: y"},
      {
          "prompt": {"role": np.array([b"user"]), "content": np.array([b"Hi?"])},
          "chosen": {"role": np.array([b"assistant"]), "content": np.array([b"Hello!"])},
          "rejected": {"role": np.array([b"assistant"]), "content": np.array([b"Go away."])},
          "margin": np.float32(2.0),
      },
      {"chosen": b"no turns", "rejected": b"none"},
  ]
  monkeypatch.setattr(tfds, "data_source", lambda name, **kw: {"train": records, "validation": records})
  pairs, stats = prefs.load_tfds("fake_prefs", "validation")
  assert pairs == [
      prefs.PreferencePair([{"role": "user", "content": "A"}], "x", "y"),
      prefs.PreferencePair(Q, "Hello!", "Go away.", margin=2.0),
  ]
  assert stats["bad"] == 1 and stats["bad_lines"][0][:2] == ("fake_prefs", 2)


# --- rendering and batches -------------------------------------------------------------------------------------------

PAIR = prefs.PreferencePair(Q, "Yo", "Hello", margin=0.25)
PROMPT_IDS = [TOK.bos_id, S, U] + enc("Hi?") + [E, S, A]


def test_render_pair_by_hand():
  r = prefs.render_pair(PAIR, TOK, max_len=64)
  assert r == {"prompt": PROMPT_IDS, "chosen": enc("Yo") + [E], "rejected": enc("Hello") + [E], "truncated": False}
  tokens, mask = chat.render_for_training(PAIR.conversation("rejected"), TOK)
  assert r["prompt"] + r["rejected"] == tokens and sum(mask) == len(r["rejected"])


def test_render_pair_truncates_the_prompt_from_the_left_for_both_sides():
  # prompt 9 tokens, longest reply 6 ("Hello<|end|>"): max_len 12 keeps <s> and the last 5 prompt tokens
  assert len(PROMPT_IDS) == 9
  r = prefs.render_pair(PAIR, TOK, max_len=12)
  assert r["truncated"] and r["prompt"] == [TOK.bos_id] + enc("i?") + [E, S, A]
  assert r["rejected"] == enc("Hello") + [E] and len(r["prompt"] + r["rejected"]) == 12
  assert r["chosen"] == enc("Yo") + [E]  # the shorter reply gets the same prompt
  assert prefs.render_pair(PAIR, TOK, max_len=9)["prompt"] == [TOK.bos_id, S, A]  # the header is the minimum
  assert prefs.render_pair(PAIR, TOK, max_len=8) is None


@pytest.mark.parametrize("padding", ["right", "left"])
def test_pair_batch_rows_masks_and_last_index(padding):
  other = prefs.PreferencePair(Q, "Ok", "No")
  batch, stats = prefs.make_pair_batch([PAIR, other], TOK, seq_len=20, padding=padding)
  assert stats == {"pairs": 2, "truncated": 0, "dropped": 0}
  rows = [enc("Yo"), enc("Ok"), enc("Hello"), enc("No")]  # chosen rows first, then rejected, pair order kept
  for i, reply in enumerate(rows):
    want = PROMPT_IDS + reply + [E]
    n = len(want)
    start = 0 if padding == "right" else 20 - n
    row = batch["tokens"][i]
    assert list(row[start : start + n]) == want and (np.delete(row, range(start, start + n)) == TOK.pad_id).all()
    assert batch["last_index"][i] == start + n - 1 and row[batch["last_index"][i]] == E
    assert list(np.flatnonzero(batch["weights"][i])) == list(range(start + len(PROMPT_IDS), start + n))
    assert list(batch["positions"][i, start : start + n]) == list(range(n))
    assert batch["segment_ids"][i].sum() == n
  assert batch["tokens"].dtype == np.int32 and batch["last_index"].dtype == np.int32
  np.testing.assert_array_equal(batch["margin"], [0.25, 0.0])


def test_make_pair_batch_drops_pairs_that_cannot_fit():
  long = prefs.PreferencePair(Q, "x" * 30, "y")
  batch, stats = prefs.make_pair_batch([PAIR, long], TOK, seq_len=16)
  assert stats == {"pairs": 1, "truncated": 0, "dropped": 1}
  assert batch["tokens"].shape == (2, 16) and batch["margin"].shape == (1,)
  with pytest.raises(ValueError, match="more than seq_len"):
    prefs.pair_batch([prefs.render_pair(PAIR, TOK, 64)], seq_len=8, pad_id=0)


def test_pack_pairs_puts_whole_pairs_first_fit_in_order():
  rendered = [
      {"prompt": [1, 2], "chosen": [3, 4], "rejected": [5]},  # 7 tokens
      {"prompt": [1], "chosen": [6, 7, 8], "rejected": [9, 9]},  # 7 tokens
      {"prompt": [1, 2, 3], "chosen": [4], "rejected": [5]},  # 8 tokens: fits no row after the first two
      {"prompt": [1], "chosen": [2], "rejected": [3]},  # 4 tokens: would fit, but packing keeps the order
  ]
  batch, used = prefs.pack_pairs(rendered, 10, 0, rows=2, margins=[0.5, 1.5, 0.0, 0.0])
  assert used == 2
  assert batch["tokens"].tolist() == [[1, 2, 3, 4, 1, 2, 5, 0, 0, 0], [1, 6, 7, 8, 1, 9, 9, 0, 0, 0]]
  assert batch["segment_ids"].tolist() == [[1, 1, 1, 1, 2, 2, 2, 0, 0, 0], [1, 1, 1, 1, 2, 2, 2, 0, 0, 0]]
  assert batch["positions"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 0, 0, 0], [0, 1, 2, 3, 0, 1, 2, 0, 0, 0]]
  assert batch["reward_side"].tolist() == [[0, 0, 0, 1, 0, 0, -1, 0, 0, 0], [0, 0, 0, 1, 0, 0, -1, 0, 0, 0]]
  assert batch["margin"][0, 3] == 0.5 and batch["margin"][1, 3] == 1.5 and batch["margin"].sum() == 2.0
  small = [{"prompt": [1], "chosen": [2], "rejected": [3]}] * 3  # 4 tokens each: two share a row of 10
  batch, used = prefs.pack_pairs(small, 10, 0, rows=1)
  assert used == 2 and batch["segment_ids"][0].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 0, 0]
  with pytest.raises(ValueError, match="pair 0 takes 7 tokens"):
    prefs.pack_pairs(rendered, 6, 0, rows=2)
