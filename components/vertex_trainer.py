"""The Trainer as a Vertex AI custom job, through TFX's Vertex AI Trainer
extension (``tfx.v1.extensions.google_cloud_ai_platform.Trainer``).

Its executor first moves the extra inputs (text embeddings, active tasks)
into ``custom_config`` (``ExtraInputs``), then TFX's extension submits the
job: every replica runs TFX's stock ``GenericExecutor`` with that
``custom_config``, so ``run_fn`` sees what it sees on one machine, plus
the ``TF_CONFIG`` Vertex AI writes. The job's ``worker_pool_specs`` come
from ``pipeline/vertex_training.py``.
"""

from tfx.dsl.components.base import executor_spec
from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_executor

from components.trainer import ExtraInputs, Trainer


class VertexExecutor(ExtraInputs, vertex_executor.GenericExecutor):
    """TFX's Vertex AI Trainer executor, with the extra inputs in ``custom_config``."""


class VertexTrainer(Trainer):
    """``components.trainer.Trainer`` whose run is a Vertex AI custom job."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(VertexExecutor)
