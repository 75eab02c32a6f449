"""Captions from class names and templates, for LiT training and zero-shot.

A template is a str.format pattern with one `{}` for the class name. Named
sets live in TEMPLATES; a config may also give its own tuple of templates.
The same function builds the training captions (inside tf.data, via the
`captions` preprocessing op) and the zero-shot prompts (from Python), so both
sides speak the same language.
"""
from typing import List, Sequence, Tuple, Union

from vit_compress import registry

TEMPLATES = {
    'digits': ('a photo of the digit {}.',
               'a handwritten {}.',
               'the number {}.',
               'a blurry picture of a {}.',
               'a small drawing of the digit {}.'),
    'default': ('a photo of a {}.',
                'a blurry photo of a {}.',
                'a photo of the small {}.',
                'a photo of the large {}.',
                'a cropped photo of a {}.',
                'itap of a {}.'),
    'plain': ('{}',),
}
Templates = Union[str, Sequence[str]]


def resolve(templates: Templates) -> Tuple[str, ...]:
  """A name in TEMPLATES, or a sequence of '{}' patterns, as a tuple."""
  if isinstance(templates, str):
    if '{}' in templates:
      return (templates,)
    if templates not in TEMPLATES:
      raise registry.UnknownNameError(registry.unknown_name_message(
          'caption template set', templates, TEMPLATES))
    return TEMPLATES[templates]
  templates = tuple(templates)
  bad = [t for t in templates if not isinstance(t, str) or '{}' not in t]
  if not templates or bad:
    raise ValueError('Caption templates must be strings with one {} for the '
                     f'class name; got {bad or templates!r}.')
  return templates


def caption_texts(class_names: Sequence[str],
                  templates: Templates = 'default') -> List[List[str]]:
  """texts[c][t]: class c written with template t (zero-shot prompts).

  Underscores in class names become spaces ('golden_retriever').
  """
  templates = resolve(templates)
  return [[t.format(str(name).replace('_', ' ')) for t in templates]
          for name in class_names]
