"""Preprocessing as a chain of named ops: 'decode|resize(16)|value_range(-1, 1)'.

A pp string is a '|'-separated list of ops. Each op is `name` or
`name(arg, ..., key=value)` where every argument is a Python literal (number,
string, tuple, list, dict, None, True/False): the arguments are read with
`ast.literal_eval`, never evaluated as code. An op name picks a builder from
`PP_OPS`; the builder returns a function from an example dict to an example
dict (tf tensors, run inside tf.data). `build` parses and builds the whole
chain at once, so a misspelled op or a bad argument fails at start-up, before
any data is read, with the known names listed.

Examples are dicts: 'image', 'label' from the dataset; ops add 'labels'
(one-hot), 'texts', 'tokens', or any key they are told to write. Most ops take
`key=` (and `outkey=`), which is how a second view is made, e.g. a teacher that
sees the same augmented crop at its own resolution:

  'decode|inception_crop(8)|flip_lr|copy("image", "teacher_image")|'
  'resize(32, key="teacher_image")|value_range(-1, 1)|'
  'value_range(-1, 1, key="teacher_image")|onehot'

Randomness is stateless: the pipeline puts a per-example seed under '_rng'
(derived from the config seed and the example's position in the stream) and
each random op splits off its own seed, so the same example at the same step
always gets the same crop and flip, also after a restart. Keys starting with
'_' are internal; the pipeline removes them before batching.

Some arguments default to what the data pipeline knows (`context`): onehot's
`num_classes`, captions' `class_names`, tokenize's `max_len`, `tokenizer`,
`tokenizer_model` (from config.model). An explicit argument always wins.
"""
import ast
import dataclasses
import inspect
from typing import Any, Callable, Dict, List, Tuple

import tensorflow as tf

from vit_compress import registry

Example = Dict[str, tf.Tensor]
Op = Callable[[Example], Example]

PP_OPS = registry.Registry('preprocessing op')
RNG_KEY = '_rng'

_SYNTAX = ("Ops look like name or name(arg, ..., key=value) with literal "
           "arguments (numbers, 'strings', tuples, lists, None, True, False), "
           "separated by '|'.")


@dataclasses.dataclass(frozen=True)
class OpSpec:
  name: str
  args: Tuple[Any, ...]
  kwargs: Dict[str, Any]
  text: str


def split_ops(pp: str) -> List[str]:
  """Splits at '|' outside parentheses, brackets and quotes."""
  parts, depth, quote, start, escaped = [], 0, None, 0, False
  for i, ch in enumerate(pp):
    if quote:
      if escaped:
        escaped = False
      elif ch == '\\':
        escaped = True
      elif ch == quote:
        quote = None
    elif ch in '\'"':
      quote = ch
    elif ch in '([{':
      depth += 1
    elif ch in ')]}':
      depth -= 1
    elif ch == '|' and depth == 0:
      parts.append(pp[start:i])
      start = i + 1
  parts.append(pp[start:])
  return [p.strip() for p in parts]


def _parse_op(text: str, pp: str) -> OpSpec:
  def fail(why):
    return ValueError(f'Cannot parse preprocessing op {text!r} in pp string '
                      f'{pp!r}: {why}. {_SYNTAX}')
  if not text:
    raise fail('empty op (a stray "|"?)')
  try:
    node = ast.parse(text, mode='eval').body
  except SyntaxError as e:
    raise fail(e.msg) from None
  if isinstance(node, ast.Name):
    return OpSpec(node.id, (), {}, text)
  if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
    raise fail('not a name or a call')
  try:
    args = tuple(ast.literal_eval(a) for a in node.args)
    kwargs = {}
    for kw in node.keywords:
      if kw.arg is None:
        raise ValueError('**kwargs are not allowed')
      kwargs[kw.arg] = ast.literal_eval(kw.value)
  except ValueError as e:
    raise fail(f'arguments must be literals ({e})') from None
  return OpSpec(node.func.id, args, kwargs, text)


def parse(pp: str) -> List[OpSpec]:
  """The ops of a pp string, arguments read as literals; raises on bad syntax."""
  if not isinstance(pp, str) or not pp.strip():
    raise ValueError(f'A pp string must be a non-empty str, got {pp!r}. '
                     'Example: "decode|resize(8)|value_range(-1, 1)|onehot".')
  return [_parse_op(text, pp) for text in split_ops(pp)]


def _build_op(spec: OpSpec, pp: str, context: Dict[str, Any]) -> Op:
  try:
    builder = PP_OPS.get(spec.name)
  except registry.UnknownNameError as e:
    raise registry.UnknownNameError(f'{e} (in pp string {pp!r})') from None
  sig = inspect.signature(builder)
  usage = f'Usage: {spec.name}{sig}.'
  try:
    bound = sig.bind_partial(*spec.args, **spec.kwargs)
    for name, value in context.items():
      if (name in sig.parameters and name not in bound.arguments
          and value is not None):
        bound.arguments[name] = value
    bound = sig.bind(*bound.args, **bound.kwargs)
  except TypeError as e:
    raise ValueError(f'Preprocessing op {spec.text!r}: {e}. {usage}') from None
  try:
    return builder(*bound.args, **bound.kwargs)
  except (ValueError, TypeError) as e:
    raise ValueError(f'Preprocessing op {spec.text!r}: {e} {usage}') from None


def build(pp: str, **context) -> Op:
  """One function applying the ops of `pp` in order; validates them all now."""
  ops = [_build_op(spec, pp, context) for spec in parse(pp)]

  def apply(example: Example) -> Example:
    example = dict(example)
    for op in ops:
      example = op(dict(example))
    return example
  return apply


# ----------------------------------------------------------- helpers for ops
def get_key(example: Example, key: str, op: str) -> tf.Tensor:
  """example[key], or an error naming the op and the keys that exist."""
  if key not in example:
    shown = sorted(k for k in example if not k.startswith('_'))
    raise KeyError(f'Preprocessing op {op!r} reads key {key!r}, but the '
                   f'example only has {shown}. Did an earlier op forget to '
                   'write it (e.g. copy(...), captions, onehot)?')
  return example[key]


def next_seed(example: Example) -> tf.Tensor:
  """A fresh stateless seed (shape [2] int64) split off the example's '_rng'.

  Without '_rng' (an op called by hand, outside the pipeline) the stream
  starts from a fixed seed, so results stay reproducible.
  """
  rng = example.get(RNG_KEY)
  if rng is None:
    rng = tf.constant([0, 0], tf.int64)
  seeds = tf.random.experimental.stateless_split(tf.cast(rng, tf.int64), 2)
  example[RNG_KEY] = seeds[0]
  return seeds[1]
