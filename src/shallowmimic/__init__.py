"""shallowmimic: do deep convolutional nets really need to be deep (or even convolutional)?

A reproduction toolkit for Urban et al., ICLR 2017. See docs/ARCHITECTURE.md for the layers.
"""

__version__ = "0.1.0"
