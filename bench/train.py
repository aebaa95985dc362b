"""Training throughput table, same as `shallowmimic bench train [--device cuda] [--steps N]`."""

import sys

from shallowmimic.cli import main

if __name__ == "__main__":
    main(["bench", "train", *sys.argv[1:]])
