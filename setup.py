"""Installable package of the TFX recommender pipeline."""

from setuptools import find_packages, setup

# The exact, tested versions are in requirements/constraints.txt; install with
#   pip install --ignore-requires-python -c requirements/constraints.txt -e .[dev]
# (TFX 1.16's metadata says Python < 3.11, but it runs on 3.11.)
REQUIRED = [
    "tfx==1.16.0",
    "tensorflow==2.16.2",
    "tf-keras==2.16.0",
    "apache-beam[gcp]==2.59.0",
    "tensorflow-transform==1.16.0",
    "tensorflow-model-analysis==0.47.1",
    "tensorflow-data-validation==1.16.1",
    "tfx-bsl==1.16.1",
    "ml-metadata==1.16.0",
    "tensorflow-serving-api==2.16.1",
    "protobuf==4.25.5",
    "pyarrow==10.0.1",
    "numpy==1.26.4",
    "keras-nlp==0.12.1",
    "tensorflow-text==2.16.1",
    "tensorflow-recommenders==0.7.3",
    "keras-tuner==1.4.8",  # the TFX Tuner's search (trainer/tuning.py); already in the lock
    "matplotlib",
    "psutil",  # the model server's memory ceiling
    "prometheus_client",  # the model server's metrics (already in the lock)
    "urllib3",  # the client's REST transport (already in the lock)
    "kfp-pipeline-spec==0.7.0",  # compiling for Kubeflow Pipelines / Vertex
    "orjson",  # ingestion's log lines and packed events (already in the lock)
    "google-crc32c",  # TFRecord checksums of the written examples (already in the lock)
]

setup(
    name="tfx-recsys",
    version="0.1.0",
    description="Production recommender pipeline on TFX: multi-task two-tower model, "
    "TFMA blessing, TF Serving push.",
    python_requires=">=3.9",
    packages=find_packages(
        include=[
            "pipeline",
            "pipeline.*",
            "components",
            "components.*",
            "trainer",
            "trainer.*",
            "schemas",
            "datagen",
            "serving",
        ]
    ),
    package_data={
        "schemas": ["*.pbtxt"],
        "pipeline": ["environments/*.json"],
        "serving": ["configs/*.config"],
    },
    install_requires=REQUIRED,
    extras_require={
        # tokenizers: the reference the in-graph WordPiece tokenization is tested against.
        "dev": ["pytest", "pytest-xdist", "hypothesis", "ruff", "tokenizers"],
        # Airflow is large; install where the DAG is scheduled.
        "airflow": ["apache-airflow>=2.9,<3"],
    },
    entry_points={
        "console_scripts": [
            "recsys-pipeline=pipeline.cli:main",
            "recsys-generate=datagen.synthetic:main",
            "recsys-movielens=datagen.movielens:main",
            "recsys-serve=serving.server:main",
            "recsys-client=serving.client:main",
        ]
    },
)
