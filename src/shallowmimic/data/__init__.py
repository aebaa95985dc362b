"""Data sources (the official CIFAR-10 release, .npz files), the download into the cache, the
seeded train/validation split and the dataset summary.

Its public names are imported on first use (`core.lazy`): importing the package costs nothing.
"""

from shallowmimic.core.lazy import lazy_exports

_EXPORTS = {
    "CIFAR_URL": "download", "ENV_DATA": "download", "download_cifar10": "download",
    "resolve_data_path": "download",
    "dataset_info": "info",
    "Dataset": "sources", "load_dataset": "sources",
    "SplitConfig": "split", "SplitData": "split", "make_split": "split", "split_tensors": "split",
    "standardize": "split", "to_float": "split",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
