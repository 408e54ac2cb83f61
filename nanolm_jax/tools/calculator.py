"""Calculator tool: arithmetic parsed with `ast` and evaluated node by node — never eval().

Grammar: int / float literals, + - * / // % ** (Python semantics), unary + -, parentheses. Limits keep every call
cheap: expression length, syntax-tree size, exponent size and the size of every intermediate integer.
"""

from __future__ import annotations

import ast
import math
import operator

from nanolm_jax.tools import Tool

MAX_EXPRESSION_CHARS = 200
MAX_NODES = 100
MAX_EXPONENT = 1000  # |b| in a ** b
MAX_INT_BITS = 4096  # any intermediate integer (about 1233 decimal digits)

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorError(ValueError):
  pass


def _check(x):
  if isinstance(x, int) and x.bit_length() > MAX_INT_BITS:
    raise CalculatorError(f"result too large (more than {MAX_INT_BITS} bits)")
  if isinstance(x, complex):  # (-8) ** 0.5
    raise CalculatorError("result is not a real number")
  if isinstance(x, float) and not math.isfinite(x):
    raise CalculatorError("result is not finite")
  return x


def _eval(node: ast.AST):
  if isinstance(node, ast.Expression):
    return _eval(node.body)
  if isinstance(node, ast.Constant) and type(node.value) in (int, float):
    return _check(node.value)
  if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
    return _check(_UNARY[type(node.op)](_eval(node.operand)))
  if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
    a, b = _eval(node.left), _eval(node.right)
    if isinstance(node.op, ast.Pow):
      if abs(b) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {b} is larger than {MAX_EXPONENT}")
      if isinstance(a, int) and isinstance(b, int) and b > 0 and a.bit_length() * b > MAX_INT_BITS:
        raise CalculatorError(f"result too large (more than {MAX_INT_BITS} bits)")
    if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
      raise CalculatorError("division by zero")
    try:
      return _check(_BINARY[type(node.op)](a, b))
    except (OverflowError, ZeroDivisionError) as e:
      raise CalculatorError(str(e)) from e
  raise CalculatorError(f"unsupported syntax: {ast.dump(node)[:60]}")


def evaluate(expression: str) -> int | float:
  """Value of an arithmetic expression; CalculatorError naming the problem for anything else."""
  expression = expression.strip()
  if not expression:
    raise CalculatorError("empty expression")
  if len(expression) > MAX_EXPRESSION_CHARS:
    raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
  try:
    tree = ast.parse(expression, mode="eval")
  except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
    raise CalculatorError(f"cannot parse {expression[:40]!r}") from e
  if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
    raise CalculatorError(f"expression has more than {MAX_NODES} syntax nodes")
  return _eval(tree)


def format_number(x: int | float) -> str:
  if isinstance(x, float) and x.is_integer() and abs(x) < 1e16:
    return str(int(x))
  return repr(x) if isinstance(x, float) else str(x)


class Calculator(Tool):
  """`calculator: 2 * (3 + 4) ** 2` -> `98`."""

  name = "calculator"
  description = "evaluates arithmetic: numbers, + - * / // % ** and parentheses"

  def run(self, arguments: str) -> str:
    return format_number(evaluate(arguments))
