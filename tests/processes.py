from tests.helpers.processes import *  # noqa: F401,F403  shim for branches written before tests/helpers/ (issue #13); remove after merge
