"""The curated schema of the raw interaction examples."""

import os

SCHEMA_DIR = os.path.dirname(os.path.abspath(__file__))
SCHEMA_PATH = os.path.join(SCHEMA_DIR, "schema.pbtxt")
MOVIELENS_SCHEMA_PATH = os.path.join(SCHEMA_DIR, "movielens_schema.pbtxt")
