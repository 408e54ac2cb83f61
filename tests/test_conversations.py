"""Tests for nanolm_jax.data.conversations: formats, bad lines, specs, the stable split, TFDS records."""

import gzip
import json
import logging

import numpy as np
import pytest

from nanolm_jax.data import conversations as conv_lib

U, A = {'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}


def test_openai_format_with_parts_and_function_tool_calls():
  record = {
      'messages': [
          {'role': 'system', 'content': 'Be brief.'},
          {'role': 'user', 'content': [{'type': 'text', 'text': 'What is '}, {'type': 'text', 'text': '2+3?'}]},
          {
              'role': 'assistant',
              'content': None,
              'tool_calls': [
                  {'id': 'c1', 'type': 'function', 'function': {'name': 'calculator', 'arguments': {'expr': '2+3'}}}
              ],
          },
          {'role': 'tool', 'tool_call_id': 'c1', 'content': '5'},
          {'role': 'assistant', 'content': 'It is 5.'},
      ],
      'id': 'x',
  }
  assert conv_lib.normalize(record) == [
      {'role': 'system', 'content': 'Be brief.'},
      {'role': 'user', 'content': 'What is 2+3?'},
      {'role': 'assistant', 'content': '', 'tool_calls': [{'name': 'calculator', 'arguments': '{"expr": "2+3"}'}]},
      {'role': 'tool', 'content': '5', 'name': 'calculator'},
      {'role': 'assistant', 'content': 'It is 5.'},
  ]


def test_sharegpt_and_ultrachat_formats():
  share = {
      'conversations': [
          {'from': 'system', 'value': 'S'},
          {'from': 'human', 'value': 'Hi'},
          {'from': 'gpt', 'value': 'Hello!'},
      ]
  }
  assert conv_lib.normalize(share) == [{'role': 'system', 'content': 'S'}, U, A]
  assert conv_lib.normalize({'data': ['Hi', 'Hello!', 'Bye', 'Bye!']}) == [
      U,
      A,
      {'role': 'user', 'content': 'Bye'},
      {'role': 'assistant', 'content': 'Bye!'},
  ]
  hf = {'prompt': 'Hi', 'prompt_id': 'abc', 'messages': [U, A]}  # HF UltraChat-200k
  assert conv_lib.normalize(hf) == [U, A]
  call = {
      'conversations': [
          {'from': 'human', 'value': 'Hi'},
          {'from': 'gpt', 'value': 'Checking.'},
          {'from': 'function_call', 'value': '{"name": "search", "arguments": "x"}'},
          {'from': 'observation', 'value': 'r'},
          {'from': 'gpt', 'value': 'Done.'},
      ]
  }
  out = conv_lib.normalize(call)
  assert out[1] == {'role': 'assistant', 'content': 'Checking.', 'tool_calls': [{'name': 'search', 'arguments': 'x'}]}
  assert out[2] == {'role': 'tool', 'content': 'r', 'name': 'search'}


@pytest.mark.parametrize(
    'record, reason',
    [
        ({'messages': [{'role': 'robot', 'content': 'x'}, A]}, 'unknown role'),
        ({'messages': [U, U, A]}, 'user message after'),
        ({'messages': [A]}, 'assistant message after'),
        ({'messages': [U, {'role': 'assistant', 'content': '  '}]}, 'empty content'),
        ({'messages': [U]}, 'must end with an assistant'),
        ({'text': 'hello'}, 'no "messages"'),
        ({'messages': [{'role': 'user', 'content': [{'type': 'image_url'}]}, A]}, 'unsupported content part'),
    ],
)
def test_invalid_records_raise_with_reason(record, reason):
  with pytest.raises(conv_lib.ConversationError, match=reason):
    conv_lib.normalize(record)


def test_bad_lines_are_skipped_and_reported_by_line_number(tmp_path, caplog):
  lines = [
      json.dumps({'messages': [U, A]}),
      '{not json',
      json.dumps({'messages': [{'role': 'x', 'content': 'a'}]}),
      json.dumps({'messages': [A, U]}),
      '',
      json.dumps({'messages': [{'role': 'user', 'content': ''}, A]}),
      json.dumps({'data': ['q', 'a']}),
  ]
  path = tmp_path / 'c.jsonl'
  path.write_text('\n'.join(lines) + '\n')
  convs, bad = conv_lib.read_jsonl(str(path))
  assert convs == [[U, A], [{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': 'a'}]]
  assert [n for n, _ in bad] == [2, 3, 4, 6]
  assert 'not JSON' in bad[0][1] and 'unknown role' in bad[1][1] and 'empty content' in bad[3][1]
  with caplog.at_level(logging.WARNING):
    assert len(conv_lib.load_jsonl([str(path)])) == 2
  assert 'skipped 4 malformed' in caplog.text and 'line 3: ' in caplog.text and str(path) in caplog.text


def test_file_without_valid_conversation_is_an_error_naming_it(tmp_path):
  path = tmp_path / 'bad.jsonl'
  path.write_text('{"oops": 1}\nnot json\n')
  with pytest.raises(ValueError, match='bad.jsonl holds no valid conversation.*line 1'):
    conv_lib.load_jsonl([str(path)])


def test_write_then_read_round_trip_gz(tmp_path):
  convs = [[U, A], [{'role': 'system', 'content': 'ünïcode'}, U, A]]
  path = str(tmp_path / 'out.jsonl.gz')
  assert conv_lib.write_jsonl(path, convs) == 2
  with gzip.open(path, 'rt') as f:
    assert json.loads(f.readline()) == {'messages': [U, A]}
  assert conv_lib.read_jsonl(path) == (convs, [])


def test_parse_spec():
  specs = conv_lib.parse_spec('generated@2; jsonl:/a/b:c/*.jsonl@0.5;reasoning:100', ['generated', 'reasoning'])
  assert [(s.kind, s.arg, s.weight) for s in specs] == [
      ('generated', '', 2.0),
      ('jsonl', '/a/b:c/*.jsonl', 0.5),
      ('reasoning', '100', 1.0),
  ]
  for bad, msg in [
      ('nope', 'unknown kind'),
      ('jsonl', 'needs an argument'),
      ('generated@0', 'positive'),
      ('generated@x', 'not a number'),
      (' ; ', 'names no source'),
      ('', 'empty'),
  ]:
    with pytest.raises(ValueError, match=msg):
      conv_lib.parse_spec(bad, ['generated'])


def test_split_is_stable_disjoint_and_content_based():
  convs = [[{'role': 'user', 'content': f'q{i}'}, {'role': 'assistant', 'content': f'a{i}'}] for i in range(2000)]
  train = conv_lib.split_conversations(convs, 'train', 0.1)
  val = conv_lib.split_conversations(convs, 'validation', 0.1)
  keys = lambda cs: {conv_lib.conversation_key(c) for c in cs}
  assert not keys(train) & keys(val) and len(train) + len(val) == len(convs)
  assert 150 < len(val) < 250
  # Reordering or adding other conversations does not move a conversation to the other side.
  more = list(reversed(convs)) + [[{'role': 'user', 'content': 'z'}, A]]
  assert keys(val) <= keys(conv_lib.split_conversations(more, 'validation', 0.1))
  # A tiny source still gets one validation conversation; duplicates stay together.
  tiny = [[U, A], [U, A], [{'role': 'user', 'content': 'x'}, A]]
  v = conv_lib.split_conversations(tiny, 'validation', 0.01)
  assert len(v) in (1, 2) and (len(v) == 2) == (v[0] == [U, A])


def test_load_sources_mixes_files_and_generators(tmp_path):
  path = tmp_path / 'c.jsonl'
  conv_lib.write_jsonl(str(path), [[{'role': 'user', 'content': f'f{i}'}, A] for i in range(50)])
  calls = []

  def gen(arg):
    calls.append(arg)
    return [[{'role': 'user', 'content': f'g{i}'}, A] for i in range(int(arg or 10))]

  loaded = conv_lib.load_sources(
      f'jsonl:{tmp_path}/*.jsonl@0.5;gen:30', 'train', val_fraction=0.2, generators={'gen': gen}
  )
  assert [s.kind for s, _ in loaded] == ['jsonl', 'gen'] and calls == ['30']
  val = conv_lib.load_sources(
      f'jsonl:{tmp_path}/*.jsonl@0.5;gen:30', 'validation', val_fraction=0.2, generators={'gen': gen}
  )
  for (_, tr), (_, va) in zip(loaded, val):
    assert len(tr) + len(va) in (50, 30) and len(va) > 0
  with pytest.raises(ValueError, match='matches no files'):
    conv_lib.load_sources(f'jsonl:{tmp_path}/none*.jsonl', 'train', val_fraction=0.1)


def test_tfds_records_columnar_bytes_and_bad_ones_filtered(monkeypatch):
  from nanolm_jax.data.tfds_compat import tfds  # pylint: disable=g-import-not-at-top

  def record(i):
    return {
        'messages': {
            'role': np.array([b'user', b'assistant']),
            'content': np.array([f'q{i}'.encode(), (b'' if i == 3 else f'a{i}'.encode())]),
        },
        'prompt': b'ignored',
    }

  records = [record(i) for i in range(40)]
  monkeypatch.setattr(tfds, 'data_source', lambda name, **kw: {'train': records})
  out = {}
  for split in ('train', 'validation'):
    ((_, ds),) = conv_lib.load_sources('tfds:fake_chats', split, val_fraction=0.25)
    out[split] = [c for c in ds if c is not None]
  assert len(out['train']) + len(out['validation']) == 39  # record 3 has an empty assistant message
  assert (
      out['train'][0] == [{'role': 'user', 'content': 'q0'}, {'role': 'assistant', 'content': 'a0'}]
      or out['validation'][0][0]['content'] == 'q0'
  )
  assert 0 < len(out['validation']) < 20
  monkeypatch.setattr(tfds, 'data_source', lambda name, **kw: {'train': [{'text': b'x'}]})
  with pytest.raises(ValueError, match='"messages", "conversations" or "data" feature'):
    conv_lib.load_sources('tfds:plain_text', 'train', val_fraction=0.0)
