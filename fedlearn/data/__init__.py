"""Datasets (bundled sklearn ones and user CSV/NPZ/Parquet files) and their federated partitioning."""

from fedlearn.data.dataset import Dataset
from fedlearn.data.loading import BUNDLED_DATASETS, load_dataset
from fedlearn.data.partition import PARTITION_SCHEMES, FederatedSplit, federate, institution_names
from fedlearn.data.scaling import Standardizer

__all__ = [
    "BUNDLED_DATASETS",
    "PARTITION_SCHEMES",
    "Dataset",
    "FederatedSplit",
    "Standardizer",
    "federate",
    "institution_names",
    "load_dataset",
]
