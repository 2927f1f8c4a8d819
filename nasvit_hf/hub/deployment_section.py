"""The deployment section of a NASViT subnet's model card (README.md of an exported Hub folder)."""

from __future__ import annotations

import os

__all__ = ["model_card_section"]


def model_card_section(
    model_id: str,
    image_size: int,
    onnx_file: str | None = None,
    program_file: str | None = None,
    heading: str = "## Deployment",
) -> str:
    """Markdown telling users how to export and run the subnet `model_id` with onnxruntime and torch.export.

    Args:
        model_id: the Hub repo id (or local folder) users load the model from.
        image_size: the subnet's resolution (`config.arch["resolution"]`); exported graphs take exactly this size.
        onnx_file, program_file: paths *inside* the repo of an ONNX file / `.pt2` program shipped with it (e.g.
            `"onnx/model.onnx"`); when given, the snippets download them instead of exporting them first.
        heading: the section heading (use "###" to nest it).
    """
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int (the subnet's resolution), got {image_size!r}.")
    local = os.path.isdir(model_id)

    def locate(filename: str | None, default: str) -> str:
        if filename is None:
            return f'"{default}"'
        if local:
            return repr(os.path.join(model_id, filename))
        return f'hf_hub_download("{model_id}", "{filename}")'

    onnx_path, program_path = locate(onnx_file, "model.onnx"), locate(program_file, "model.pt2")
    hub_import = ["from huggingface_hub import hf_hub_download"] if not local else []
    shipped = [name for name in (onnx_file, program_file) if name]
    lines = [
        heading,
        "",
        f"This checkpoint is one fixed NASViT subnet, so it exports to ONNX and to a `torch.export` program. The "
        f"exported graphs take `pixel_values` of shape `(batch, 3, {image_size}, {image_size})` exactly (the "
        f"subnet's resolution; the PyTorch model resizes other sizes, the exported graphs do not): preprocess "
        f"with the checkpoint's image processor, which resizes and centre-crops to {image_size}x{image_size}.",
        "",
    ]
    if shipped:
        lines += [f"This repository ships {' and '.join(f'`{name}`' for name in shipped)}.", ""]
    if not onnx_file or not program_file:
        lines += [
            "Export them (each graph is checked and compared with PyTorch eager before it is written; needs "
            "`pip install 'nasvit_hf[export]'`, or run `python recipes/deploy.py --model "
            f"{model_id} --output model.onnx --dynamic_batch --program model.pt2` from the nasvit_hf repository):",
            "",
            "```python",
            "from nasvit_hf.deploy import export_onnx, export_program",
            "",
            f'export_onnx("{model_id}", "model.onnx", dynamic_batch=True)',
            f'export_program("{model_id}", "model.pt2", dynamic_batch=True)',
            "```",
            "",
        ]
    lines += [
        "Run with onnxruntime (only the image processor comes from transformers):",
        "",
        "```python",
        "import onnxruntime as ort",
        *(hub_import if onnx_file else []),
        "from PIL import Image",
        "from transformers import AutoImageProcessor",
        "",
        f'processor = AutoImageProcessor.from_pretrained("{model_id}", trust_remote_code=True)',
        f'session = ort.InferenceSession({onnx_path}, providers=["CPUExecutionProvider"])',
        'pixel_values = processor(Image.open("image.jpg"), return_tensors="np")["pixel_values"]',
        'logits = session.run(["logits"], {"pixel_values": pixel_values})[0]',
        "```",
        "",
        "Or the `torch.export` program (no nasvit_hf or transformers needed to run it):",
        "",
        "```python",
        "import torch",
        *(hub_import if program_file else []),
        "",
        f"program = torch.export.load({program_path}).module()",
        "logits = program(torch.from_numpy(pixel_values))[0]  # pixel_values from the processor above",
        "```",
        "",
    ]
    return "\n".join(lines)
