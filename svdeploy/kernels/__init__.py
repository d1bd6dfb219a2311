"""Op variants selected by an explicit ``KernelConfig``; each has a NumPy reference."""

from .config import KernelConfig

__all__ = ["KernelConfig"]
