"""The names of the knowledge-tracing models and the modules that define them.

This is the one list of models: ``kt_models.base`` imports these modules to fill its registry
of classes, and the command line's help, the policy evaluation and the benchmarks read the
names from here. It imports nothing heavy (no torch), so a ``--help`` stays fast.
A model class registered under a name missing here is refused at import.
"""

from __future__ import annotations

#: model name -> (module under ``kt_models``, what it is in a few words)
MODELS: dict[str, tuple[str, str]] = {
    "dkt": ("dkt", "Deep Knowledge Tracing (Piech et al. 2015), an LSTM over answers"),
    "dkt+": ("dkt", "DKT+ (Yeung & Yeung 2018): DKT with reconstruction and smoothness terms"),
    "cakt": ("cakt", "CAKT (Yang et al. 2020): DKT with a 3D-convolutional learning curve"),
    "psikt": ("psikt", "PSI-KT (Zhou et al. 2024): prerequisites, forgetting, learner traits"),
    "bkt": ("bkt", "Bayesian Knowledge Tracing (Corbett & Anderson 1995), per concept"),
    "akt": ("akt", "AKT (Ghosh et al. 2020): monotonic attention, Rasch item embeddings"),
    "logistic": ("logistic", "An item-aware logistic baseline (PFA-style counts plus item terms)"),
}


def model_names() -> list[str]:
    """Every model name, sorted."""
    return sorted(MODELS)


def model_modules() -> tuple[str, ...]:
    """The modules that define the models, each once, in the order of :data:`MODELS`."""
    return tuple(dict.fromkeys(module for module, _ in MODELS.values()))


def names_text() -> str:
    """The names for a help text: ``bkt, cakt, dkt, ...``."""
    return ", ".join(model_names())


__all__ = ["MODELS", "model_modules", "model_names", "names_text"]
