import os as _os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting (the default) make torch 5-10x slower when the cores are shared (Ray actors,
# parallel test runs): measured here, a tiny-model training step took 2.2-3.9 s instead of 0.2-0.4 s under load.
# Passive waiting avoids that. It must be set before torch loads its OpenMP runtime; users can still override it.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
