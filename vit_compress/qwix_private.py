"""The private qwix APIs the project relies on, in one place.

Written against qwix 0.1.8 (the version installed and tested; setup.py allows
>=0.1.5,<0.2). Each is part of qwix's `_src` package or an underscore method
with no public equivalent; when one moves, this module is the only one to
change.

  is_quantized_param(x)      whether a leaf is the wrapper qwix's PTQ puts
                             around a quantized parameter (`WithAux`)
  ActStatQtProvider          qwix's QT provider whose activation statistic a
                             subclass replaces (`act_statistic`), by wrapping
                             the private `_create_dot_general_qt_config`
"""
import dataclasses
from typing import Any, Dict

import qwix
# The wrapper qwix puts around quantized parameters; not re-exported by qwix.
from qwix._src.providers.ptq import WithAux


def is_quantized_param(x) -> bool:
  return isinstance(x, WithAux)


class ActStatQtProvider(qwix.QtProvider):
  """A QT provider whose dot_general input statistic is `act_statistic(...)`.

  qwix collects a statistic of each quantized dot_general's input (lhs) for
  static activation scales: {'absmax': ...} shaped like the scale. A subclass
  returns its own value of the same shape from `act_statistic(rule, lhs,
  calibration)`, where `calibration` is what qwix would have collected.
  """

  def act_statistic(self, rule, lhs, calibration: Dict[str, Any]) -> Dict[str, Any]:
    del rule, lhs
    return calibration

  def _create_dot_general_qt_config(self, rule, op_id, lhs, rhs):
    config = super()._create_dot_general_qt_config(rule, op_id, lhs, rhs)
    collect = config.lhs_collect_quant_stat
    if collect is None:
      return config

    def collect_replaced(calibration):
      return collect(self.act_statistic(rule, lhs, calibration))

    return dataclasses.replace(config, lhs_collect_quant_stat=collect_replaced)
