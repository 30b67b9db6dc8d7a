"""Training speed of cyclegan_nb: seconds per iteration, peak memory and achieved FLOP/s.

    python benchmarks/train_speed.py                  # CPU: ResNet-9 + 70x70 PatchGAN, batch 1, 128 and 256 px, fp32 and bf16
    python benchmarks/train_speed.py --device cuda    # GPU: 256 px, batch 1 and 4, the plain step, each fast-path
                                                      # switch, all of them, and DDP on 2 GPUs when there are 2
    python benchmarks/train_speed.py --out table.md   # also write the markdown table to a file

One iteration is `CycleGAN.train_step`: four generator and two discriminator forward and backward passes and two Adam
steps (the reference iteration). Its FLOPs are counted by `torch.utils.flop_counter` on the first (warm-up) iteration.
Each measurement runs in a fresh process, so that its peak memory (resident set size on the CPU, the allocator's peak
on a GPU) is its own. Times are medians of short repeated measurements.
"""
import argparse, json, os, platform, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense peak TFLOP/s from NVIDIA's data sheets: (fp32 on CUDA cores, tf32 on tensor cores, fp16/bf16 on tensor cores).
GPU_PEAKS = {'T4': (8.1, None, 65), 'P100': (9.3, None, 18.7), 'V100': (15.7, None, 125), 'A10G': (31.2, 35, 70),
             'L4': (30.3, 60, 121), 'A100': (19.5, 156, 312), 'H100': (67, 495, 989), 'H200': (67, 495, 989)}

# The GPU rows: the plain reference-equivalent step, each switch on its own, then all of them.
PLAIN = dict(precision='fp32', channels_last='off', batched_calls='off', fused_adam='off', cudnn_benchmark='off',
             gpu_augment='off', torch_compile='off')
SWITCH_ROWS = [('plain step (fp32, separate calls, NCHW, CPU data pipeline)', {}),
               ('+ channels_last', dict(channels_last='on')), ('+ batched_calls', dict(batched_calls='on')),
               ('+ fused_adam', dict(fused_adam='on')), ('+ AMP (precision=auto)', dict(precision='auto')),
               ('+ cudnn_benchmark', dict(cudnn_benchmark='on')), ('+ gpu_augment', dict(gpu_augment='on')),
               ('all of the above', dict(channels_last='on', batched_calls='on', fused_adam='on', precision='auto',
                                         cudnn_benchmark='on', gpu_augment='on')),
               ('all of the above + torch_compile', dict(channels_last='on', batched_calls='on', fused_adam='on',
                                                         precision='auto', cudnn_benchmark='on', gpu_augment='on',
                                                         torch_compile='on'))]


def describe_machine() -> list:
    "Lines describing the CPU, the GPUs, PyTorch and how busy the machine is."
    cpu = platform.processor() or platform.machine()
    flags = ''
    if Path('/proc/cpuinfo').exists():
        info = Path('/proc/cpuinfo').read_text()
        cpu = next((l.split(':', 1)[1].strip() for l in info.splitlines() if l.startswith('model name')), cpu)
        flags = next((l for l in info.splitlines() if l.startswith('flags')), '')
    bf16 = [f for f in ('avx512_bf16', 'amx_bf16') if f in flags.split()]
    usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return [f"- CPU: {cpu}, {usable} usable core(s) of {os.cpu_count()}, bf16 instructions: {', '.join(bf16) or 'none'}",
            f"- GPU: {', '.join(gpus) or 'none'}",
            f"- PyTorch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), Python {platform.python_version()}",
            "- load average (1, 5, 15 min) at the start: " + ', '.join(f'{x:.1f}' for x in os.getloadavg())]


def gpu_peak(name:str, precision:str):
    "The GPU's dense peak TFLOP/s for a row of `precision` (fp32 convolutions may run as tf32), or None."
    peaks = next((v for k, v in GPU_PEAKS.items() if k in name), None)
    if peaks is None: return None
    fp32, tf32, half = peaks
    if precision != 'fp32': return half
    return tf32 if tf32 and torch.backends.cudnn.allow_tf32 else fp32


# ---------------------------------------------------------------------------------------------------- one measurement
def batches(model, spec, world):
    "Endless training batches: random tensors, or the real data pipeline (DataLoader or DeviceImages) on `spec['data']`."
    from cyclegan_nb.training import DeviceImages, EpochSampler, make_dataset
    b, size = spec['batch'], spec['size']
    if not spec.get('data'):
        g = torch.Generator().manual_seed(0)
        fixed = [torch.rand(b, 3, size, size, generator=g) * 2 - 1 for _ in 'AB']
        while True: yield {'A': fixed[0], 'B': fixed[1]}
    config = model.config
    dataset = make_dataset(config, spec['data'])
    images = DeviceImages(dataset, config, model.device) if model.fast_path['gpu_augment'] else None
    sampler = EpochSampler(len(dataset), config.seed, 0, 0, world.rank, world.world_size)
    loader = images.batches(sampler, b) if images else torch.utils.data.DataLoader(
        dataset, b, sampler=sampler, num_workers=config.num_workers, pin_memory=model.device.type == 'cuda',
        persistent_workers=config.num_workers > 0)
    yield from loader


def measure(spec:dict) -> dict:
    "Time `train_step` as `spec` describes; returns seconds per iteration, FLOPs and peak memory."
    from cyclegan_nb.distributed import Distributed
    from cyclegan_nb.training import CycleGAN, get_config
    switches = {k: spec[k] for k in PLAIN if k in spec}
    before_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Python, PyTorch and cyclegan_nb loaded
    with Distributed(spec['device'], 600) as world:
        device = world.device
        cuda = device.type == 'cuda'
        config = get_config('reference', netG='resnet_9blocks', netD='basic', ngf=spec['ngf'], ndf=spec['ndf'],
                            load_size=round(spec['size'] * 286 / 256), crop_size=spec['size'], batch_size=spec['batch'],
                            epoch_length=100_000, num_workers=min(4, os.cpu_count() or 1), device=str(device),
                            wandb='disabled', **switches)
        model = CycleGAN(config, device, world)
        data = batches(model, spec, world)
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        if cuda: torch.cuda.reset_peak_memory_stats(device)
        flops = None
        for i in range(spec['warmup']):
            batch = next(data)
            if i == 0 and not model.fast_path['torch_compile']:   # FlopCounterMode does not see into compiled graphs
                with FlopCounterMode(display=False) as counter: model.train_step(batch['A'], batch['B'])
                flops = counter.get_total_flops()
            else: model.train_step(batch['A'], batch['B'])
        times = []
        for _ in range(spec['rounds']):
            sync(); start = time.perf_counter()
            for _ in range(spec['iterations']):
                batch = next(data); model.train_step(batch['A'], batch['B'])
            sync(); times.append((time.perf_counter() - start) / spec['iterations'])
        peak = torch.cuda.max_memory_allocated(device) if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return dict(spec, seconds=statistics.median(times), fastest=min(times), slowest=max(times), flops=flops,
                    peak_bytes=peak, before_model_bytes=before_model, precision_used=model.precision, fast_path=model.fast_path,
                    world_size=world.world_size, gpu=torch.cuda.get_device_name(device) if cuda else None)


def run_measurement(spec:dict, nproc:int=1) -> dict:
    "`measure(spec)` in a fresh process (under torchrun with `nproc` > 1); None and a message if it failed."
    launcher = [sys.executable] + (['-m', 'torch.distributed.run', '--nproc_per_node', str(nproc)] if nproc > 1 else [])
    r = subprocess.run([*launcher, __file__, '--measure', json.dumps(spec)], capture_output=True, text=True)
    results = [json.loads(l[len('RESULT '):]) for l in r.stdout.splitlines() if l.startswith('RESULT ')]
    if r.returncode or not results:
        print(f"measurement {spec} failed:\n{(r.stdout + r.stderr)[-3000:]}", file=sys.stderr)
        return None
    return results[0]


# ------------------------------------------------------------------------------------------------------------- tables
def cpu_table(args) -> list:
    lines = ['| size | precision | seconds / iteration (median; fastest - slowest) | GFLOP / iteration | GFLOP/s | '
             'peak RSS, GB (before the model) |',
             '|---|---|---|---|---|---|']
    ratios = []
    for size in args.sizes:
        seconds, fastest = {}, {}
        for precision in args.precisions:
            print(f'measuring {size}x{size} {precision} ...', file=sys.stderr, flush=True)
            spec = dict(device='cpu', size=size, batch=1, precision=precision, ngf=args.ngf, ndf=args.ndf, warmup=1,
                        rounds=args.repeats, iterations=1, **{k: 'off' for k in PLAIN if k != 'precision'})
            r = run_measurement(spec)
            if r is None: lines.append(f'| {size} | {precision} | failed (see stderr) | | | |'); continue
            seconds[precision], fastest[precision] = r['seconds'], r['fastest']
            gflop = r['flops'] / 1e9
            lines.append(f"| {size}x{size} | {precision} | {r['seconds']:.2f} ({r['fastest']:.2f} - {r['slowest']:.2f}) | "
                         f"{gflop:,.{0 if gflop >= 10 else 2}f} | {gflop / r['seconds']:.1f} | {r['peak_bytes'] / 2**30:.2f} "
                         f"({r['before_model_bytes'] / 2**30:.2f}) |")
        if 'fp32' in seconds and 'bf16' in seconds:
            ratios.append(f"- {size}x{size}: bf16 is {seconds['fp32'] / seconds['bf16']:.2f}x as fast as fp32 (medians; "
                          f"{fastest['fp32'] / fastest['bf16']:.2f}x comparing the fastest iterations)")
    return lines + [''] + ratios


def gpu_tables(args) -> list:
    if args.device == 'cuda' and not torch.cuda.is_available():
        return ['Skipped: PyTorch sees no CUDA GPU here (torch.cuda.is_available() is False). Not measured: the '
                f'fast-path table at {args.gpu_size}x{args.gpu_size} with batch {" and ".join(map(str, args.batches))}, '
                'and DDP on 2 GPUs. Run this command on a machine with a GPU.']
    data = Path(tempfile.mkdtemp())/'toy'
    from cyclegan_nb.data import make_toy_dataset
    make_toy_dataset(data, n_photos=16, n_paintings=16, size=args.gpu_size)
    n_gpus = torch.cuda.device_count() if args.device == 'cuda' else 0
    lines = ['| setting | batch | seconds / iteration | images / s | speed-up | peak memory (GB) | TFLOP/s | % of peak |',
             '|---|---|---|---|---|---|---|---|']
    skipped = []
    for b in args.batches:
        plain = flops = None
        rows = SWITCH_ROWS + ([('all of the above, DDP on 2 GPUs', dict(SWITCH_ROWS[-2][1]))] if n_gpus >= 2 else [])
        for label, switches in rows:
            if args.device == 'cpu' and any(switches.get(k) == 'on' for k in ('cudnn_benchmark', 'torch_compile')):
                skipped.append(f'{label} (batch {b}): needs a GPU'); continue
            nproc = 2 if 'DDP' in label else 1
            compiling = switches.get('torch_compile') == 'on'
            print(f'measuring {label}, batch {b} ...', file=sys.stderr, flush=True)
            spec = dict(PLAIN, **switches, device=args.device, size=args.gpu_size, batch=b, ngf=args.ngf, ndf=args.ndf,
                        data=str(data), warmup=args.warmup + (20 if compiling else 0), rounds=args.rounds,
                        iterations=args.iterations)
            r = run_measurement(spec, nproc)
            if r is None: lines.append(f'| {label} | {b} | failed (see stderr) | | | | | |'); continue
            plain = plain or r['seconds']
            flops = flops or r['flops']
            images = b * r['world_size'] / r['seconds']
            tflops = flops * r['world_size'] / r['seconds'] / 1e12 if flops else None
            peak = gpu_peak(r['gpu'] or '', r['precision_used']) if r['gpu'] else None
            share = (f"{100 * tflops / (peak * r['world_size']):.0f} % of {peak:g} ({r['precision_used']})"
                     if peak and tflops else 'n/a')
            lines.append(f"| {label} | {b} | {r['seconds'] * 1e3:.1f} ms | {images:.1f} | "
                         f"{plain / r['seconds'] * r['world_size']:.2f}x | {r['peak_bytes'] / 2**30:.2f} | "
                         f"{f'{tflops:.2f}' if tflops else 'n/a'} | {share} |")
    if n_gpus < 2 and args.device == 'cuda': skipped.append('DDP on 2 GPUs: this machine has fewer than 2 GPUs')
    notes = ['', 'Speed-up: images per second relative to the plain step at the same batch size (DDP: both GPUs together).']
    return lines + notes + ([''] + [f'Skipped: {s}' for s in skipped] if skipped else [])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cpu', help='cpu (the default table) or cuda (the fast-path table)')
    p.add_argument('--sizes', type=int, nargs='+', default=[128, 256], help='CPU table: image sizes')
    p.add_argument('--precisions', nargs='+', default=['fp32', 'bf16'], help='CPU table: precisions')
    p.add_argument('--repeats', type=int, default=3, help='CPU table: timed iterations per row (the median is shown)')
    p.add_argument('--switches', action='store_true', help='run the fast-path table on --device (also on a CPU, as a check)')
    p.add_argument('--gpu_size', type=int, default=256, help='fast-path table: image size')
    p.add_argument('--batches', type=int, nargs='+', default=[1, 4], help='fast-path table: batch sizes per GPU')
    p.add_argument('--warmup', type=int, default=5, help='fast-path table: untimed iterations first')
    p.add_argument('--rounds', type=int, default=5, help='fast-path table: timed rounds (the median is shown)')
    p.add_argument('--iterations', type=int, default=10, help='fast-path table: iterations per timed round')
    p.add_argument('--ngf', type=int, default=64, help='generator width (64: the reference)')
    p.add_argument('--ndf', type=int, default=64, help='discriminator width (64: the reference)')
    p.add_argument('--out', help='also write the markdown to this file')
    p.add_argument('--measure', help=argparse.SUPPRESS)   # internal: one measurement, in a fresh process
    args = p.parse_args()
    if args.measure:
        result = measure(json.loads(args.measure))
        if int(os.environ.get('RANK', 0)) == 0: print('RESULT ' + json.dumps(result), flush=True)
        return
    started = time.time()
    lines = ['## Machine', '', *describe_machine(), '']
    if args.device == 'cuda' or args.switches:
        lines += [f'## Fast path, {args.gpu_size}x{args.gpu_size}, ResNet-9 + 70x70 PatchGAN', '', *gpu_tables(args)]
    else:
        lines += ['## One training iteration on the CPU, batch 1, ResNet-9 generators + 70x70 PatchGAN discriminators', '',
                  *cpu_table(args)]
    lines += ['', f'Measured in {time.time() - started:.0f} s; load average at the end: '
              + ', '.join(f'{x:.1f}' for x in os.getloadavg()) + '.']
    text = '\n'.join(lines)
    print(text)
    if args.out: Path(args.out).write_text(text + '\n')


if __name__ == '__main__':
    main()
