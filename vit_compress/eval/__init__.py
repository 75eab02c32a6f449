"""Old name of `vit_compress.evaluation` (it shadowed the builtin `eval`).

Kept so that `from vit_compress import eval as eval_lib` and
`from vit_compress.eval.report import ...` in users' code still work: each old
name is the same module object as the new one, not a copy.
"""
import importlib
import pkgutil
import sys

from vit_compress import evaluation

for _info in pkgutil.iter_modules(evaluation.__path__):
  sys.modules[f'{__name__}.{_info.name}'] = importlib.import_module(
      f'{evaluation.__name__}.{_info.name}')
sys.modules[__name__] = evaluation
