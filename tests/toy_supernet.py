"""A toy NASViT supernet for search/export tests: the tiny space, 10 digits classes, a few dozen sandwich steps
(largest + smallest + one random subnet per step, all at 32 px to keep CPU time low). Enough that the smallest and
largest subnets are well above chance and that the shared BN running statistics, a mixture over subnets, are wrong
for any single one: recalibration matters."""

from __future__ import annotations

import torch

from nasvit_hf import NASViTConfig, NASViTForImageClassification, NASViTImageProcessor
from nasvit_hf.data import load_digits_dataset
from nasvit_hf.presets import get_search_space

TRAIN_RESOLUTION = 32


def train_toy_supernet(
    output_dir, steps: int = 24, batch_size: int = 32, seed: int = 0, fixed_resolution: bool = True
) -> str:
    """Train and save the toy supernet; `fixed_resolution=False` trains every subnet at its own resolution (slower,
    for demos: the images are upsampled inside the model)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = load_digits_dataset(seed=0)["train"]
    processor = NASViTImageProcessor.for_resolution(TRAIN_RESOLUTION)
    pixels = processor(list(data["image"]), return_tensors="pt")["pixel_values"]
    labels = torch.tensor(list(data["label"]))
    config = NASViTConfig(
        search_space=get_search_space("tiny"),
        num_labels=10,
        id2label={i: str(i) for i in range(10)},
        label2id={str(i): i for i in range(10)},
    )
    model = NASViTForImageClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    model.train()

    def at_train_resolution(arch):
        return model.set_active_subnet({**arch, "resolution": TRAIN_RESOLUTION} if fixed_resolution else arch)

    for _ in range(steps):
        index = torch.randint(len(labels), (batch_size,), generator=generator)
        for arch in (config.largest_arch(), config.smallest_arch(), model.sample_active_subnet(generator)):
            at_train_resolution(arch)
            model(pixel_values=pixels[index], labels=labels[index]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.sample_max_subnet()
    model.save_pretrained(output_dir)
    return str(output_dir)
