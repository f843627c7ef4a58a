"""Contract of the RPC pieces that need no model: addresses, placement arithmetic, refusals."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from gemma_edge.errors import RpcError
from gemma_edge.rpc.endpoints import parse_endpoints
from gemma_edge.rpc.placement import plan
from tests.rpc.conftest import free_port


def test_endpoints_are_parsed_in_order_and_validated():
    assert parse_endpoints("10.0.0.2:50052, pi.local:7000") == ["10.0.0.2:50052", "pi.local:7000"]
    assert parse_endpoints(["[::1]:50052"]) == ["[::1]:50052"]
    for bad in ("10.0.0.2", ":50052", "host:0", "host:70000", "host:port", "a:1,a:1", ""):
        with pytest.raises(RpcError):
            parse_endpoints(bad)


def test_split_must_name_every_device():
    with pytest.raises(RpcError, match="2 values but there are 3 devices"):
        plan(18, ["local CPU", "w1", "w2"], [1, 1])
    with pytest.raises(RpcError, match=">= 0"):
        plan(18, ["local CPU", "w1"], [1, -1])


def test_all_local_when_workers_get_nothing():
    placement = plan(18, ["local CPU", "w1"], [1, 0])
    assert placement.llama_options() == {"n_gpu_layers": 0}
    assert set(placement.layer_device) == {0}


def test_layers_follow_the_weights():
    placement = plan(26, ["local CPU", "w1", "w2"], [1, 1, 2])
    counts = [r["layers"] for r in placement.ranges()]
    assert sum(counts) == 27  # 26 repeating layers + output
    assert counts[0] == round(27 / 4)
    assert placement.ranges()[-1]["output_layer"]  # llama.cpp keeps the output with the last offloaded layer
    assert list(placement.layer_device) == sorted(placement.layer_device)  # contiguous pipeline stages


def test_unreachable_worker_is_a_clear_error_not_an_abort(embedded_model_path):
    """ggml-rpc aborts on a refused connection: we must refuse before it gets there (in this process)."""
    from gemma_edge.api import load

    port = free_port()
    for supervised in (True, False):
        with pytest.raises(RpcError, match=f"cannot reach RPC worker 127.0.0.1:{port}"):
            load(embedded_model_path, n_ctx=64, rpc=[f"127.0.0.1:{port}"], supervised=supervised)


def test_worker_help_warns_about_no_authentication():
    from click.testing import CliRunner

    from gemma_edge.cli import main

    result = CliRunner().invoke(main, ["worker", "--help"])
    assert result.exit_code == 0
    assert "NO AUTHENTICATION" in result.output and "NO ENCRYPTION" in result.output


def test_worker_on_a_busy_port_fails_with_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "gemma_edge", "worker", "--port", str(port)],
                              capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert f"gemma-edge: error: could not serve on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                            ("192.168.1.20", False), ("pi.local", False)])
def test_only_loopback_binds_go_without_the_warning(host, loopback):
    from gemma_edge.cli.common import is_loopback

    assert is_loopback(host) is loopback
