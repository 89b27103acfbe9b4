"""recllm: one fine-tuned language model as a universal recommendation learner.

The library: lake I/O, data, prompts, model, training, inference and metrics, as plain
functions over DataFrames, Arrow/pandas batches and tensors. It never imports `jobs`
or `udfs`.
"""

__version__ = "0.1.0"
