r"""Gold-labelled preference pairs from a chat run, and how its samples spread under the gold judge (issue 15).

  python -m experiments.gold_pairs --workdir=runs/sft --split=validation --num_prompts=64 --show=4
  python -m experiments.gold_pairs --workdir=runs/sft --num_prompts=2000 --out=runs/sft/gold_pairs.jsonl \
      --bt_temperature=0.1

Draws prompts of the gold task (nanolm_jax.posttrain.gold_judge: "Tell me about <person>" on the run's fact world),
samples --samples replies each from the run, scores them with the gold judge, and prints the score distribution
(mean, std, quantiles, the gap within pairs, each component's mean) and --show example prompts with their replies'
components. With --out, writes the pairs (chosen = higher gold; Bradley-Terry label noise with --bt_temperature) as
TRL conversational JSONL (nanolm_jax.posttrain.preferences.write_jsonl).
"""

import json
import sys
import time

from absl import app
from absl import flags
import numpy as np

from nanolm_jax import engine
from nanolm_jax import metrics
from nanolm_jax import runs
from nanolm_jax.posttrain import gold_judge
from nanolm_jax.posttrain import preferences
from nanolm_jax.posttrain import probe

_WORKDIR = flags.DEFINE_string("workdir", "runs/sft", "Chat (SFT) run to sample; its cfg.sft.world is the task's.")
_SPLIT = flags.DEFINE_enum("split", "validation", ["train", "validation"], "Prompt split (people are disjoint).")
_NUM = flags.DEFINE_integer("num_prompts", 64, "Prompts to draw.")
_SAMPLES = flags.DEFINE_integer("samples", 2, "Replies per prompt (even: paired (0, 1), (2, 3), ...).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.9, "Sampling temperature of the run.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Reply length limit in tokens.")
_BT = flags.DEFINE_float("bt_temperature", 0.0, "Bradley-Terry label noise temperature (0 = the gold's own order).")
_SEED = flags.DEFINE_integer("seed", 0, "Prompt, sampling and label-noise seed.")
_OUT = flags.DEFINE_string("out", "", "Write the pairs here as JSONL ('' = only report).")
_SHOW = flags.DEFINE_integer("show", 4, "Example prompts to print with their replies' components.")
_SHOWN = (
    "on_topic",
    "true_facts",
    "false_facts",
    "declined",
    "fluency",
    "repetition",
    "fragments",
    "complete",
    "length",
)


def _report(judge, convs, replies):
  """Prints the gold distribution of the sampled replies and a few examples."""
  comps = [[judge.components(c, r) for r in rs] for c, rs in zip(convs, replies)]
  g = np.array([[x["score"] for x in cs] for cs in comps])
  q = np.round(np.quantile(g, [0.1, 0.25, 0.5, 0.75, 0.9]), 3).tolist()
  print(f"gold over {g.size} samples: mean {g.mean():.3f}  std {g.std():.3f}  quantiles 10/25/50/75/90 {q}")
  known = np.array([cs[0]["known"] for cs in comps], bool)
  for name, rows in (("known people", known), ("unknown people", ~known)):
    if rows.any():
      print(f"  {name}: {rows.sum()} prompts, mean {g[rows].mean():.3f}")
  gap = np.abs(g[:, 0::2] - g[:, 1::2])
  print(f"  within-pair |gap|: mean {gap.mean():.3f}  median {np.median(gap):.3f}  > 0.1: {(gap > 0.1).mean():.2f}")
  means = {k: round(float(np.mean([x[k] for cs in comps for x in cs])), 3) for k in _SHOWN}
  print("  component means:", json.dumps(means))
  for i in range(0, len(convs), max(1, len(convs) // max(1, _SHOW.value)))[: _SHOW.value]:
    print(f"\n## {convs[i][-1]['content']}  ({'known' if known[i] else 'unknown'} person)")
    for r, x in zip(replies[i], comps[i]):
      print(f"  {x['score']:.3f}  {r!r}\n         {json.dumps({k: round(x[k], 2) for k in _SHOWN})}")


def main(argv):
  del argv
  metrics.quiet_library_logs()
  start = time.time()
  try:
    run = runs.load_run(_WORKDIR.value)
    cfg = gold_judge.default_gold_config()
    if "sft" in run.cfg and "world" in run.cfg.sft:
      cfg.world = run.cfg.sft.world
    cfg.seed = _SEED.value
    judge = gold_judge.GoldJudge(cfg)
    convs = gold_judge.prompts(cfg, _NUM.value, _SPLIT.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  eng = engine.Engine(run.model, run.params, run.tokenizer)
  answer = probe.engine_answer_fn(
      eng, run.tokenizer, temperature=_TEMPERATURE.value, max_new_tokens=_MAX_NEW.value, seed=_SEED.value
  )
  replies = []

  def recording(batch, n):  # keeps the samples for the report; generate_pairs only returns the pairs
    out = answer(batch, n)
    replies.extend(out)
    return out

  pairs, stats = gold_judge.generate_pairs(
      recording, convs, judge, samples=_SAMPLES.value, bt_temperature=_BT.value, seed=_SEED.value
  )
  _report(judge, convs, replies)
  print("\npairs:", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}))
  if _OUT.value:
    print(f"wrote {preferences.write_jsonl(_OUT.value, pairs)} pairs to {_OUT.value}")
  print(f"{time.time() - start:.1f}s", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
