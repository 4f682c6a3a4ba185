"""Operator graph (IR), tracing of PyTorch models into it, and graph I/O."""

from accelsim.graph.ir import GemmNode, Graph, Node, VectorNode

__all__ = ["GemmNode", "Graph", "Node", "VectorNode"]
