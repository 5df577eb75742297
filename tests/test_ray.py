"""``superres upscale --ray`` on a local Ray cluster of two nodes (one CPU each): the same outputs, lines, summary
and exit code as a local run; a worker process killed mid-run, and a node removed mid-run, still give every
output exactly once; a rerun skips what is done; an S3 round trip through the workers (moto's server).

One cluster (and one S3 server) for the module: starting them takes seconds. The node removal comes last."""

from __future__ import annotations

import functools
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

from superres.cli import main
from superres.infer.executors import ImageUnit, LocalExecutor, RayExecutor, image_engine
from superres.io import write_image

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")
# the workers cannot import this module: what it defines (PacedUnit) travels to them by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

MODEL = "realesr-animevideov3"
# Both nodes on 127.0.0.1 only. Ray on Linux asks the network for this machine's address (and its GCS would
# listen there) unless told, as on macOS, that the cluster is a local one.
NODE = {"num_cpus": 1, "object_store_memory": 80 << 20, "node_ip_address": "127.0.0.1"}


@pytest.fixture(scope="module")
def s3():
    """An S3 server on 127.0.0.1 (moto), its endpoint in the environment before the nodes start (workers read
    credentials and endpoints from their own environment); None without moto and s3fs."""
    try:
        import s3fs  # noqa: F401
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            mp.setenv(name, value)
        yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def cluster(s3, model_cache):
    """Two nodes of one CPU on this machine, this process connected to them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # for the nodes' processes; this one has read it:
        from ray._private import ray_constants

        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        yield from _cluster()


def _cluster():
    nodes = cluster_utils.Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    nodes.add_node(**NODE)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, logging_level="WARNING")
    yield nodes
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def photos_folder(tmp_path_factory, photos) -> Path:
    """Six 24x24 crops of real photos, a truncated PNG and a text file."""
    src = tmp_path_factory.mktemp("ray") / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(5):
        write_image(src / f"{i}.png", photos["chelsea"][i * 24:i * 24 + 24, :24])
    write_image(src / "sub" / "5.jpg", photos["astronaut"][:24, :24])
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (src / "notes.txt").write_text("not an image")
    return src


def test_one_worker_per_gpu_or_per_cpu_node():
    from superres.infer.executors import worker_slots

    cpu = {"NodeID": "a", "Alive": True, "Resources": {"CPU": 8.0}}
    gpu = {"NodeID": "b", "Alive": True, "Resources": {"CPU": 4.0, "GPU": 2.0}}
    dead = {"NodeID": "c", "Alive": False, "Resources": {"CPU": 8.0, "GPU": 8.0}}
    assert worker_slots([cpu, dead]) == [{"node": "a", "num_cpus": 8, "num_gpus": 0}]
    assert worker_slots([cpu, gpu, dead]) == [{"node": "b", "num_cpus": 1, "num_gpus": 1}] * 2  # GPUs only
    assert worker_slots([{**gpu, "Resources": {"CPU": 1.0, "GPU": 2.0}}]) == [{"node": "b", "num_cpus": 0,
                                                                                  "num_gpus": 1}] * 2


def upscale(capsys, *args) -> tuple[int, list[str]]:
    """`superres upscale ARGS` in this process: (exit code, stderr lines)."""
    capsys.readouterr()
    code = main(["upscale", *map(str, args), "-m", MODEL])
    return code, capsys.readouterr().err.splitlines()


def visible(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def test_a_folder_and_s3_on_ray_as_a_local_run_and_a_rerun_skips_them(cluster, s3, photos_folder, tmp_path, capsys):
    """Local and S3 inputs, bad ones among them, to an S3 output (or a local one without moto) through the
    workers: the same files, bytes, error lines, summary and exit code as a local run of the same inputs."""
    inputs: list = [photos_folder]
    output: str | Path = tmp_path / "ray"
    if s3 is not None:
        import fsspec

        fs = fsspec.filesystem("s3", endpoint_url=s3, skip_instance_cache=True)
        fs.mkdir("ray-in")
        fs.mkdir("ray-out")
        for f in sorted(photos_folder.glob("[0-1].png")):
            fs.put_file(str(f), f"ray-in/more/s{f.name}")
            (tmp_path / "more").mkdir(exist_ok=True)
            (tmp_path / "more" / f"s{f.name}").write_bytes(f.read_bytes())
        fs.pipe_file("ray-in/more/truncated.png", (photos_folder / "0.png").read_bytes()[:200])
        (tmp_path / "more" / "truncated.png").write_bytes((photos_folder / "0.png").read_bytes()[:200])
        inputs += ["s3://ray-in/more"]
        output = "s3://ray-out/x4"
    code, local = upscale(capsys, *inputs[:1], *([tmp_path / "more"] if s3 else []), "-r", "-o", tmp_path / "local")
    assert code == 1
    code, lines = upscale(capsys, *inputs, "-r", "-o", output, "--ray")
    assert code == 1, lines
    if s3 is not None:
        got = {f[len("ray-out/x4/"):]: fs.cat_file(f) for f in fs.find("ray-out/x4")}
        assert "s3://ray-in/more/s0.png -> s3://ray-out/x4/s0.png" in lines
    else:
        got = visible(tmp_path / "ray")
    assert got == visible(tmp_path / "local")  # byte-identical, the same names
    assert len(got) == 6 + 2 * bool(s3)
    errors = sorted(x.replace(str(tmp_path / "more"), "s3://ray-in/more") for x in lines + local
                    if x.startswith("superres: error:"))
    assert len(errors) == 2 + 2 * bool(s3) and errors[::2] == errors[1::2]  # each error line once in each run
    assert "broken.png: corrupt" in errors[0] and "Traceback" not in "\n".join(lines)
    assert lines[-1] == local[-1] == f"{6 + 2 * bool(s3)} done, 1 skipped, {1 + bool(s3)} failed"  # notes.txt
    assert any(x.startswith(f"{MODEL}: a worker on ") for x in lines)

    (photos_folder / "broken.png").rename(photos_folder / ".broken.png")  # hidden: no longer an input
    try:
        code, lines = upscale(capsys, photos_folder, "-r", "-o", output, "--ray")
    finally:
        (photos_folder / ".broken.png").rename(photos_folder / "broken.png")
    assert code == 0 and lines[-1] == "0 done, 7 skipped, 0 failed"  # no worker started


def test_a_video_through_ray_and_s3_gives_the_frames_of_one_job(cluster, s3, photos, tmp_path, capsys):
    """`superres video --ray` (the source and output on S3 when moto is here): each worker reads the source
    itself and sends its segments back; the frames, timestamps and sound equal a local one-job run's; the
    workers leave nothing in their temporary folder."""
    av = pytest.importorskip("av")
    from test_video import make_video

    from superres.infer.video import upscale_video

    src = make_video(tmp_path / "clip.mp4", photos["chelsea"], frames=30)
    options = {"model": "bicubic", "outscale": 2, "codec": "ffv1", "pix_fmt": "bgr0", "segment_frames": 8}
    upscale_video(src, tmp_path / "one.mkv", jobs=1, **options)
    source, output = str(src), tmp_path / "ray.mkv"
    if s3 is not None:
        import fsspec

        fs = fsspec.filesystem("s3", endpoint_url=s3, skip_instance_cache=True)
        fs.mkdir("video-in")
        fs.mkdir("video-out")
        fs.put_file(str(src), "video-in/clip.mp4")
        source, output = "s3://video-in/clip.mp4", "s3://video-out/clip_x2.mkv"
    import tempfile

    def kept() -> set[str]:  # what workers keep on their node (the nodes share this machine's temp folder)
        return {p.name for p in Path(tempfile.gettempdir()).glob("superres-*")}

    before = kept()
    code = main(["video", source, "-o", str(output), "--ray", cluster.address, "-m", "bicubic", "--outscale", "2",
                 "--codec", "ffv1", "--pix-fmt", "bgr0", "--segment-frames", "8", "-q"])
    assert code == 0, capsys.readouterr().err
    assert kept() <= before  # each worker's parts folder and copy of the source removed when the run ends
    if s3 is not None:
        fs.get_file("video-out/clip_x2.mkv", str(tmp_path / "ray.mkv"))

    def frames(path: Path) -> list:
        with av.open(str(path)) as c:
            return [(f.pts, f.to_ndarray(format="rgb24").tobytes()) for f in c.decode(c.streams.video[0])]

    def sound(path: Path) -> list:
        with av.open(str(path)) as c:
            return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]

    assert frames(tmp_path / "ray.mkv") == frames(tmp_path / "one.mkv") and len(frames(tmp_path / "one.mkv")) == 30
    assert sound(tmp_path / "ray.mkv") == sound(tmp_path / "one.mkv")


def test_ray_refuses_torchrun_and_an_input_taken_for_its_address(photos_folder, tmp_path, capsys, monkeypatch):
    assert main(["upscale", str(photos_folder / "0.png"), "--ray", str(photos_folder), "-o", str(tmp_path / "o")]) != 0
    assert "put --ray after the inputs" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["upscale", str(photos_folder), "-o", str(tmp_path / "o"), "--ray"]) != 0
    assert "--ray and torchrun" in capsys.readouterr().err


@dataclass(frozen=True)
class PacedUnit(ImageUnit):
    """An image unit whose network step takes at least ``pace`` seconds, so that a run of a few tiny images
    lasts long enough to lose a worker in the middle of it, whatever the machine's speed."""

    pace: float = 0.1

    def compute(self, engine, loaded):
        time.sleep(self.pace)
        return super().compute(engine, loaded)


def paced_units(photos, tmp_path: Path, count: int):
    """``count`` crops of a real photo, their paced units, and the outputs of a local run of the same units."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(count):
        write_image(src / f"{i:03d}.png", photos["chelsea"][i * 4:i * 4 + 24, i * 6:i * 6 + 24])
    make = functools.partial(image_engine, MODEL)
    local = [ImageUnit(f, tmp_path / "local" / f.name) for f in sorted(src.iterdir())]
    assert LocalExecutor(make).run(local, lambda u, t: None, lambda u, m: pytest.fail(m)) == (count, 0)
    units = [PacedUnit(f, tmp_path / "ray" / f.name) for f in sorted(src.iterdir())]
    return make, units, visible(tmp_path / "local")


def run_in_thread(executor, units) -> tuple[threading.Thread, dict]:
    state: dict = {"done": [], "failed": []}

    def run() -> None:
        state["result"] = executor.run(units, lambda u, t: state["done"].append(u.key),
                                       lambda u, m: state["failed"].append(m))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, state


def wait_for(condition, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_a_node_removed_and_a_worker_killed_mid_run_every_output_made_once(cluster, photos, tmp_path):
    """The other node is removed as soon as its worker has units (they go to the head node's worker), then the
    head node's worker process is killed (Ray restarts it there and retries its units): every output once,
    byte-identical to a local run."""
    make, units, expected = paced_units(photos, tmp_path, 20)
    workers: queue.Queue = queue.Queue()
    lost: list[str] = []
    thread, state = run_in_thread(RayExecutor(make, "auto", on_worker=workers.put, on_warning=lost.append), units)
    head = ray.get_runtime_context().get_node_id()
    ready: dict[bool, object] = {}
    while False not in ready:
        worker = workers.get(timeout=120)  # (a worker process imports torch: slow on a busy machine)
        ready[worker.node == head] = worker
    (node,) = cluster.worker_nodes
    cluster.remove_node(node)  # the driver sees it within a poll and moves the node's units
    wait_for(lambda: lost)
    victim = ready[True] if True in ready else workers.get(timeout=120)
    done_at_kill = len(state["done"])
    os.kill(victim.pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive() and state["result"] == (20, 0), state
    assert done_at_kill < 20 and sorted(state["done"]) == sorted(u.key for u in units)  # each once
    assert visible(tmp_path / "ray") == expected
    assert len(lost) == 1 and "its node died" in lost[0] and "go to the other workers" in lost[0], lost
    assert not state["failed"]


class _Ref:
    """A fake ObjectRef: ready once ``outcome`` is set, a value or an exception that ``get`` raises."""

    def __init__(self, owner: str, outcome=None):
        self.owner, self.outcome = owner, outcome


class _FakeRay:
    """Just what RayExecutor._schedule uses of ``ray``: node "b"'s worker runs nothing; once it holds
    ``batch`` units its node dies, and all of its calls fail in the same ``wait``; node "a"'s worker does
    every unit it gets."""

    exceptions = ray.exceptions

    def __init__(self, batch: int):
        self.batch, self.alive, self.refs = batch, {"a": True, "b": True}, []

    def actor(self, node: str):
        from types import SimpleNamespace

        from superres.infer.executors import WorkerInfo

        def call(outcome_of):
            def remote(*args):
                self.refs.append(ref := _Ref(node, outcome_of(*args)))
                return ref
            return SimpleNamespace(remote=remote)

        info = WorkerInfo("127.0.0.1", node, 1, "1 CPUs")
        return SimpleNamespace(ready=call(lambda: (None, info)),
                               run=call(lambda unit: (True, unit.key) if node == "a" else None))

    def wait(self, refs, num_returns, timeout):
        held = [r for r in self.refs if r.owner == "b" and r.outcome is None]
        if self.alive["b"] and len(held) >= self.batch:
            self.alive["b"] = False
            for r in held:
                r.outcome = ray.exceptions.RayActorError()
        ready = [r for r in refs if r.outcome is not None][:num_returns]
        return ready, [r for r in refs if r not in ready]

    def get(self, ref):
        if isinstance(ref.outcome, BaseException):
            raise ref.outcome
        return ref.outcome

    def nodes(self):
        return [{"NodeID": n, "Alive": alive} for n, alive in self.alive.items()]

    def kill(self, actor, no_restart=False):
        pass


def test_a_worker_lost_with_several_units_in_one_wait_gives_each_unit_once():
    """All the calls of a lost worker come back failed in the same ``ray.wait``: the first one moves all its
    units to the other worker, and the others are then skipped (they used to stop the run with StopIteration)."""
    from superres.infer.executors import _Slot

    fake = _FakeRay(batch=3)
    units = [SimpleUnit(f"{i}.png") for i in range(8)]
    done, failed, warned = [], [], []
    executor = RayExecutor(lambda: None, poll=0, on_warning=warned.append)
    slots = [_Slot(fake.actor("b"), "b"), _Slot(fake.actor("a"), "a")]
    result = executor._schedule(fake, slots, deque(units), lambda u, v: done.append(v),
                                lambda u, m: failed.append(m))
    assert result == (8, 0) and sorted(done) == sorted(u.key for u in units) and not failed
    assert len(warned) == 1 and "its 3 unit(s) go to the other workers" in warned[0], warned


@dataclass(frozen=True)
class SimpleUnit:
    key: str
