"""A toy NASViT supernet for search/export tests: the tiny space, 10 digits classes, a few dozen sandwich steps
(largest + smallest + one random subnet per step), enough that subnets are better than chance and that their
BN statistics differ from the supernet's shared running ones."""

from __future__ import annotations

import torch

from nasvit_hf import NASViTConfig, NASViTForImageClassification, NASViTImageProcessor
from nasvit_hf.data import load_digits_dataset
from nasvit_hf.presets import get_search_space


def train_toy_supernet(output_dir, steps: int = 30, batch_size: int = 48, seed: int = 0) -> str:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = load_digits_dataset(seed=0)["train"]
    pixels = NASViTImageProcessor.for_resolution(32)(list(data["image"]), return_tensors="pt")["pixel_values"]
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
    for _ in range(steps):
        index = torch.randint(len(labels), (batch_size,), generator=generator)
        for sample in (
            model.sample_max_subnet,
            model.sample_min_subnet,
            lambda: model.sample_active_subnet(generator),
        ):
            sample()
            model(pixel_values=pixels[index], labels=labels[index]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.sample_max_subnet()
    model.save_pretrained(output_dir)
    return str(output_dir)
