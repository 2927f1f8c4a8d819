"""One sandwich step on demand, for `bench_sandwich.py --baseline`: run once with the current package and once with a
baseline revision's (on PYTHONPATH), the two processes are stepped alternately so both see the same machine load.

Protocol: argv = JSON settings; each stdin line "step" runs one sandwich step (accumulate + optimizer step) and answers
its wall seconds on stdout; "quit" (or end of input) exits. Uses only the API both revisions share."""

from __future__ import annotations

import json
import sys
import time

import torch


def main() -> None:
    settings = json.loads(sys.argv[1])
    import nasvit_hf
    from nasvit_hf import NASViTConfig, NASViTForImageClassification
    from nasvit_hf.presets import get_search_space
    from nasvit_hf.training import SandwichConfig, SandwichTrainer

    torch.set_num_threads(settings["threads"])
    torch.manual_seed(0)
    config = NASViTConfig(search_space=get_search_space(settings["space"]), num_labels=10)
    supernet = NASViTForImageClassification(config).train()
    optimizer = torch.optim.AdamW(supernet.parameters(), lr=1e-4)
    trainer = SandwichTrainer(
        supernet,
        SandwichConfig(num_random_subnets=len(settings["archs"]) - 2, granularity=settings["granularity"]),
    )
    archs = [(name, arch) for name, arch in settings["archs"]]  # the same archs in both processes
    generator = torch.Generator().manual_seed(0)
    resolution = settings["resolution"]
    batch = settings["batch_size"]
    pixel_values = torch.randn(batch, 3, resolution, resolution, generator=generator)
    labels = torch.randint(10, (batch,), generator=generator)
    print(json.dumps({"ready": nasvit_hf.__file__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        start = time.perf_counter()
        trainer.accumulate(pixel_values, labels, archs)
        trainer.step(optimizer)
        print(time.perf_counter() - start, flush=True)


if __name__ == "__main__":
    main()
