"""Config resolvers for hyperparameters as functions of the model size N (registered on import; plan.py
imports this module, so every process that plans or runs a job has them):

    train.lr: ${ss_by_n:${model},1.2e-2,-0.45,201280}          value · (N / n_ref)^exponent
    train.global_batch: ${ss_by_n_int:${model},4,0.6667,20904}  the same, rounded to a whole number >= 1

N is the model's non-embedding parameter count (the N of the law), computed from the model config.
"""
from __future__ import annotations

from omegaconf import OmegaConf


def by_model_size(model, value, exponent, n_ref) -> float:
    """value · (N / n_ref)^exponent (OLMo-core's ladder scales lr as N^-1/3 and batch as N^2/3)."""
    from .model import ModelSpec

    n = ModelSpec.from_config(model).non_embedding_params()
    return float(value) * (n / float(n_ref)) ** float(exponent)


def by_model_size_int(model, value, exponent, n_ref) -> int:
    return max(1, round(by_model_size(model, value, exponent, n_ref)))


OmegaConf.register_new_resolver("ss_by_n", by_model_size, replace=True)
OmegaConf.register_new_resolver("ss_by_n_int", by_model_size_int, replace=True)
