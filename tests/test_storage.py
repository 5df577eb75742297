"""Paths and fsspec URLs through one interface (superres.io.storage): names, listings, atomic writes, staged
inputs and outputs, S3 endpoints from the standard variables; and `superres upscale` with S3 inputs and outputs
against a local S3 server (moto's, on 127.0.0.1), as a local run makes them."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from superres.cli import main
from superres.errors import SuperresError
from superres.io import storage, write_image

MODEL = "realesr-animevideov3"


def test_names_of_paths_and_urls(tmp_path):
    assert storage.is_url("s3://b/k") and storage.is_url("gs://b/") and not storage.is_url("file:///tmp/x")
    assert not storage.is_url("C:\\photos") and not storage.is_url(tmp_path) and not storage.is_url("a://")
    assert storage.location("s3://b/in/") == "s3://b/in/" and storage.location("file:///tmp/x") == Path("/tmp/x")
    assert storage.join("s3://b/out/", "sub/a.png") == "s3://b/out/sub/a.png"
    assert storage.join("s3://b/out", PurePosixPath("a.png")) == "s3://b/out/a.png"
    assert storage.join(tmp_path, "sub/a.png") == tmp_path / "sub" / "a.png"
    assert storage.name("s3://b/in/a.png") == "a.png" and storage.parent("s3://b/in/a.png") == "s3://b/in"
    assert storage.parent("s3://b") == "s3://b" and storage.parent(tmp_path / "a.png") == tmp_path
    assert storage.key("S3://b//in/a.png") == storage.key("s3://b/in/a.png") == "s3://b/in/a.png"
    assert storage.relative("s3://b/in/sub/a.png", "s3://b/in/") == PurePosixPath("sub/a.png")
    assert storage.relative(tmp_path / "x" / "a.png", tmp_path) == PurePosixPath("x/a.png")


def test_s3_endpoint_from_the_standard_variables(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    assert storage._endpoint("s3", {}) == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:9000")
    assert storage._endpoint("s3", {}) == {"endpoint_url": "http://general:9000"}
    assert storage._endpoint("gs", {}) == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:9000")  # the service's own variable wins
    assert storage._endpoint("s3", {}) == {"endpoint_url": "http://s3-only:9000"}
    assert storage._endpoint("s3", {"s3": {"endpoint_url": "http://fsspec:1"}}) == {}  # fsspec's config wins
    assert storage._endpoint("s3", {"s3": {"client_kwargs": {"endpoint_url": "http://fsspec:1"}}}) == {}
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert storage._endpoint("s3", {}) == {}


def test_fsspec_reads_its_s3_endpoint_variable():
    """FSSPEC_S3_ENDPOINT_URL becomes the s3 file systems' endpoint_url, as fsspec reads it at import."""
    fsspec = pytest.importorskip("fsspec")
    conf: dict = {}
    fsspec.config.set_conf_env(conf, {"FSSPEC_S3_ENDPOINT_URL": "http://minio:9000"})
    assert conf == {"s3": {"endpoint_url": "http://minio:9000"}}


@pytest.fixture
def memory():
    """fsspec's in-memory file system: URLs without a server."""
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    yield "memory://superres-test"
    if fs.exists("/superres-test"):
        fs.rm("/superres-test", recursive=True)


def test_urls_list_read_and_write_atomically(memory, tmp_path):
    storage.write_bytes_atomic(f"{memory}/in/b.png", b"b")
    storage.write_bytes_atomic(f"{memory}/in/a.PNG", b"a")
    storage.write_bytes_atomic(f"{memory}/in/.hidden.png", b"h")
    storage.write_bytes_atomic(f"{memory}/in/notes.txt", b"t")
    storage.write_bytes_atomic(f"{memory}/in/sub/c.png", b"c")
    assert storage.list_files(f"{memory}/in", exts={".png"}) == [f"{memory}/in/a.PNG", f"{memory}/in/b.png"]
    assert storage.list_files(f"{memory}/in/", recursive=True) == [
        f"{memory}/in/a.PNG", f"{memory}/in/b.png", f"{memory}/in/notes.txt", f"{memory}/in/sub/c.png"]
    assert storage.isdir(f"{memory}/in") and storage.isfile(f"{memory}/in/b.png") and storage.exists(f"{memory}/in")
    with pytest.raises(SuperresError, match="no such folder"):
        storage.list_files(f"{memory}/missing")
    with pytest.raises(SuperresError, match="not a folder"):
        storage.list_files(f"{memory}/in/b.png")
    wanted = [f"{memory}/in/b.png", f"{memory}/in/z.png", f"{memory}/nowhere/a.png", tmp_path]
    assert storage.existing(wanted) == {f"{memory}/in/b.png", tmp_path}
    assert storage.read_bytes(f"{memory}/in/sub/c.png") == b"c"
    with storage.open_input(f"{memory}/in/a.PNG") as f:
        assert f.read() == b"a"
    with storage.local_copy(f"{memory}/in/b.png") as copy:
        assert copy.name == "b.png" and copy.read_bytes() == b"b"
    assert not copy.exists()
    with pytest.raises(SuperresError, match=r"z\.png: no such file"):
        storage.read_bytes(f"{memory}/in/z.png")

    with storage.staged_output(f"{memory}/out/v.mp4") as staged:
        staged.write_bytes(b"video")
        assert not storage.exists(f"{memory}/out/v.mp4")  # nothing at the URL until the block ends
    assert storage.read_bytes(f"{memory}/out/v.mp4") == b"video" and not staged.exists()
    with pytest.raises(RuntimeError), storage.staged_output(f"{memory}/out/w.mp4") as staged:
        staged.write_bytes(b"half")
        raise RuntimeError("the encoder failed")
    assert not storage.exists(f"{memory}/out/w.mp4") and not staged.exists()
    (tmp_path / "done.bin").write_bytes(b"done")
    storage.atomic_put(tmp_path / "done.bin", f"{memory}/out/done.bin")
    assert storage.read_bytes(f"{memory}/out/done.bin") == b"done"


def test_local_paths_through_the_same_interface(tmp_path):
    storage.makedirs(tmp_path / "out" / "sub")
    storage.write_bytes_atomic(tmp_path / "out" / "sub" / "a.bin", b"a")
    with storage.staged_output(tmp_path / "out" / "v.mp4") as staged:
        assert staged.parent == tmp_path / "out"  # beside the target: published by a rename, not a copy
        staged.write_bytes(b"video")
    (tmp_path / "src.bin").write_bytes(b"src")
    storage.atomic_put(tmp_path / "src.bin", tmp_path / "out" / "put.bin")
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["a.bin", "put.bin", "sub", "v.mp4"]
    assert storage.list_files(tmp_path / "out", recursive=True) == [
        tmp_path / "out" / "put.bin", tmp_path / "out" / "sub" / "a.bin", tmp_path / "out" / "v.mp4"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SuperresError, match="cannot create the output folder"):
        storage.makedirs(tmp_path / "afile" / "out")


def test_a_url_without_its_file_system_says_what_to_install():
    pytest.importorskip("fsspec")
    with pytest.raises(SuperresError, match="nosuchscheme://b/x"):
        storage.exists("nosuchscheme://b/x")


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1, found through AWS_ENDPOINT_URL as a user's MinIO would be."""
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            mp.setenv(name, value)
        import fsspec

        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("sr-in")
        fs.mkdir("sr-out")
        yield fs
    server.stop()


def upscale(capsys, *args) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["upscale", *map(str, args), "-m", MODEL])
    return code, capsys.readouterr().err.splitlines()


def test_s3_folders_and_a_single_file_as_local_runs(s3, tmp_path, photos, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    write_image(src / "a.png", photos["chelsea"][:24, :24])
    write_image(src / "sub" / "b.jpg", photos["astronaut"][:24, :24])
    (src / "bad.png").write_bytes((src / "a.png").read_bytes()[:100])
    for f in ("a.png", "sub/b.jpg", "bad.png"):
        s3.put_file(str(src / f), f"sr-in/photos/{f}")
    code, local = upscale(capsys, src, "-r", "-o", tmp_path / "local", "--suffix", "_x4")
    assert code == 1

    code, lines = upscale(capsys, "s3://sr-in/photos", "-r", "-o", "s3://sr-out/x4/", "--suffix", "_x4")
    assert code == 1 and lines[-1] == local[-1] == "2 done, 0 skipped, 1 failed", lines
    assert "s3://sr-in/photos/sub/b.jpg -> s3://sr-out/x4/sub/b_x4.jpg" in lines
    errors = [x for x in lines if x.startswith("superres: error:")]
    assert errors == [x.replace(str(src), "s3://sr-in/photos") for x in local if x.startswith("superres: error:")]
    for name in ("a_x4.png", "sub/b_x4.jpg"):
        assert s3.cat_file(f"sr-out/x4/{name}") == (tmp_path / "local" / name).read_bytes()
    assert sorted(s3.find("sr-out/x4")) == ["sr-out/x4/a_x4.png", "sr-out/x4/sub/b_x4.jpg"]  # and no temporaries

    code, lines = upscale(capsys, "s3://sr-in/photos", "-r", "-o", "s3://sr-out/x4/", "--suffix", "_x4", "--dry-run")
    assert lines[-1] == "1 to do, 2 skipped (dry run: nothing written)"  # bad.png has no output: still to do

    code, lines = upscale(capsys, "s3://sr-in/photos/a.png", "-o", "s3://sr-out/one.png")  # a single file
    assert code == 0 and lines[-1] == "1 done, 0 skipped, 0 failed"
    assert s3.cat_file("sr-out/one.png") == (tmp_path / "local" / "a_x4.png").read_bytes()
    code, lines = upscale(capsys, src / "a.png", "-o", "s3://sr-out/x4", "--suffix", "_x4")  # a local input, S3 output
    assert code == 0 and lines[-1] == "0 done, 1 skipped, 0 failed"

    assert main(["upscale", "s3://sr-in/missing/", "-o", "s3://sr-out/m", "-m", MODEL]) != 0
    assert "s3://sr-in/missing/: no such file or folder" in capsys.readouterr().err


def test_the_api_upscales_files_and_folders_at_urls(s3, tmp_path, photos):
    from superres.infer.executors import upscale_files

    write_image(tmp_path / "a.png", photos["chelsea"][:24, :24])
    s3.put_file(str(tmp_path / "a.png"), "sr-in/api/a.png")
    s3.pipe_file("sr-in/api/c.png", b"not a png")
    result = upscale_files("s3://sr-in/api/", "s3://sr-out/api", MODEL, format="webp")
    assert (result.done, result.skipped) == (1, 0) and result.failed[0][0] == "s3://sr-in/api/c.png"
    assert sorted(s3.find("sr-out/api")) == ["sr-out/api/a.webp"]
    again = upscale_files("s3://sr-in/api/", "s3://sr-out/api", MODEL, format="webp")
    assert (again.done, again.skipped, len(again.failed)) == (0, 1, 1)
    with pytest.raises(SuperresError, match="is also the output of"):
        upscale_files(["s3://sr-in/api/", tmp_path / "a.png"], "s3://sr-out/api", MODEL, format="webp")
