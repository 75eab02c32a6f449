"""Old name of `vit_compress.param_paths` (regexes over parameter paths).

Kept so that `from vit_compress import paths` in users' code still works: the
old name is the same module object, not a copy.
"""
import sys

from vit_compress import param_paths

sys.modules[__name__] = param_paths
