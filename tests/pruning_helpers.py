from tests.helpers.params import random_params  # noqa: F401  shim for branches written before tests/helpers/ (issue #13); remove after merge
from tests.helpers.pruning_helpers import *  # noqa: F401,F403
