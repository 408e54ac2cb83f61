"""Search-tool conversations: questions whose answers are in a search index and not in the model's weights.

The fact world's *index_only* people (nanolm_jax.posttrain.facts) are written to a search index folder
(``write_index``: JSONL lines {"id", "title", "text"}) and never to pretraining text. A conversation::

  system:    You can use the search tool ...                       (``system_prompt_fraction`` of them)
  user:      Where was Dena Priato born?
  assistant: [tool call] search: Dena Priato birthplace
  tool:      [1] Dena Priato was born in Brelsmere in 1903. Dena Priato worked as a potter. ...
             [2] ...
  assistant: According to the search results, Dena Priato was born in Brelsmere.

The tool result is what ``search_fn(query)`` returns: by default the project's search tool (nanolm_jax.tools.search,
BM25) over the index documents, so training sees exactly what the engine will show at inference. The final
answer is written from the results: if no result is about the person (``not_found_fraction`` of the questions ask
about people outside the index), the assistant says the search found nothing and that it does not know.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import json
import os
import random
import re
from typing import Any

import ml_collections

from nanolm_jax.posttrain import facts as facts_lib

Conversation = list[dict[str, Any]]
SearchFn = Callable[[str], str]
TOOL_NAME = 'search'
INDEX_FILE = 'documents.jsonl'
SYSTEM_PROMPTS = (
    'Tools:\nsearch: searches a local document collection; the argument is a query in plain words',  # tools.describe
    'You can use the search tool: write a search call with a short query, read the results, then answer from them.',
    'Tools: search (finds documents for a query). Use it for facts you are not sure about.',
    'You have access to a search tool over a document collection. Search before answering questions about people '
    'you do not know.',
)
_QUERY_WORDS = {'birthplace': ('birthplace', 'born', 'place of birth'), 'birth_year': ('birth year', 'born', 'year'),
                'profession': ('profession', 'job', 'occupation'), 'favorite_color': ('favorite color', 'color'),
                'favorite_food': ('favorite food', 'food')}
_CALL_TEXTS = ('', '', 'Let me search for that.', "I'll look that up.", 'Let me check.')
_FOUND = ('According to the search results, {answer}', 'The search results say: {answer}',
          'I found it. {answer}', '{answer}')
_NOT_FOUND = ("I searched for {name} but found nothing about them, so I don't know {what}.",
              "The search didn't return anything about {name}. I don't know {what}.",
              "I couldn't find any information about {name}, so I don't know.")


def default_search_config() -> ml_collections.ConfigDict:
  cfg = facts_lib.default_world_config()  # the same world as the facts generator and the pretraining source
  cfg.not_found_fraction = 0.15  # questions about people outside the index
  cfg.system_prompt_fraction = 0.5  # conversations that announce the tool in a system message (chat CLI: none)
  cfg.top_k = 3
  cfg.index_dir = ''  # where the SFT stage writes the index ('' = caller decides)
  return cfg


def index_documents(world: facts_lib.World) -> list[dict[str, str]]:
  """One document per index-only person: {"id", "title", "text"} (a biography in a training phrasing)."""
  rng = random.Random(f'search/docs/{world.seed}')
  return [{'id': f'person-{k}', 'title': e.name, 'text': facts_lib.biography(e, rng).split('\n\n')[-1]}
          for k, e in enumerate(world.index_only)]


def write_index(folder: str, docs: Sequence[dict[str, str]]) -> str:
  """Writes ``docs`` to ``folder``/documents.jsonl (atomically); returns the file's path."""
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, INDEX_FILE)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    for d in docs:
      f.write(json.dumps(d, ensure_ascii=False) + '\n')
  os.replace(path + '.tmp', path)
  return path


def make_search_tool(docs: Sequence[dict[str, str]], k: int = 3) -> SearchFn:
  """The project's search tool (nanolm_jax.tools.search) over ``docs``, as a query -> result text function.

  Calls ``run`` directly (not the thread-with-timeout ``__call__``) so that generation is deterministic under load,
  and cuts the output to the tool's ``max_output_chars`` as ``__call__`` would.
  """
  from nanolm_jax.tools import search  # pylint: disable=g-import-not-at-top

  tool = search.Search([d['text'] for d in docs], k=k)

  def fn(query: str) -> str:
    out = tool.run(query)
    return out if len(out) <= tool.max_output_chars else out[:tool.max_output_chars - 3] + '...'

  return fn


def _result_blocks(results: str) -> list[str]:
  return [b for b in re.split(r'(?m)^\[\d+\] ', results) if b.strip()]


def conversation(entity: facts_lib.Entity, attribute: str, results_fn: SearchFn, rng: random.Random,
                 system_prompt: bool) -> Conversation:
  """question -> search call -> results -> answer (from the results when they are about ``entity``)."""
  conv: Conversation = []
  if system_prompt:
    conv.append({'role': 'system', 'content': rng.choice(SYSTEM_PROMPTS)})
  query = f'{entity.name} {rng.choice(_QUERY_WORDS[attribute])}'
  results = results_fn(query)
  conv += [{'role': 'user', 'content': facts_lib.question(entity, attribute, rng)},
           {'role': 'assistant', 'content': rng.choice(_CALL_TEXTS),
            'tool_calls': [{'name': TOOL_NAME, 'arguments': query}]},
           {'role': 'tool', 'name': TOOL_NAME, 'content': results}]
  # Grounded: answer only if a result names the person and states the fact.
  blocks = _result_blocks(results)
  truth = entity.attributes[attribute]
  found = any(entity.name in b and facts_lib.answers_match(b.replace(entity.name, ''), truth) for b in blocks)
  if found:
    reply = rng.choice(_FOUND).format(answer=facts_lib.answer(entity, attribute, rng))
  else:
    what = facts_lib._ATTRIBUTE_WORDS[attribute].format(name=entity.name)  # pylint: disable=protected-access
    reply = rng.choice(_NOT_FOUND).format(name=entity.name, what=what)
  conv.append({'role': 'assistant', 'content': reply})
  return conv


def generate(cfg: ml_collections.ConfigDict | None, seed: int, n: int,
             search_fn: SearchFn | None = None) -> list[Conversation]:
  """``n`` search conversations about index-only people (and ``not_found_fraction`` about unknown ones).

  ``search_fn(query) -> tool result text`` defaults to BM25 over ``index_documents(world)`` with ``cfg.top_k``.
  """
  cfg = cfg or default_search_config()
  world = facts_lib.world_from_config(cfg)
  if not world.index_only:
    raise ValueError('search_data.generate: the world has no index-only entities (num_index_only=0).')
  if search_fn is None:
    search_fn = make_search_tool(index_documents(world), cfg.top_k)
  rng = random.Random(f'search/{seed}')
  out = []
  for _ in range(n):
    outside = world.unknown and rng.random() < cfg.not_found_fraction
    entity = rng.choice(world.unknown if outside else world.index_only)
    out.append(conversation(entity, rng.choice(facts_lib.ATTRIBUTES), search_fn, rng,
                            rng.random() < cfg.system_prompt_fraction))
  return out
