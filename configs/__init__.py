"""Configs as plain data: `get_config(preset)` per stage, derived from configs/base.py."""

import importlib

import ml_collections


def default_config(stage: str) -> ml_collections.ConfigDict:
  """The default (`tiny`) config of a stage: what a prerequisite run is trained with when it is absent."""
  return importlib.import_module(f"configs.{stage}").get_config("tiny")
