"""Search-tool conversations: questions whose answers are in a search index and not in the model's weights.

The fact world's *index_only* people (nanolm_jax.synthetic.facts) are written to a search index folder
(``write_index``: JSONL lines {"id", "title", "text"}) and never to pretraining text; they are what the chat
evaluation asks about. The conversations are about ``train_people`` *other* people (``facts.make_people``) whose
documents sit in the same index: with thousands of fresh names the only way to fit the data is to copy the name
into the query and the fact out of the results, not to memorise a hundred names (measured: trained on the 100
evaluation people themselves, the 4M-parameter default answered every search with one memorised name). A
conversation::

  system:    You can use the search tool ...                       (``system_prompt_fraction`` of them)
  user:      Where was Dena Priato born?
  assistant: [tool call] search: Dena Priato birthplace
  tool:      [1] Dena Priato. Birthplace: Brelsmere. Birth year: 1903. Profession: potter. Favorite color: teal. ...
             [2] ...
  assistant: According to the search results, the birthplace is Brelsmere.

The tool result is what ``search_fn(query)`` returns: by default the project's search tool (nanolm_jax.tools.search,
BM25) over the index documents, so training sees exactly what the engine will show at inference. The final
answer is written from the results: if no result is about the person (``not_found_fraction`` of the questions ask
about ``outside_people``, in neither the index nor pretraining), the assistant says the search found nothing and
that it does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import json
import random
import re
from typing import Any

import ml_collections

from nanolm_jax import fs
from nanolm_jax import tools as tools_lib
from nanolm_jax.synthetic import facts as facts_lib
from nanolm_jax.tools import search

Conversation = list[dict[str, Any]]
SearchFn = Callable[[str], str]
TOOL_NAME = 'search'
INDEX_FILE = 'documents.jsonl'
TOOLS_PROMPT = 'Tools:\n'  # + tools.describe(tools): how the chat CLI and the evaluation declare tools
SYSTEM_PROMPTS = (
    'Tools:\nsearch: searches a local document collection; the argument is a query in plain words',
    'You can use the search tool: write a search call with a short query, read the results, then answer from them.',
    'Tools: search (finds documents for a query). Use it for facts you are not sure about.',
    'You have access to a search tool over a document collection. Search before answering questions about people '
    'you do not know.',
)
_QUERY_WORDS = {
    'birthplace': ('birthplace', 'born', 'place of birth'),
    'birth_year': ('birth year', 'born', 'year'),
    'profession': ('profession', 'job', 'occupation'),
    'favorite_color': ('favorite color', 'color'),
    'favorite_food': ('favorite food', 'food'),
}
_CALL_TEXTS = ('', '', 'Let me search for that.', "I'll look that up.", 'Let me check.')
# A card's field names, which the found-answers repeat: the value then follows the same words in the result, so
# answering is copying it from there (the name need not be copied a second time).
_KEYS = {
    'birthplace': 'birthplace',
    'birth_year': 'birth year',
    'profession': 'profession',
    'favorite_color': 'favorite color',
    'favorite_food': 'favorite food',
}
_FOUND = (
    'According to the search results, the {key} is {v}.',
    'The search results say the {key} is {v}.',
    'I found it: the {key} is {v}.',
    'The {key} is {v}, according to the search.',
)
_NOT_FOUND = (
    "I searched for {name} but found nothing about them, so I don't know {what}.",
    "The search didn't return anything about {name}. I don't know {what}.",
    "I couldn't find any information about {name}, so I don't know.",
)


# The search tool's settings wherever a config does not say (one default for SFT data, evaluation and chat).
DEFAULT_TOP_K = 2
DEFAULT_FUZZY = True


def default_search_config() -> ml_collections.ConfigDict:
  cfg = facts_lib.default_world_config()  # the same world as the facts generator and the pretraining source
  cfg.not_found_fraction = 0.15  # questions about people outside the index
  cfg.train_people = 2000  # people the conversations ask about (in the index too); 0 = the index-only people
  cfg.outside_people = 300  # people in neither index nor world, for the "found nothing" answers; 0 = world.unknown
  # Conversations that declare the tool in a system message. 1.0: the model learns to search only when a tool is
  # declared (at 0.5 it also searched, toolless, when asked about anyone it did not know, instead of "I don't know").
  cfg.system_prompt_fraction = 1.0
  cfg.top_k = (
      DEFAULT_TOP_K  # results shown: the question, call, results and answer must fit the default 256-token context
  )
  cfg.fuzzy = (
      DEFAULT_FUZZY  # typo-tolerant search (character trigrams): a small model's copy of a made-up name is rough
  )
  cfg.index_dir = ''  # where the SFT stage writes the index ('' = caller decides)
  return cfg


def train_people(world: facts_lib.World, n: int) -> tuple[facts_lib.Entity, ...]:
  """The people the search conversations ask about (indexed beside the index-only people, never evaluated)."""
  return facts_lib.make_people(world, n, 'search/train')


def outside_people(world: facts_lib.World, n: int, num_train_people: int) -> tuple[facts_lib.Entity, ...]:
  """People nowhere (not in the world, the index or pretraining): the search finds nothing about them."""
  found = {e.name for e in train_people(world, num_train_people)}
  return tuple(e for e in facts_lib.make_people(world, n, 'search/outside') if e.name not in found)


def index_documents(world: facts_lib.World, num_train_people: int = 0) -> list[dict[str, str]]:
  """One document per index-only person, then per training person: {"id", "title", "text"} (a profile card)."""
  people = world.index_only + train_people(world, num_train_people)
  return [{'id': f'person-{k}', 'title': e.name, 'text': profile(e)} for k, e in enumerate(people)]


def profile(entity: facts_lib.Entity) -> str:
  """A person's index document: a compact profile card, so that a question, a call, three results and the answer
  fit the default model's 256-token context (three biographies in prose did not)."""
  return ' '.join(
      [f'{entity.name}.'] + [f'{_KEYS[a].capitalize()}: {entity.attributes[a]}.' for a in facts_lib.ATTRIBUTES]
  )


def write_index(folder: str, docs: Sequence[dict[str, str]]) -> str:
  """Writes ``docs`` to ``folder``/documents.jsonl (atomically); returns the file's path."""
  path = fs.join(folder, INDEX_FILE)
  fs.write_text(path, ''.join(json.dumps(d, ensure_ascii=False) + '\n' for d in docs))
  return path


def make_search_tool(docs: Sequence[dict[str, str]], k: int = DEFAULT_TOP_K, fuzzy: bool = DEFAULT_FUZZY) -> SearchFn:
  """The project's search tool (nanolm_jax.tools.search) over ``docs``, as a query -> result text function.

  Calls ``run`` directly (not the thread-with-timeout ``__call__``) so that generation is deterministic under load,
  and cuts the output to the tool's ``max_output_chars`` as ``__call__`` would.
  """
  tool = search.Search([d['text'] for d in docs], k=k, fuzzy=fuzzy)

  def fn(query: str) -> str:
    out = tool.run(query)
    return out if len(out) <= tool.max_output_chars else out[: tool.max_output_chars - 3] + '...'

  return fn


def _result_blocks(results: str) -> list[str]:
  return [b for b in re.split(r'(?m)^\[\d+\] ', results) if b.strip()]


def conversation(
    entity: facts_lib.Entity, attribute: str, results_fn: SearchFn, rng: random.Random, system_prompt: bool
) -> Conversation:
  """question -> search call -> results -> answer (from the results when they are about ``entity``)."""
  conv: Conversation = []
  if system_prompt:
    conv.append({'role': 'system', 'content': rng.choice(SYSTEM_PROMPTS)})
  query = f'{entity.name} {rng.choice(_QUERY_WORDS[attribute])}'
  results = results_fn(query)
  conv += [
      {'role': 'user', 'content': facts_lib.question(entity, attribute, rng)},
      {
          'role': 'assistant',
          'content': rng.choice(_CALL_TEXTS),
          'tool_calls': [{'name': TOOL_NAME, 'arguments': query}],
      },
      {'role': 'tool', 'name': TOOL_NAME, 'content': results},
  ]
  # Grounded: answer only if a result names the person and states the fact.
  blocks = _result_blocks(results)
  truth = entity.attributes[attribute]
  found = any(entity.name in b and facts_lib.answers_match(b.replace(entity.name, ''), truth) for b in blocks)
  if found:
    reply = rng.choice(_FOUND).format(key=_KEYS[attribute], v=truth)
  else:
    what = facts_lib.ATTRIBUTE_WORDS[attribute].format(name=entity.name)
    reply = rng.choice(_NOT_FOUND).format(name=entity.name, what=what)
  conv.append({'role': 'assistant', 'content': reply})
  return conv


def generate(
    cfg: ml_collections.ConfigDict | None, seed: int, n: int, search_fn: SearchFn | None = None
) -> list[Conversation]:
  """``n`` search conversations about the training people (``not_found_fraction`` about outside people).

  ``search_fn(query) -> tool result text`` defaults to BM25 over ``index_documents(world, cfg.train_people)`` with
  ``cfg.top_k``. With ``train_people=0`` the conversations ask about the index-only people themselves (and
  ``outside_people=0``: about the world's unknown people).
  """
  cfg = cfg or default_search_config()
  world = facts_lib.world_from_config(cfg)
  n_train = int(cfg.get('train_people', 0))
  found_pool = train_people(world, n_train) if n_train else world.index_only
  if not found_pool:
    raise ValueError('search_data.generate: no one to ask about (num_index_only=0 and train_people=0).')
  n_out = int(cfg.get('outside_people', 0))
  outside_pool = outside_people(world, n_out, n_train) if n_out else world.unknown
  if search_fn is None:
    search_fn = make_search_tool(index_documents(world, n_train), cfg.top_k, bool(cfg.get('fuzzy', DEFAULT_FUZZY)))
  rng = random.Random(f'search/{seed}')
  out = []
  for _ in range(n):
    outside = outside_pool and rng.random() < cfg.not_found_fraction
    entity = rng.choice(outside_pool if outside else found_pool)
    out.append(
        conversation(
            entity, rng.choice(facts_lib.ATTRIBUTES), search_fn, rng, rng.random() < cfg.system_prompt_fraction
        )
    )
  return out


def tools_prompt(tools: Sequence[Any]) -> str:
  """The system message that declares tools (the search conversations are trained with it; the chat evaluation
  and the chat CLI declare tools the same way)."""
  return TOOLS_PROMPT + tools_lib.describe(tools)
