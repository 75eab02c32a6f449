"""Old name of `vit_compress.config_schema` (the experiment config schema).

Kept so that `from vit_compress import experiment` in users' code and
notebooks still works: the old name is the same module object, not a copy.
"""
import sys

from vit_compress import config_schema

sys.modules[__name__] = config_schema
