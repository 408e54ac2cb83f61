"""Training stages, one shape each (stages.base): pretrain -> sft -> grpo. A new stage is one module here (its
loss, data and prepare step), one config in configs/ and a three-line main in experiments/."""
