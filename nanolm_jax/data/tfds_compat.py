"""Imports ``tensorflow_datasets`` with a workaround for a packaging bug; import tfds from here.

tfds 4.9.x does ``import importlib_resources`` lazily when a builder computes its code path, but only declares that
backport as a dependency for Python < 3.9, so preparing any dataset fails with ModuleNotFoundError on a clean 3.11
install. The stdlib's ``importlib.resources`` has the one attribute it uses (``abc.Traversable``), so alias it.
"""

import importlib.resources
import importlib.resources.abc
import importlib.util
import sys

if importlib.util.find_spec('importlib_resources') is None:
  sys.modules.setdefault('importlib_resources', importlib.resources)

import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,g-bad-import-order

__all__ = ['tfds']
