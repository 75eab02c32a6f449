"""The private TFLite / LiteRT APIs the project relies on, in one place.

Each is an underscore attribute of a dependency (tensorflow 2.21's
TFLiteConverter, ai_edge_litert 2.3's Interpreter) with no public
equivalent; when one moves, this module is the only one to change.

  set_per_channel(converter, on)   int8 weights per output channel or per tensor
  ops_details(interp)              the graph's ops (name, inputs, outputs)
  xnnpack_fallback(interp_factory) which ops the XNNPACK delegate did not take
"""
import collections
from typing import Any, Callable, Dict, List, Tuple


def set_per_channel(converter, per_channel: bool) -> None:
  converter._experimental_disable_per_channel = not per_channel  # pylint: disable=protected-access


def ops_details(interp) -> List[Dict[str, Any]]:
  return interp._get_ops_details()  # pylint: disable=protected-access


def xnnpack_fallback(make_interpreter: Callable[..., Any]) -> Dict[Tuple[str, str], int]:
  """{(op name, input dtype): count} of the ops that run outside XNNPACK.

  `make_interpreter(**options)` builds the interpreter; node fusion is turned
  off so that every delegated op becomes its own DELEGATE node writing the
  op's own output tensor: an op none of whose outputs a DELEGATE node writes
  runs in TFLite's builtin kernels. In a full-integer ViT those are the int8
  attention BATCH_MATMULs, SOFTMAX, GELU and LayerNorm's RSQRT; each also
  splits the graph into more delegate partitions.
  """
  interp = make_interpreter(experimental_disable_delegate_node_fusion=True)
  interp.allocate_tensors()
  ops = ops_details(interp)
  dtypes = {t['index']: t['dtype'] for t in interp.get_tensor_details()}
  delegated = {int(i) for op in ops if op['op_name'] == 'DELEGATE' for i in op['outputs']}
  fallback = collections.Counter()
  for op in ops:
    outputs = {int(i) for i in op['outputs'] if i >= 0}
    if op['op_name'] != 'DELEGATE' and not outputs & delegated:
      kinds = sorted({getattr(dtypes.get(int(i)), '__name__', '?')
                      for i in op['inputs'] if i >= 0})
      fallback[op['op_name'], '/'.join(kinds)] += 1
  return dict(fallback)
