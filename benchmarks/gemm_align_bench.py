"""fp16 Linear forward + backward at M = 2^18 rows: do unaligned input widths (63, 283, 319) cost
more than the padded ones (64, 288, 320)? Prints ms per fwd+bwd (median of CUDA-event timings)."""

import torch

m = 1 << 18
rows = []
for k, n in ((63, 256), (64, 256), (256, 256), (319, 256), (320, 256), (283, 128), (288, 128)):
    lin = torch.nn.Linear(k, n).cuda()
    x = torch.randn(m, k, device="cuda", requires_grad=True)
    times = []
    for i in range(30):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        with torch.autocast("cuda", dtype=torch.float16):
            y = lin(x)
        y.float().sum().backward()
        e.record()
        torch.cuda.synchronize()
        if i >= 5:
            times.append(s.elapsed_time(e))
    times.sort()
    rows.append((k, n, times[len(times) // 2]))
for k, n, t in rows:
    print(f"K={k:4d} N={n:4d}: {t:.3f} ms fwd+bwd")
