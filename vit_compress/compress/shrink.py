"""Old name of `vit_compress.compress.shrink_cli` (the shrink command line).

`python -m vit_compress.compress.shrink ...` still runs the command, and
`from vit_compress.compress import shrink` is the same module object as
`shrink_cli`. The shrinking itself is `compress/structure.py`'s `shrink`.
"""
import sys

from vit_compress.compress import shrink_cli

if __name__ == '__main__':
  shrink_cli.command_line()
else:
  sys.modules[__name__] = shrink_cli
