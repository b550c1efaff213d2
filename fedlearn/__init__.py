"""fedlearn: federated learning where every institution is paid for what its updates contributed."""

__version__ = "0.1.0"
