"""nexusd: a Kubernetes-native, high-throughput client-server proxy for algorithms.

A trio successor of SneaksAndData's Go Nexus, wire-compatible with its v1 HTTP API and CRDs.
"""

__version__ = "0.1.0"
