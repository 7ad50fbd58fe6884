"""Before/after of the concealer layout fold (benchmarks/PROFILING.md §7): each given concealer's release graph with
the batch-norm fold only and with ``fold_for_inference`` (+ layout fold, folded eraser), interleaved, each batch-256 call
between two 2048² matmul bursts (paired efficiency, as inference_backends.py).

    PYTHONPATH=src python benchmarks/concealer_layout_fold.py 5 models/concealer-utkface-64-latent100 models/concealer-utkface-64
"""
import copy, os, statistics, sys, time, torch
from conceal.bench import flops_per_image, matmul_burst
from conceal.export import example_inputs, graph_of, input_names
from conceal.methods.blocks import fold_batch_norm, fold_nearest_upsampling, fold_for_inference
from conceal.train.checkpoint import load_model
torch.set_num_threads(2)
rounds = int(sys.argv[1]); paths = sys.argv[2:]
print("load at start", os.getloadavg(), flush=True)
def runner(method, inputs):
    g = graph_of(method).to(memory_format=torch.channels_last)
    args = [inputs[n].contiguous(memory_format=torch.channels_last) if inputs[n].dim() == 4 else inputs[n] for n in input_names(method)]
    return lambda: g(*args)
runners, flops = {}, {}
for p in paths:
    m = load_model(p).eval()
    old, new = copy.deepcopy(m), copy.deepcopy(m)
    fold_batch_norm(old); fold_nearest_upsampling(old)
    fold_for_inference(new)
    inputs = example_inputs(m, 256)
    with torch.inference_mode():
        a, b = runner(old, inputs)(), runner(new, inputs)()
    print(p, "max diff released", (a[0]-b[0]).abs().max().item(), "codes", (a[1]-b[1]).abs().max().item(), flush=True)
    name = p.split("/")[-1]
    runners[name + " before"] = runner(old, inputs); runners[name + " after"] = runner(new, inputs)
    flops[name + " before"] = flops[name + " after"] = flops_per_image(m)
ratios = {k: [] for k in runners}; secs = {k: [] for k in runners}
with torch.inference_mode():
    for fn in runners.values(): fn()
    for r in range(rounds):
        for k, fn in runners.items():
            before = matmul_burst(2048, 0.25)
            t0 = time.perf_counter(); fn(); dt = time.perf_counter() - t0
            secs[k].append(dt)
            ratios[k].append(256 * flops[k] / dt / 1e9 / ((before + matmul_burst(2048, 0.25)) / 2))
for k in runners:
    r = ratios[k]
    print(f"{k:50s} paired {100*statistics.median(r):5.1f}% [{100*min(r):.0f}-{100*max(r):.0f}] {256/statistics.median(secs[k]):6.0f} img/s")
print("load at end", os.getloadavg())
