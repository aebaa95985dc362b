"""Augmentation throughput table, same as `shallowmimic bench augment [--device cuda]`."""

import sys

from shallowmimic.cli import main

if __name__ == "__main__":
    main(["bench", "augment", *sys.argv[1:]])
