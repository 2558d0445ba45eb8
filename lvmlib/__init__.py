"""lvm-lab: next-concept-vector prediction, reproducibly."""
__version__ = "0.1.0"
