"""Stepwise's tracer: record Hugging Face `generate()` step by step, as plain data.

    import tracer, models
    model, tok = models.load("tiny-llama")
    tr = tracer.trace_generation(model, tok, "some prompt", max_new_tokens=8)
    tr.steps[1].attention("self", 0)   # [heads, q_len, k_len]

This package imports no Streamlit: it works in notebooks, scripts and CI.
"""

from tracer.doctor import CacheReport, assert_cache_consistent, check_cache
from tracer.generate import StepwiseInputError, TracingNotSupported, trace_generation
from tracer.trace import (
    CacheLayer,
    CaptureSummary,
    Event,
    Step,
    TensorInfo,
    TopToken,
    Trace,
    TraceError,
    TraceFileError,
    load_trace,
    trace_from_bytes,
)
from tracer.training import (
    TrainerEvent,
    TrainerStepTrace,
    TrainingTrace,
    trace_trainer_step,
    trace_training_step,
)

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
    "load_trace",
    "trace_from_bytes",
    "trace_generation",
    "trace_trainer_step",
    "trace_training_step",
]
