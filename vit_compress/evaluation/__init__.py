"""The one eval module: accuracy, zero-shot, teacher agreement, measured cost, report.

Evaluators are registered by name and share one call signature,
`fn(model, params, batches, **kwargs) -> dict of numbers`, where `model` is a
Flax module or `apply_fn(params, images)` and `batches` yields dicts with
'image', 'label' and 'mask' (0 = padding, not counted):

    metrics = evaluation.EVALUATORS.get('classification')(model, params, batches)
    cost = eval.profile(model, params, image_shape=(8, 8, 3), artifact=model_dir)
    eval.write_report(rows, workdir)   # report.json, report.md, pareto.png

The trainer's periodic evaluation is chosen by eval kind (the model family
says which: `models.families`), from `EVAL_KINDS` ('classification',
'zero_shot'; see evaluation/periodic.py).
"""
from vit_compress.evaluation.classification import accuracy
from vit_compress.evaluation.classification import accuracy_fn
from vit_compress.evaluation.classification import agreement
from vit_compress.evaluation.classification import agreement_fn
from vit_compress.evaluation.classification import forward_fn
from vit_compress.evaluation.periodic import EVAL_KINDS
from vit_compress.evaluation.profiling import artifact_bytes
from vit_compress.evaluation.profiling import count_params
from vit_compress.evaluation.profiling import profile
from vit_compress.evaluation.report import format_table
from vit_compress.evaluation.report import plot_pareto
from vit_compress.evaluation.report import print_table
from vit_compress.evaluation.report import score_variant
from vit_compress.evaluation.report import read_report
from vit_compress.evaluation.report import write_report
from vit_compress.evaluation.zero_shot import zero_shot_accuracy
from vit_compress.evaluation.zero_shot import zero_shot_classifier
from vit_compress.evaluation.zero_shot import zero_shot_fn
from vit_compress.registry import Registry

EVALUATORS = Registry('evaluator')
EVALUATORS.register('classification')(accuracy)
EVALUATORS.register('zero_shot')(zero_shot_accuracy)
EVALUATORS.register('agreement')(agreement)
EVALUATORS.register('profile')(profile)
