"""idstore: collision-free, dense node identities in a shared store, served over DNS."""

__version__ = "0.1.0"
