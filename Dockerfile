# Image the pipeline's components run in under Kubeflow Pipelines / Vertex and
# Airflow workers (and Beam workers, as --sdk_container_image on Dataflow).
#   docker build -t recsys-pipeline:latest .
#   docker build --build-arg EXTRAS=airflow -t recsys-pipeline-airflow:latest .   # Airflow workers
FROM python:3.11-slim-bookworm
ARG EXTRAS=""

ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /pipeline
COPY requirements/constraints.txt requirements/no-deps.txt requirements/
COPY setup.py README.md ./
COPY pipeline pipeline
COPY components components
COPY trainer trainer
COPY schemas schemas
COPY datagen datagen
COPY serving serving

# TFX 1.16 declares Python < 3.11 but runs on 3.11: same flags as scripts/install.sh.
RUN pip install --no-cache-dir "pip==24.2" "setuptools==84.2.1" "wheel==0.48.0" \
 && pip install --no-cache-dir --ignore-requires-python -c requirements/constraints.txt ".${EXTRAS:+[$EXTRAS]}" \
 && pip install --no-cache-dir --no-deps --require-hashes -r requirements/no-deps.txt \
 && python -c "import tfx, tensorflow, keras_nlp, tensorflow_recommenders, pipeline.pipeline"
