"""Run by test_training_multiprocess.py under `accelerate launch --multi_gpu --num_processes 2` (gloo on CPU):
two sandwich steps on different data per rank; writes what each rank saw to OUTPUT_DIR/rank{r}.json."""

import json
import os
import sys

import torch
from accelerate import Accelerator

sys.path.insert(0, os.path.dirname(__file__))
from _training_helpers import batch, micro_model  # noqa: E402

from nasvit_hf.training import ArchSampler, SandwichConfig, SandwichTrainer  # noqa: E402
from nasvit_hf.training import sandwich as sandwich_module  # noqa: E402


def flat(grads, params):
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def main():
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    model = micro_model(seed=rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    trainer = SandwichTrainer(model, SandwichConfig(max_grad_norm=None), backward=accelerator.backward)
    sampler = ArchSampler(accelerator.unwrap_model(model).config, num_random=2, seed=0)
    captured = []
    original = sandwich_module.combine_gradients

    def spy(sup, sub, *args, **kwargs):
        captured.append((flat(sup, trainer.parameters), flat(sub, trainer.parameters)))
        return original(sup, sub, *args, **kwargs)

    sandwich_module.combine_gradients = spy
    errors, local_differs, ratios = [], [], []
    for step in range(2):
        trainer.accumulate(*batch(seed=100 * rank + step, size=2), sampler.sample())
        local_sup = flat(trainer.sup_grads, trainer.parameters)
        local_sub = flat(trainer.sub_grads, trainer.parameters)
        gathered_sup = accelerator.gather(local_sup[None])
        gathered_sub = accelerator.gather(local_sub[None])
        output = trainer.step(optimizer)
        ratios.append(output.conflict_ratio)
        sup_in, sub_in = captured[-1]
        errors.append(
            max(
                (sup_in - gathered_sup.mean(0)).abs().max().item(),
                (sub_in - gathered_sub.mean(0)).abs().max().item(),
            )
        )
        local_differs.append((gathered_sup[0] - gathered_sup[1]).abs().max().item())
    state = accelerator.unwrap_model(model).state_dict()
    weights = torch.cat([t.float().reshape(-1) for t in state.values()])
    all_weights = accelerator.gather(weights[None])
    result = {
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "combine_input_error": max(errors),
        "local_gradient_difference": min(local_differs),
        "weight_difference": (all_weights[0] - all_weights[1]).abs().max().item(),
        "conflict_ratios": ratios,
    }
    with open(os.path.join(os.environ["OUTPUT_DIR"], f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
