"""A tiny gloo job: every rank adds its number in one all-reduce. Prints one line when
it completes."""

import torch
import torch.distributed as dist

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
total = torch.tensor([float(rank + 1)])
dist.all_reduce(total)
assert total.item() == world * (world + 1) / 2, total
dist.barrier()
print(f"job done: rank {rank} of {world}, sum {total.item():g}", flush=True)
dist.destroy_process_group()
