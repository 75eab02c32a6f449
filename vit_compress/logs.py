"""Progress logs: the library's absl INFO lines, without its dependencies'
per-step chatter (orbax logs every save, TFDS every read, at INFO)."""
import logging as std_logging

from absl import logging

_CHATTY = ('/orbax/', '/tensorflow_datasets/')


def _keep(record) -> bool:
  return (record.levelno >= std_logging.WARNING
          or not any(lib in record.pathname for lib in _CHATTY))


def quiet_dependencies() -> None:
  """Keeps only warnings from orbax and TFDS on absl's handler."""
  handler = logging.get_absl_handler()
  if _keep not in handler.filters:
    handler.addFilter(_keep)


def show_progress() -> None:
  """For notebooks and scripts outside `absl.app`: installs absl's handler,
  logs at INFO, and quietens orbax and TFDS."""
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  quiet_dependencies()
