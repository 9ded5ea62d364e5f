"""Entry functions as command lines: ``main(train, evaluate, predict)`` and ``--args`` YAML.

- :mod:`~blocktrain.entry.command`: the defopt CLI, :func:`main`, :func:`resolve`, :func:`validate`;
- :mod:`~blocktrain.entry.argfiles`: loading and merging ``--args`` files with line numbers;
- :mod:`~blocktrain.entry.argtypes`: checking a value against a parameter's annotation;
- :mod:`~blocktrain.entry.loader`: the function a ``package.module:function`` name stands for.

Must not: import torch or mlflow (launchers resolve arguments with it), or talk to Slurm.
"""

from blocktrain.entry.command import main, resolve, split_args_flag, validate
from blocktrain.entry.loader import load_entry

__all__ = ["load_entry", "main", "resolve", "split_args_flag", "validate"]
