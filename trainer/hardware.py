"""What this job trains on: the Hardware found (CPU, GPUs, workers, TPU) and the cluster it belongs to.

Hardware detection is a pure function of environment variables and the visible GPU
count, so tests cover CPU, GPU, multi-worker and TPU without the hardware.
TRAINER_SIMULATE_GPUS=N plans for N GPUs and TRAINER_SIMULATE_TPU=1 for a TPU; train
then runs that plan on this machine's CPU (see trainer/train.py). The tables below are
what each kind of hardware trains with.
"""
import json
import os
from dataclasses import dataclass

from trainer.errors import UserError

# Steps per Orbit loop: one progress line, summary and SIGTERM check each. Short on
# CPU (seconds a step), long on accelerators (host round trips cost).
STEPS_PER_LOOP = {"cpu": 10, "gpu": 50, "tpu": 100}
PRECISION = {"cpu": "float32", "gpu": "float16", "tpu": "bfloat16"}
TPU_EVAL_BATCH = 8  # TPUs need whole batches; 8 splits over 8 cores or 4 chips
# Vertex AI's CLUSTER_SPEC names worker pools; TF_CONFIG names their roles.
WORKER_POOL_ROLES = {"workerpool0": "chief", "workerpool1": "worker", "workerpool2": "ps", "workerpool3": "evaluator"}
TRAINING_ROLES = ("chief", "worker")
# The tf.data service's machines (trainer/data_service.py): Vertex AI's TF_CONFIG names this pool "ps", but it
# trains nothing, so training replicas leave it out of the TF_CONFIG their strategy reads (training_tf_config).
DATA_SERVICE_POOL = "workerpool2"
DATA_SERVICE_ROLE = WORKER_POOL_ROLES[DATA_SERVICE_POOL]
DATA_SERVICE_WORKER_PORT_OFFSET = 1  # replica 0 runs the dispatcher on its address's port and a worker on the next
# Plan and train as on N GPUs (N logical CPU devices) or on a TPU (its batch and precision
# on one CPU device): for tests, and to try an accelerator's plan on a laptop.
SIMULATE_GPUS_ENV = "TRAINER_SIMULATE_GPUS"
SIMULATE_TPU_ENV = "TRAINER_SIMULATE_TPU"
SIMULATION_HELP = (f"{SIMULATE_GPUS_ENV}=N: plan and train as on N GPUs (mirrored over N logical CPU devices, "
                   f"mixed_float16, the per-GPU batch); {SIMULATE_TPU_ENV}=1: the TPU plan (its batch, "
                   f"mixed_bfloat16) on one CPU device. For tests and laptops.")


@dataclass(frozen=True)
class Hardware:
    """What this job trains on: `kind` cpu, gpu or tpu; GPUs per worker; workers; TPU address.

    `simulated`: the plan is for this hardware, but it runs on the CPU (SIMULATE_*_ENV).
    """

    kind: str
    num_gpus: int = 0
    num_workers: int = 1
    tpu: str = ""
    simulated: bool = False

    @property
    def strategy(self):
        if self.kind == "tpu":
            return "one_device" if self.simulated else "tpu"
        if self.num_workers > 1:
            return "multi_worker_mirrored"
        return "mirrored" if self.num_gpus else "one_device"

    @property
    def replicas(self):
        """Devices a batch is split over (a TPU's cores are counted by its batch size instead)."""
        return 1 if self.kind == "tpu" else max(self.num_gpus, 1) * self.num_workers

    def describe(self):
        if self.kind == "tpu":
            return "TPU plan simulated on the CPU" if self.simulated else f"TPU {self.tpu}"
        devices = f"{self.num_gpus} GPU(s)" if self.num_gpus else "CPU"
        if self.simulated:
            devices += " simulated by logical CPU devices"
        return f"{devices} x {self.num_workers} workers" if self.num_workers > 1 else devices


def tf_config_from_env(env):
    """TF_CONFIG as a dict: TF_CONFIG itself, else converted from Vertex AI's CLUSTER_SPEC, else {}."""
    if env.get("TF_CONFIG"):
        return _cluster_json(env, "TF_CONFIG", lambda config: config)
    if not env.get("CLUSTER_SPEC"):
        return {}
    return _cluster_json(env, "CLUSTER_SPEC", _from_cluster_spec)


def training_tf_config(env):
    """TF_CONFIG for this job's training strategy: tf_config_from_env without the data-service pool."""
    config = tf_config_from_env(env)
    if DATA_SERVICE_ROLE not in config.get("cluster", {}):
        return config
    return {**config, "cluster": {role: hosts for role, hosts in config["cluster"].items() if role != DATA_SERVICE_ROLE}}


@dataclass(frozen=True)
class DataServiceRole:
    """What one data-service process serves: a dispatcher on `port`, and/or a worker on `worker_port` that
    registers with `dispatcher_address` (default: the dispatcher beside it) as `host`:PORT, the address
    training replicas reach it at. Port 0: any free port."""

    dispatcher: bool
    worker: bool
    port: int = 0
    dispatcher_address: str = ""
    worker_port: int = 0
    host: str = "localhost"


def data_service_role(env):
    """The DataServiceRole of this replica of Vertex AI's data-service pool (CLUSTER_SPEC's DATA_SERVICE_POOL).

    Replica 0 runs the dispatcher on its address's port and a worker beside it; the others run a worker each,
    pointing at replica 0. Anything else (no CLUSTER_SPEC, another pool) is a UserError.
    """
    if not env.get("CLUSTER_SPEC"):
        raise UserError("data-service: give --dispatcher and/or --worker, or run it in Vertex AI's "
                        f"{DATA_SERVICE_POOL} (where CLUSTER_SPEC names the role)")
    spec = _cluster_json(env, "CLUSTER_SPEC", lambda spec: spec)
    task = spec.get("task") or {}
    pool, index = task.get("type"), task.get("index", 0)
    hosts = spec.get("cluster", {}).get(DATA_SERVICE_POOL) or []
    if pool != DATA_SERVICE_POOL or not 0 <= index < len(hosts):
        raise UserError(f"data-service runs in Vertex AI's {DATA_SERVICE_POOL}, but CLUSTER_SPEC puts this replica "
                        f"in {pool} (index {index}) with {len(hosts)} {DATA_SERVICE_POOL} replica(s)")
    host, port = host_port(hosts[index], "CLUSTER_SPEC")
    if index == 0:
        return DataServiceRole(dispatcher=True, worker=True, port=port,
                               worker_port=port + DATA_SERVICE_WORKER_PORT_OFFSET, host=host)
    return DataServiceRole(dispatcher=False, worker=True, dispatcher_address=hosts[0],
                           worker_port=port + DATA_SERVICE_WORKER_PORT_OFFSET, host=host)


def data_service_address(env):
    """grpc://HOST:PORT of the job's data-service dispatcher (replica 0 of CLUSTER_SPEC's data-service pool),
    or None when CLUSTER_SPEC has no such pool."""
    if not env.get("CLUSTER_SPEC"):
        return None
    hosts = _cluster_json(env, "CLUSTER_SPEC", lambda spec: spec).get("cluster", {}).get(DATA_SERVICE_POOL)
    return f"grpc://{hosts[0]}" if hosts else None


def host_port(address, source):
    """(HOST, PORT) of ADDRESS, HOST:PORT; a UserError naming SOURCE when it is not one."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"{source}: {address!r} is not HOST:PORT")
    return host, int(port)


def _cluster_json(env, name, convert):
    """CONVERT(json of env[NAME]), any malformation one UserError naming the variable."""
    try:
        config = convert(json.loads(env[name]))
        task = config.get("task") or {}
        if not isinstance(config.get("cluster", {}), dict) or not isinstance(task.get("type", ""), str):
            raise TypeError("cluster must be an object and task.type a string")
        return config
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise UserError(f"{name} is not a valid cluster description ({type(err).__name__}: {err}): "
                        f"{env[name][:200]!r}") from None


def _from_cluster_spec(spec):
    cluster = {WORKER_POOL_ROLES[pool]: hosts for pool, hosts in spec["cluster"].items() if hosts}
    task = spec.get("task", {})
    return {
        "cluster": cluster,
        "task": {"type": WORKER_POOL_ROLES[task.get("type", "workerpool0")], "index": task.get("index", 0)},
    }


def detect_hardware(env, gpus):
    """The Hardware for environment ENV (a mapping like os.environ) with GPUS visible GPUs.

    TPU: TPU_NAME (its address), or TPU_ACCELERATOR_TYPE as set on TPU VMs ("local").
    Several workers: TF_CONFIG or Vertex AI's CLUSTER_SPEC listing more than one
    chief/worker. Otherwise GPUs when any are visible, else the CPU. The simulation
    switches (TRAINER_SIMULATE_TPU=1, TRAINER_SIMULATE_GPUS=N) override what is visible.
    """
    if env.get(SIMULATE_TPU_ENV, "0") not in ("", "0"):
        return Hardware("tpu", simulated=True)
    tpu = env.get("TPU_NAME") or ("local" if env.get("TPU_ACCELERATOR_TYPE") else "")
    if tpu:
        return Hardware("tpu", tpu=tpu)
    simulated = _simulated_gpus(env)
    cluster = tf_config_from_env(env).get("cluster", {})
    workers = max(1, sum(len(cluster.get(role, [])) for role in TRAINING_ROLES))
    if simulated:
        if workers > 1:
            raise UserError(f"{SIMULATE_GPUS_ENV} simulates one machine's GPUs; it cannot be combined with workers")
        return Hardware("gpu", num_gpus=simulated, simulated=True)
    return Hardware("gpu" if gpus else "cpu", num_gpus=gpus, num_workers=workers)


def _simulated_gpus(env):
    value = env.get(SIMULATE_GPUS_ENV, "")
    if value in ("", "0"):
        return 0
    if not value.isdigit():
        raise UserError(f"{SIMULATE_GPUS_ENV} must be a number of GPUs, not {value!r}")
    return int(value)


def is_chief(env):
    """True unless TF_CONFIG / CLUSTER_SPEC names this replica a non-chief worker."""
    tf_config = tf_config_from_env(env)
    task = tf_config.get("task", {})
    if "chief" not in tf_config.get("cluster", {}):  # no chief pool: worker 0 leads
        return task.get("type", "worker") == "worker" and task.get("index", 0) == 0
    return task.get("type") == "chief"


def available_memory():
    """Bytes of memory this machine can give without swapping: /proc/meminfo's MemAvailable, else all of it."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def this_machine():
    """The Hardware of this process: its environment and the GPUs TensorFlow sees."""
    import tensorflow as tf

    return detect_hardware(os.environ, len(tf.config.list_physical_devices("GPU")))
