import torch, time
torch.manual_seed(0)
lstm = torch.nn.LSTM(512, 512, 2).eval()
x = torch.randn(750, 1, 512)
for th in (1, 2, 1, 2):
    torch.set_num_threads(th)
    with torch.inference_mode():
        for _ in range(2): lstm(x)
        ts = []
        for _ in range(5):
            t0 = time.perf_counter(); lstm(x); ts.append(time.perf_counter() - t0)
    print(th, f"{1000*sorted(ts)[2]:.1f} ms")
