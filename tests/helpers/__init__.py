"""Helpers shared by the tests: tiny tasks, configs, random parameters and
subprocess runners. Not collected (no `test_` prefix); import as
`from tests.helpers import tiny_task` (pytest.ini puts the repository root on
sys.path, and subprocesses get it through `train_helpers.subprocess_env`)."""
