"""Root pytest configuration.

nbval runs every notebook in the quick profile: the kernels it starts inherit
this process's environment, and each notebook's parameters cell reads
DLBOOK_PROFILE (see dlbook.runtime).
"""
import os

os.environ.setdefault("DLBOOK_PROFILE", "quick")
os.environ.setdefault("DLBOOK_DEVICE", "auto")
os.environ.setdefault("MPLBACKEND", "Agg")
# two notebook kernels share the two cores (pytest-xdist -n 2): one torch thread each
os.environ.setdefault("DLBOOK_THREADS", "1")
