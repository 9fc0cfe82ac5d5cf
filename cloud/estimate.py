"""The dry run's estimate of a job's training time and cost, from its filled spec and two tables in configs/jobs/.

The job trains on steps x batch images, the batch being the one the trainer's config stage
picks for the spec's hardware. They go no faster than the slower of two rates: what the
machines that run the input pipeline feed (vCPUs x 1000 / its CPU ms per image: the training
machines', or the tf.data service pool's when the spec has one,
measured by benchmarks/input_pipeline.py) and what their devices train, both from
throughput.yaml. Without a device figure the input pipeline's rate bounds the time from
below only, and the estimate says so rather than guess. The cost is that time at
prices.yaml's hourly rates, over every replica of every pool.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import yaml

from trainer.catalogue import DEFAULT_MODELS, load_model
from trainer.config import MIN_DEFAULT_STEPS, reference_batch
from trainer.hardware import DATA_SERVICE_POOL, TRAINING_ROLES, WORKER_POOL_ROLES, Hardware

REPO = Path(__file__).resolve().parent.parent
JOBS_DIR = REPO / "configs" / "jobs"
THROUGHPUT = JOBS_DIR / "throughput.yaml"
PRICES = JOBS_DIR / "prices.yaml"
PER_STEPS = 1000  # a job without a step count is estimated per this many steps
TPU_MACHINES = ("ct", "cloud-tpu")  # how Cloud TPU machine types start: ct5lp-hightpu-4t, cloud-tpu (v2, v3)


@dataclass(frozen=True)
class Estimate:
    """What the tables say of one job; None (or a non-empty tuple of names) where they lack a figure.

    model_given: False when the spec sets no MODEL and the localization default was taken.
    steps: the spec's STEPS; None: the trainer's default, `epochs` passes, counted from the bucket.
    vcpus: of the replicas that run the input pipeline together (the training replicas, or those of the
        data-service pool when there is one); None when a machine type is not in throughput.yaml
        (`unknown_machines`).
    device: what the chief trains on: its acceleratorType, else its machineType.
    device_images_per_s: of every training device together; None: not measured.
    usd_per_hour: of every replica of every pool; None when a price is null (`unpriced`).
    prices: where the prices hold and when they were read.
    """
    model: str
    model_given: bool
    steps: Optional[int]
    epochs: float
    batch_size: int
    vcpus: Optional[int]
    unknown_machines: Tuple[str, ...]
    cpu_ms_per_image: Optional[float]
    device: str
    device_images_per_s: Optional[float]
    usd_per_hour: Optional[float]
    unpriced: Tuple[str, ...]
    prices: str

    @property
    def images(self):
        return (self.steps or PER_STEPS) * self.batch_size


def estimate_job(spec):
    """The Estimate for SPEC, a filled CustomJobSpec dict, from THROUGHPUT and PRICES.

    The model and steps are the job's own: the chief's MODEL variable and its first argument
    (start.sh's STEPS), as --model, --steps or the spec's defaults filled them.
    """
    throughput = yaml.safe_load(THROUGHPUT.read_text())
    prices = yaml.safe_load(PRICES.read_text())
    pools = [(index, pool) for index, pool in enumerate(spec["workerPoolSpecs"]) if pool.get("machineSpec")]
    training = [pool for index, pool in pools if WORKER_POOL_ROLES[f"workerpool{index}"] in TRAINING_ROLES]
    container = training[0].get("containerSpec", {})
    model = {variable["name"]: variable["value"] for variable in container.get("env", [])}.get("MODEL")
    args = container.get("args", [])
    entry = load_model(model or DEFAULT_MODELS["detection"])
    measured = throughput["models"].get(entry.name, {})
    feeding = [pool for index, pool in pools if f"workerpool{index}" == DATA_SERVICE_POOL] or training
    vcpus = [throughput["machine_vcpus"].get(_machine_type(pool)) for pool in feeding]
    unknown = tuple(dict.fromkeys(_machine_type(pool) for pool, count in zip(feeding, vcpus) if count is None))
    device_rates = [measured.get("device_images_per_s", {}).get(_device(pool)) for pool in training]
    usd_per_hour, unpriced = _price([pool for _, pool in pools], prices)
    return Estimate(
        model=entry.name,
        model_given=bool(model),
        steps=int(args[0]) if args and args[0].isdigit() else None,
        epochs=entry.epochs,
        batch_size=reference_batch(entry, _hardware(training[0], workers=sum(map(_replicas, training)))),
        vcpus=None if unknown else sum(count * _replicas(pool) for pool, count in zip(feeding, vcpus)),
        unknown_machines=unknown,
        cpu_ms_per_image=measured.get("cpu_ms_per_image"),
        device=_device(training[0]),
        device_images_per_s=None if None in device_rates else sum(
            rate * _device_count(pool) * _replicas(pool) for pool, rate in zip(training, device_rates)),
        usd_per_hour=usd_per_hour,
        unpriced=unpriced,
        prices=f"{prices['region']} prices read {prices['date']}")


def estimate_lines(estimate):
    """ESTIMATE as lines for stderr, each beginning `estimate: `."""
    default = "" if estimate.model_given else (
        f" (no MODEL: the trainer's default for a localization bucket; a classification bucket trains "
        f"{DEFAULT_MODELS['classification']})")
    lines = [f"{estimate.model}{default}, global batch {estimate.batch_size}"]
    if estimate.cpu_ms_per_image is None:
        lines.append(f"no training input pipeline figure was measured for {estimate.model} "
                     f"({_shown(THROUGHPUT)}): no time or cost estimate")
    elif estimate.vcpus is None:
        lines.append(f"no vCPU count for {', '.join(estimate.unknown_machines)} in {_shown(THROUGHPUT)}: "
                     f"no time or cost estimate")
    else:
        lines += _time_and_cost(estimate)
    if estimate.steps is None:
        lines.append(f"no --steps: the trainer's default is {estimate.epochs:g} passes over the training images "
                     f"(at least {MIN_DEFAULT_STEPS} steps), which a dry run cannot count without reading the bucket")
    return [f"estimate: {line}" for line in lines]


def _time_and_cost(estimate):
    input_rate = estimate.vcpus * 1000 / estimate.cpu_ms_per_image
    device_rate = estimate.device_images_per_s
    measured = "not measured" if device_rate is None else f"{device_rate:,.1f} images/s"
    rates = (f"input pipeline {estimate.vcpus} vCPUs x 1000 / {estimate.cpu_ms_per_image:g} ms per image = "
             f"{input_rate:,.1f} images/s; {estimate.device}: {measured}")
    if device_rate is None:
        seconds, at_least = estimate.images / input_rate, "at least "
        time = f"input-bound lower limit: at least {_duration(seconds)}"
    else:
        seconds, at_least = estimate.images / min(input_rate, device_rate), ""
        time = f"{_duration(seconds)}, bound: {'input pipeline' if input_rate <= device_rate else estimate.device}"
    if estimate.usd_per_hour is None:
        cost = f"price not in {_shown(PRICES)}: {', '.join(estimate.unpriced)}"
    else:
        cost = f"{at_least}${math.floor(seconds / 3600 * estimate.usd_per_hour * 100) / 100:,.2f} ({estimate.prices})"
    steps = f"{estimate.steps:,} steps" if estimate.steps else f"per {PER_STEPS:,} steps"
    return [rates, f"{steps} ({estimate.images:,} images): {time}; {cost}"]


def _duration(seconds):
    """SECONDS rounded down, so that a lower limit stays one: '48 s', '5 min', '2 h 5 min'."""
    minutes = int(seconds // 60)
    if not minutes:
        return f"{int(seconds)} s"
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def _price(pools, prices):
    """(USD per hour of every replica of POOLS or None, the machine and accelerator types prices has no figure for)."""
    total, unpriced = 0.0, []
    for pool in pools:
        machine = pool["machineSpec"]
        items = [(prices["machines"], machine["machineType"], 1)]
        if machine.get("acceleratorType"):
            items.append((prices["accelerators"], machine["acceleratorType"], _device_count(pool)))
        for table, name, count in items:
            if table.get(name) is None:
                unpriced.append(name)
            else:
                total += table[name] * count * _replicas(pool)
    return (None if unpriced else total), tuple(dict.fromkeys(unpriced))


def _hardware(pool, workers):
    """The trainer's Hardware on WORKERS machines like POOL's, as trainer/hardware.py would find it there."""
    if _machine_type(pool).startswith(TPU_MACHINES):
        return Hardware("tpu")
    gpus = _device_count(pool) if _device(pool).startswith("NVIDIA_") else 0
    return Hardware("gpu" if gpus else "cpu", num_gpus=gpus, num_workers=workers)


def _machine_type(pool):
    return pool["machineSpec"]["machineType"]


def _device(pool):
    return pool["machineSpec"].get("acceleratorType") or _machine_type(pool)


def _device_count(pool):
    """Devices per replica: its accelerators, or the machine itself when it has none."""
    return int(pool["machineSpec"].get("acceleratorCount", 1)) if pool["machineSpec"].get("acceleratorType") else 1


def _replicas(pool):
    return int(pool.get("replicaCount", 1))


def _shown(path):
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path
