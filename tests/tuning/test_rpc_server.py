"""What `python -m compiler rpc-server` exposes: it listens on loopback unless told otherwise (and then
warns: TVM RPC has no authentication), and the candidate tar names it receives stay inside TVM's
server work folder."""

from __future__ import annotations

import io
import tarfile

import pytest
import tvm
import tvm.rpc

from compiler import cli
from compiler.tuning import rpc, rpc_server

pytestmark = pytest.mark.unit


def test_the_default_host_is_loopback():
    args = cli.parser().parse_args(["rpc-server", "--tracker", "127.0.0.1:9190", "--key", "k"])
    assert args.host == "127.0.0.1"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_hosts_do_not_warn(host):
    assert rpc_server.exposure_warning(host) is None


def test_a_reachable_host_warns_on_stderr(monkeypatch, capsys):
    class Stop(Exception):
        pass

    def no_server(**kwargs):
        raise Stop

    monkeypatch.setattr(tvm.rpc, "Server", no_server)
    with pytest.raises(Stop):
        rpc_server.serve(rpc.Tracker.parse("127.0.0.1:9190", "k"), host="0.0.0.0", port=9090)
    err = capsys.readouterr().err
    assert "anyone who can reach it can upload and run code" in err and "no authentication" in err


@pytest.fixture
def workpath(monkeypatch, tmp_path):
    """TVM's server work folder in tmp_path; records every name looked up in it."""
    looked_up = []

    def get_global_func(name, *args, **kwargs):
        assert name == "tvm.rpc.server.workpath"
        return lambda path: looked_up.append(path) or str(tmp_path / path)

    monkeypatch.setattr(tvm, "get_global_func", get_global_func)
    return tmp_path, looked_up


@pytest.mark.parametrize("name", ["/etc/x.tar", "../x.tar", "a/../../x.tar", "a/x.tar", "..", "", "a\\..\\x.tar"])
def test_unpack_refuses_names_outside_the_work_folder(workpath, name):
    folder, looked_up = workpath
    with pytest.raises(ValueError, match="refusing the candidate tar name"):
        rpc_server._unpack(name)
    assert looked_up == [] and list(folder.iterdir()) == []


def test_unpack_extracts_a_plain_name_inside_the_work_folder(workpath):
    folder, looked_up = workpath
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("plan.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    (folder / "plan.json.tar").write_bytes(data.getvalue())
    unpacked = rpc_server._unpack("plan.json.tar")
    assert looked_up == ["plan.json.tar"]
    assert unpacked.parent == folder and (unpacked / "plan.json").read_text() == "{}"
