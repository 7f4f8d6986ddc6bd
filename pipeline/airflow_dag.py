"""Airflow DAG of the recommender pipeline: copy (or symlink) into Airflow's
dags folder on a worker where this package is installed with the ``airflow``
extra. Settings come from the JSON file in ``RECSYS_AIRFLOW_CONFIG``
(default: ``pipeline/environments/airflow.json``).
"""

import os

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

from pipeline import configs, runners

CONFIG_PATH = os.environ.get(
    "RECSYS_AIRFLOW_CONFIG", os.path.join(configs.ENVIRONMENTS_DIR, "airflow.json")
)
DAG = runners.airflow_dag(configs.RunConfig.from_file(CONFIG_PATH))
