"""House rules the tools cannot check: short functions, modest modules, no test importing an entrypoint."""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80  # a function's whole span (def line to last line), nested functions included
MAX_MODULE_LINES = 500


def _sources(folder: str):
  return sorted((REPO / folder).rglob("*.py"))


def test_functions_are_short_and_modules_modest():
  long_functions, long_modules = [], []
  for path in _sources("nanolm_jax"):
    src = path.read_text()
    rel = path.relative_to(REPO)
    if len(src.splitlines()) > MAX_MODULE_LINES:
      long_modules.append(f"{rel}: {len(src.splitlines())} lines")
    for node in ast.walk(ast.parse(src)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        n = node.end_lineno - node.lineno + 1
        if n > MAX_FUNCTION_LINES:
          long_functions.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
  assert not long_functions, "\n".join(long_functions)
  assert not long_modules, "\n".join(long_modules)


def test_no_test_imports_an_entrypoint():
  """Tests reach entrypoints as a user does (subprocesses); logic worth testing lives in nanolm_jax."""
  offenders = []
  for path in _sources("tests"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        names = [node.module or ""]
      offenders += [f"{path.name}: {n}" for n in names if n == "experiments" or n.startswith("experiments.")]
  assert not offenders, offenders
