"""Learning-rate x width sweep on the tiny CPU preset: `python -m launch.sweep --sweep=configs/sweeps/lr_tiny.py`."""


def get_sweep():
  base = "configs/pretrain.py:tiny"
  overrides = [
      {"optim.lr": lr, "model.d_model": d, "train.steps": 200} for lr in (1e-3, 3e-3, 1e-2) for d in (128, 256)
  ]
  return base, overrides
