"""GPT-2 small learning-rate sweep on a TPU pod slice: `python -m launch.sweep --sweep=configs/sweeps/gpt2_124m_lr.py
--target=tpu --name=NAME --zone=ZONE --workdir_root=gs://BUCKET/sweeps` (one run after another on the same slice)."""


def get_sweep():
  base = "configs/pretrain.py:gpt2_124m"
  overrides = [{"optim.lr": lr, "mesh.data": 1, "mesh.fsdp": -1} for lr in (3e-4, 6e-4, 1.2e-3)]
  return base, overrides
