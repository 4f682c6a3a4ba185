"""accelsim: co-design of compressed transformer inference hardware.

Data flow: models -> compress -> graph -> (ref | sim) -> report / dse.
``import accelsim`` loads neither torch nor numba.
"""

__version__ = "0.1.0"
