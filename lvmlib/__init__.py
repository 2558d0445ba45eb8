"""lvm-lab: next-concept-vector prediction, reproducibly."""
import os

# torch with 2 threads spin-waits 4-60x slower in a Jupyter kernel unless OpenMP waits passively; OpenMP reads
# this once, when torch loads it, so importing lvmlib first sets it in any kernel, whatever started it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
__version__ = "0.1.0"
