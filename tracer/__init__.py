"""Stepwise's tracer: record Hugging Face `generate()` step by step, as plain data.

    import tracer, models
    model, tok = models.load("tiny-llama")
    tr = tracer.trace_generation(model, tok, "some prompt", max_new_tokens=8)
    tr.steps[1].attention("self", 0)   # [heads, q_len, k_len]

This package imports no Streamlit: it works in notebooks, scripts and CI.
"""

import importlib
from typing import Any

# Each public name and the module that defines it. They are imported on first use (PEP 562), so
# `import tracer.plots.generation` or `import tracer.trace` does not pull in torch and transformers:
# the app draws its first page while they load.
_EXPORTS = {
    "CacheReport": "tracer.doctor",
    "assert_cache_consistent": "tracer.doctor",
    "check_cache": "tracer.doctor",
    "compare_row_with_alone": "tracer.doctor",
    "StepwiseInputError": "tracer.errors",
    "TracingNotSupported": "tracer.errors",
    "trace_generation": "tracer.generate",
    "load_record": "tracer.records",
    "record_from_bytes": "tracer.records",
    "CacheLayer": "tracer.trace",
    "CaptureSummary": "tracer.trace",
    "Event": "tracer.trace",
    "Step": "tracer.trace",
    "TensorInfo": "tracer.trace",
    "TopToken": "tracer.trace",
    "Trace": "tracer.trace",
    "TraceError": "tracer.trace",
    "TraceFileError": "tracer.trace",
    "load_trace": "tracer.trace",
    "trace_from_bytes": "tracer.trace",
    "TrainerEvent": "tracer.training",
    "TrainerStepTrace": "tracer.training",
    "TrainingTrace": "tracer.training",
    "trace_trainer_step": "tracer.training",
    "trace_training_step": "tracer.training",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tracer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "CacheLayer",
    "CacheReport",
    "CaptureSummary",
    "Event",
    "Step",
    "StepwiseInputError",
    "TensorInfo",
    "TopToken",
    "Trace",
    "TraceError",
    "TraceFileError",
    "TracingNotSupported",
    "TrainerEvent",
    "TrainerStepTrace",
    "TrainingTrace",
    "assert_cache_consistent",
    "check_cache",
    "compare_row_with_alone",
    "load_record",
    "load_trace",
    "record_from_bytes",
    "trace_from_bytes",
    "trace_generation",
    "trace_trainer_step",
    "trace_training_step",
]
