"""The command line: `shallowmimic` and its command groups, the local worker launcher, the text
of `arch` and the throughput benchmarks. Commands parse their arguments and call the layers
below; nothing here is imported by them."""

from shallowmimic.cli.main import main

__all__ = ["main"]
