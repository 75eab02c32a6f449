"""The trainer's periodic evaluation over the eval split, chosen by eval kind.

    run_eval = evaluation.EVAL_KINDS.get(kind)(config, mesh, module, info)
    metrics = run_eval(params)   # {'accuracy': in [0, 1], 'examples': n, ...}

The kind comes from the model family (`models.families`): 'classification'
scores the class head (top-1, top-5, loss), 'zero_shot' a two-tower model
against prompts made from the dataset's class names. Each evaluator is built
once per run and jitted once; only the params change between calls. Here,
unlike the percentages of `eval.accuracy`, accuracies are fractions: they are
what the trainer logs and what `config.best_metric` ranks checkpoints by.
"""
from typing import Callable, Dict

from vit_compress import data
from vit_compress.evaluation import classification
from vit_compress.evaluation import zero_shot
from vit_compress.registry import Registry

EvalFn = Callable[..., Dict[str, float]]
# kind -> make(config, mesh, module, info) -> fn(params) -> metrics
EVAL_KINDS: Registry = Registry('eval kind')


def evaluate(config, mesh, accuracy, params) -> Dict[str, float]:
  """Exact top-1 (and top-5) and loss over the eval split, via `accuracy_fn`."""
  metrics = accuracy(params, data.make_eval_iterator(config, mesh))
  out = {'accuracy': metrics['top1'] / 100, 'loss': metrics['loss'],
         'examples': metrics['count']}
  if 'top5' in metrics:
    out['top5'] = metrics['top5'] / 100
  return out


@EVAL_KINDS.register('classification')
def classification_evaluator(config, mesh, module, info) -> EvalFn:
  """`fn(params)` -> top-1, top-5 and loss of the class head."""
  del info
  accuracy = classification.accuracy_fn(module, top_k=(1, 5))
  return lambda params: evaluate(config, mesh, accuracy, params)


@EVAL_KINDS.register('zero_shot')
def zero_shot_evaluator(config, mesh, module, info) -> EvalFn:
  """LiT: `fn(params)` -> zero-shot top-1 over the eval split, prompts from the
  class names; jitted once for the whole run (only the params change)."""
  m = config.model
  tokenizer = data.get_tokenizer(m.tokenizer, m.max_len, m.get('tokenizer_model'))
  score = zero_shot.zero_shot_fn(module, info.class_names, config.lit.templates,
                                 tokenizer, top_k=(1,))

  def run(params) -> Dict[str, float]:
    result = score(params, data.make_eval_iterator(config, mesh))
    return {'accuracy': result['top1'] / 100, 'examples': result['count']}
  return run
