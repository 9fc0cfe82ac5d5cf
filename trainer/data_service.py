"""Data-service stage: run a tf.data service dispatcher and/or worker until SIGTERM.

When one machine's CPUs cannot decode, augment and label images as fast as its GPU trains
on them, tf.data service (`tf.data.experimental.service`) runs that input pipeline on other
machines: training (`run --data-service grpc://HOST:PORT`) sends its dataset graph to the
dispatcher, whose workers run it and stream the batches back. The workers read the
TFRecords themselves, so they need RESULT_DIR's data/ at the same path (on Vertex AI every
pool mounts /gcs/). On Vertex AI the role comes from CLUSTER_SPEC (trainer/hardware.py's
`data_service_role`): replica 0 of the data-service pool runs the dispatcher and a worker,
the others a worker each.
"""
import os
import signal
import threading

from trainer import console
from trainer.errors import UserError
from trainer.hardware import DATA_SERVICE_POOL, DataServiceRole, data_service_role, host_port


def serve(role, stop):
    """Start ROLE's servers and block until STOP (a threading.Event) is set."""
    import tensorflow as tf

    service = tf.data.experimental.service
    servers, dispatcher_address = [], role.dispatcher_address
    if role.dispatcher:
        servers.append(service.DispatchServer(service.DispatcherConfig(port=role.port)))
        dispatcher_address = servers[-1].target.removeprefix("grpc://")
        console.say(f"data-service: dispatcher at {dispatcher_address}")
    if role.worker:
        servers.append(service.WorkerServer(service.WorkerConfig(
            dispatcher_address=dispatcher_address, worker_address=f"{role.host}:%port%", port=role.worker_port)))
        port = servers[-1]._address.rpartition(":")[2]  # the port bound (WorkerServer has no public accessor)
        console.say(f"data-service: worker at {role.host}:{port}, registered with the dispatcher at "
                    f"{dispatcher_address}")
    stop.wait()
    console.say("data-service: stopped")


def role_from_args(args, env):
    """The DataServiceRole the command line asks for, else CLUSTER_SPEC's (trainer/hardware.py)."""
    if args.dispatcher_address and (args.dispatcher or not args.worker):
        raise UserError("data-service --dispatcher-address is where a --worker registers with a dispatcher "
                        "elsewhere: give --worker, without --dispatcher")
    if not (args.dispatcher or args.worker):
        return data_service_role(env)
    if args.worker and not (args.dispatcher or args.dispatcher_address):
        raise UserError("data-service --worker needs --dispatcher-address HOST:PORT (the dispatcher's), "
                        "or --dispatcher to run both in this process")
    if args.dispatcher:
        return DataServiceRole(dispatcher=True, worker=args.worker, port=args.port, host=args.host)
    host, port = host_port(args.dispatcher_address.removeprefix("grpc://"), "--dispatcher-address")
    return DataServiceRole(dispatcher=False, worker=True, dispatcher_address=f"{host}:{port}",
                           worker_port=args.port, host=args.host)


def add_arguments(parser):
    parser.description = (
        "Run a tf.data service dispatcher and/or worker until SIGTERM, so training's input pipeline (decode, "
        "augment, anchor labels) runs on these CPUs: train with `run --data-service grpc://DISPATCHER:PORT` "
        "(DATA_SERVICE= for start.sh). The workers read the TFRecords at training's paths. Without --dispatcher "
        f"or --worker the role comes from Vertex AI's CLUSTER_SPEC: replica 0 of {DATA_SERVICE_POOL} runs the "
        "dispatcher (on its address's port) and a worker (on the next), the others a worker each.")
    parser.add_argument("--dispatcher", action="store_true", help="run the dispatcher (on --port)")
    parser.add_argument("--worker", action="store_true",
                        help="run a worker (on --port, or any free port beside --dispatcher)")
    parser.add_argument("--dispatcher-address", metavar="HOST:PORT",
                        help="the dispatcher a --worker registers with (without --dispatcher)")
    parser.add_argument("--port", type=int, default=0,
                        help="the dispatcher's port with --dispatcher, else the worker's (default 0: any free port)")
    parser.add_argument("--host", default="localhost",
                        help="the host name training reaches this worker at (default localhost)")


def main(args):
    role = role_from_args(args, os.environ)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    serve(role, stop)
    return 0
