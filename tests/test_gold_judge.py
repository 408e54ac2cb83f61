"""The gold judge ranks hand-built replies as a person would, its components match hand computation, its prompts are
deterministic with disjoint splits, and generate_pairs labels pairs by it (ties skipped, Bradley-Terry noise)."""

import math

import pytest

from nanolm_jax.posttrain import gold_judge as gj


@pytest.fixture(scope="module")
def cfg():
  c = gj.default_gold_config()
  c.world.num_known, c.world.num_unknown, c.world.num_index_only = 24, 24, 0
  return c


@pytest.fixture(scope="module")
def judge(cfg):
  return gj.GoldJudge(cfg)


@pytest.fixture(scope="module")
def known(judge):
  e = judge.world.known[0]
  return e, [{"role": "user", "content": f"Tell me about {e.name}."}]


def _good(e):
  a = e.attributes
  return f"{e.name} was born in {a['birthplace']} in {a['birth_year']}. {e.name} worked as a {a['profession']}."


def _other(judge, e, attr):
  return next(str(x.attributes[attr]) for x in judge.world.entities if x.attributes[attr] != e.attributes[attr])


def test_ranks_replies_as_a_person_would(judge, known):
  e, p = known
  a = e.attributes
  s = lambda reply: judge.score(p, reply)
  one_fact = f"{e.name} was born in {a['birthplace']}."
  assert 0.9 < s(_good(e)) <= 1.0
  assert s(_good(e)) > s(one_fact) > s("I'm nanolm, a small language model made by the nanolm_jax engineers.")
  assert s(one_fact) > s(f"{e.name} was born in {_other(judge, e, 'birthplace')}.")  # a wrong fact
  assert s(one_fact) > s((one_fact + " ") * 4)  # a loop
  assert s(one_fact) > s(f"{e.name} was born in {a['birthplace']} and worked as")  # cut mid-sentence
  assert s(one_fact) > s(f"{e.name} Zorbrix was blorfed in Quaxle {a['birthplace']}.")  # garbled words
  assert s(f"Tell me about {e.name}.") < s(one_fact) / 2  # echoing the prompt is no answer
  assert s(f"Tell me about {e.name}. " * 3) < s(f"Tell me about {e.name}.")
  idk = f"I don't know anything about {e.name}."
  assert s(one_fact) > s(idk) > s(f"{e.name} was born in {_other(judge, e, 'birthplace')}.")  # honest > wrong
  cities = " or ".join(sorted(judge.world.values["birthplace"])[:4] + [a["birthplace"]])
  assert s(f"{e.name} was born in {cities}.") < s(idk)  # hedging over candidates is not knowing
  assert s(one_fact + " " + one_fact.replace("born in", "born in the city of")) <= s(one_fact)  # a fact once


def test_overlong_reply_loses_to_in_band(judge, known):
  e, p = known
  filler = " ".join(
      f"{e.name} {w} {v} {u}."
      for w in ("liked", "loved", "enjoyed")
      for v in ("one", "two", "three")
      for u in ("day", "year", "city")
  )  # distinct trigrams: only the length is off
  long_reply = _good(e) + " " + filler
  c = judge.components(p, long_reply)
  assert c["words"] > 80 and c["length"] == 0.0 and c["score"] == 0.0
  mid = _good(e) + " " + " ".join(filler.split(". ")[:6]) + "."
  assert 40 < judge.components(p, mid)["words"] < 80
  assert judge.score(p, _good(e)) > judge.score(p, mid) > 0.0


def test_unknown_person_is_best_declined(judge):
  e = judge.world.unknown[0]
  p = [{"role": "user", "content": f"Who was {e.name}?"}]
  idk = judge.components(p, f"I don't know who {e.name} is, so I can't answer that.")
  lucky = judge.components(p, f"{e.name} was born in {e.attributes['birthplace']}.")  # true, but cannot be known
  assert idk["declined"] == 1.0 and idk["score"] == pytest.approx(0.05 + 0.2 + 0.75 * 0.6)
  assert lucky["true_facts"] == 0 and lucky["false_facts"] == 1 and lucky["score"] < idk["score"] / 2


def test_components_by_hand(judge, known):
  e, p = known
  a = e.attributes
  wrong_year = a["birth_year"] + 1
  reply = f"{e.name} was born in {a['birthplace']} in {wrong_year}. {e.name} liked {a['favorite_color']} best."
  c = judge.components(p, reply)
  assert (c["on_topic"], c["true_facts"], c["false_facts"], c["declined"]) == (1.0, 2.0, 1.0, 0.0)
  assert c["facts"] == 0.8 and c["content"] == pytest.approx(0.05 + 0.2 + 0.75 * 0.8)
  assert c["honesty"] == 0.5 and c["words"] == 13  # name 2 + 'was born in C in Y' 6 + name 2 + 'liked V best' 3
  assert (c["fluency"], c["repetition"], c["fragments"], c["complete"], c["length"], c["format"]) == (1, 1, 1, 1, 1, 1)
  assert c["score"] == pytest.approx(0.85 * 0.5)
  last = e.name.split()[-1]
  c = judge.components(p, f"{last} was gorblat")  # 3 words, one unknown; half the name; unterminated
  assert c["on_topic"] == 0.5 and c["content"] == pytest.approx(0.05 + 0.1)
  assert c["fluency"] == pytest.approx((2 / 3) ** 2) and c["length"] == pytest.approx(0.4 + 0.6 * 3 / 6)
  assert c["complete"] == 0.5 and c["repetition"] == 1.0 and c["fragments"] == 1.0
  assert c["score"] == pytest.approx(0.15 * (2 / 3) ** 2 * 0.7 * 0.5)
  c = judge.components(p, f"{a['birthplace']}.")  # a bare true value: whose birthplace? one word, a fragment
  assert (c["on_topic"], c["true_facts"], c["facts"], c["fragments"]) == (0.0, 1.0, 0.25, 0.5)
  assert judge.components(p, f"{e.name}'s.")["fragments"] == 0.5  # the possessive's "s" is no third word
  c = judge.components(p, f"search: {e.name}. Yes. Yes.")  # markup, lowercase, a repeated fragment sentence
  assert (
      c["format"] == pytest.approx(0.5 * 0.8)
      and c["repetition"] == pytest.approx(2 / 3)
      and c["fragments"] == pytest.approx(2 / 3)
  )


def test_prompts_deterministic_and_splits_disjoint(cfg, judge):
  train = gj.prompts(cfg, 80, "train")
  assert train == gj.prompts(cfg, 80, "train") and train != gj.prompts(cfg, 80, "train", seed=1)
  val = gj.prompts(cfg, 80, "validation")
  people = lambda convs: {judge.person(c).name for c in convs}
  assert people(train) and people(val) and not people(train) & people(val)
  unknown = sum(judge.person(c).name not in {e.name for e in judge.world.known} for c in train)
  assert 0.1 < unknown / 80 < 0.45  # unknown_fraction 0.25
  assert all(len(c) == 1 and c[0]["role"] == "user" for c in train)
  with pytest.raises(ValueError):
    judge.person([{"role": "user", "content": "Tell me about nobody."}])


def _fake_answer_fn(replies_for, calls):
  def answer_fn(convs, n):
    calls.append((len(convs), n))
    return [replies_for(c, n) for c in convs]

  return answer_fn


def test_generate_pairs_labels_by_gold_and_skips_ties(cfg, judge):
  convs = gj.prompts(cfg, 10, "train")
  known_names = {e.name for e in judge.world.known}
  good = (
      lambda c: _good(judge.person(c))
      if judge.person(c).name in known_names
      else f"I don't know {judge.person(c).name}."
  )
  bad = lambda c: f"{judge.person(c).name} was born"
  calls = []
  position = lambda c: next(i for i, x in enumerate(convs) if x is c)  # prompts may repeat: by identity
  # even prompts: bad first then good; odd prompts: the same reply twice (a tie)
  fn = _fake_answer_fn(lambda c, n: [bad(c), good(c)] if position(c) % 2 == 0 else [good(c)] * 2, calls)
  pairs, stats = gj.generate_pairs(fn, convs, judge, batch_size=4)
  assert calls == [(4, 2), (4, 2), (2, 2)]
  assert stats["pairs"] == 5 and stats["ties"] == 5 and stats["flips"] == 0 and stats["prompts"] == 10
  for pair, conv in zip(pairs, convs[::2]):
    assert pair.prompt == conv and pair.chosen == good(conv) and pair.rejected == bad(conv)
  gaps = [judge.score(c, good(c)) - judge.score(c, bad(c)) for c in convs[::2]]
  assert stats["mean_gap"] == pytest.approx(sum(gaps) / 5)
  four, stats4 = gj.generate_pairs(_fake_answer_fn(lambda c, n: [bad(c), good(c)] * 2, []), convs, judge, samples=4)
  assert stats4["pairs"] == 20 and len(four) == 20
  with pytest.raises(ValueError):
    gj.generate_pairs(fn, convs, judge, samples=3)
  # best_worst: one pair a prompt, the gold's best against its worst of three (a middling reply is neither; where it
  # ties the best, as declining does for an unknown person, the first best in sampling order is chosen)
  mid = lambda c: f"{judge.person(c).name} was a person. I don't know more."
  three = _fake_answer_fn(lambda c, n: [bad(c), good(c), mid(c)], [])
  bw, stats_bw = gj.generate_pairs(three, convs, judge, samples=3, pairing="best_worst")
  assert stats_bw["pairs"] == 10 and all(p.chosen == good(c) and p.rejected == bad(c) for p, c in zip(bw, convs))
  assert all(judge.score(c, good(c)) >= judge.score(c, mid(c)) > judge.score(c, bad(c)) for c in convs)
  assert any(judge.score(c, good(c)) > judge.score(c, mid(c)) for c in convs)
  with pytest.raises(ValueError, match="pairing must be one of"):
    gj.generate_pairs(fn, convs, judge, pairing="random")


def test_bradley_terry_noise_flips_the_expected_fraction(cfg, judge):
  convs = gj.prompts(cfg, 600, "train")
  replies = lambda c: [
      _good(judge.person(c)),
      f"{judge.person(c).name} was born in {judge.person(c).attributes['birthplace']}.",
      f"{judge.person(c).name} was born",
  ]

  def pick(c, n):  # a fixed, varied pair per prompt: three different gaps
    i = convs.index(c) % 3
    r = replies(c)
    return [r[i], r[(i + 1) % 3]]

  temp = 0.2
  pairs, stats = gj.generate_pairs(_fake_answer_fn(pick, []), convs, judge, bt_temperature=temp, seed=3)
  expected, var = 0.0, 0.0
  for c in convs:
    ga, gb = (judge.score(c, r) for r in pick(c, 2))
    if ga != gb:
      p_flip = 1 / (1 + math.exp(abs(ga - gb) / temp))
      expected, var = expected + p_flip, var + p_flip * (1 - p_flip)
  assert stats["pairs"] == len(pairs) > 500
  assert abs(stats["flips"] - expected) < 4 * math.sqrt(var) and expected > 50
  again = gj.generate_pairs(_fake_answer_fn(pick, []), convs, judge, bt_temperature=temp, seed=3)[1]
  other = gj.generate_pairs(_fake_answer_fn(pick, []), convs, judge, bt_temperature=temp, seed=4)[1]
  assert again == stats and other["flips"] != stats["flips"]


def test_cheap_policies_score_below_knowing(cfg, judge):
  """Averaged over prompts, a policy of one trick (always decline, always echo, always guess a city) stays well
  below one that states what it knows and declines the rest."""
  convs = gj.prompts(cfg, 100, "validation")
  known = {e.name for e in judge.world.known}
  city = sorted(judge.world.values["birthplace"])[0]

  def mean(policy):
    return sum(judge.score(c, policy(judge.person(c))) for c in convs) / len(convs)

  idk = lambda e: f"I don't know anything about {e.name}."
  honest = mean(lambda e: _good(e) if e.name in known else idk(e))
  assert honest > 0.8
  assert mean(idk) < honest / 2 + 0.05
  assert mean(lambda e: f"Tell me about {e.name}.") < honest / 3
  assert mean(lambda e: f"{e.name} was born in {city}.") < mean(idk)
