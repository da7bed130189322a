"""Getting tensors out of fito's format: `fito.load_tensors` (verified full tensors by name) and `fito export`
(Hugging Face safetensors, or one torch.save file). Both read through the restore's path (fito.dcp.reader)."""
from fito.export.tensors import StepTensors, load_tensors
from fito.export.write import ExportResult, export, parse_size

__all__ = ["ExportResult", "StepTensors", "export", "load_tensors", "parse_size"]
