"""dlbook: the shared library of the executable deep-learning textbook.

Import the modules by topic (``dlbook.data``, ``dlbook.training``,
``dlbook.mlp``...). The most used entry points are re-exported here.
"""

from .runtime import PROFILES, Run, choose_device, default_device, default_profile, seed_everything, start, time_call

__version__ = "0.1.0"

__all__ = ["PROFILES", "Run", "choose_device", "default_device", "default_profile", "seed_everything",
           "start", "time_call", "__version__"]
