"""Static-shape graph export (MindIR, ONNX) of the SVD networks, with validation."""

from .api import ExportResult, GraphReport, export_artifact, relative_error

__all__ = ["export_artifact", "ExportResult", "GraphReport", "relative_error"]
