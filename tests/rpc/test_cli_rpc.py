"""The command line with --rpc: real `gemma-edge` processes against the loopback workers."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

PROMPT = "The three largest cities of Italy are"


def gemma_edge(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gemma_edge", *args], capture_output=True, text=True, **kw)


def test_run_split_answers_like_one_process(embedded_model_path, workers):
    args = ("run", "--raw", PROMPT, "-n", "8", "--temperature", "0", "-m", str(embedded_model_path))
    single = gemma_edge(*args, timeout=120)
    split = gemma_edge(*args, "--rpc", ",".join(workers.endpoints), timeout=120)
    assert single.returncode == split.returncode == 0, split.stderr
    assert split.stdout == single.stdout and split.stdout.strip()
    placement = re.search(r"^placement: (.*)$", split.stderr, re.M).group(1)
    assert [part.split(" layers ")[0] for part in placement.split("; ")] == [
        "local CPU", *(f"{e} (RPC{i})" for i, e in enumerate(workers.endpoints))]


def test_run_with_a_dying_worker_is_one_error_line(embedded_model_path, workers, tmp_path):
    victim = workers.endpoints[0]
    err = tmp_path / "stderr"
    with open(err, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "gemma_edge", "run", "--raw", "Once upon a time",
                                    "-n", "4000", "-c", "4096", "--temperature", "0", "-m", str(embedded_model_path),
                                    "--rpc", ",".join(workers.endpoints)], stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 60
        while "placement:" not in err.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        workers.kill(0)
        killed = time.monotonic()
        try:
            code = process.wait(timeout=30)
        finally:
            process.kill()
            workers.start(0)
    assert time.monotonic() - killed < 30
    assert code == 2
    last = err.read_text().strip().splitlines()[-1]
    assert last.startswith(f"gemma-edge: error: RPC worker {victim} is gone")
    assert "Traceback" not in err.read_text()


def test_split_needs_rpc(embedded_model_path):
    done = gemma_edge("run", "--raw", "hi", "-n", "1", "--split", "1,1", "-m", str(embedded_model_path), timeout=60)
    assert done.returncode == 2 and "--split needs --rpc" in done.stderr


def test_rpc_doctor_measures_each_link(workers):
    from click.testing import CliRunner

    from gemma_edge.cli.worker import rpc_doctor

    result = CliRunner().invoke(rpc_doctor, [",".join(workers.endpoints), "--json"])
    assert result.exit_code == 0, result.output
    links = json.loads(result.output)
    assert [link["endpoint"] for link in links] == workers.endpoints
    for link in links:
        assert link["rtt_ms"] > 0 and link["upload_mb_s"] > 0 and link["download_mb_s"] > 0
        assert link["network_ms_per_token"] > 0 and link["placement_decode_tokens_per_s"] > 0
    assert all(link["layers"] > 0 for link in links)


def test_info_and_doctor_report_the_placement_and_links(embedded_model_path, workers):
    from gemma_edge.rpc.placement import plan

    endpoints = ",".join(workers.endpoints)
    info = gemma_edge("info", str(embedded_model_path), "--rpc", endpoints, "--split", "1,1,2", "--json", timeout=120)
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    names = ["local CPU", *(f"{e} (RPC{i})" for i, e in enumerate(workers.endpoints))]
    assert facts["placement"] == plan(facts["layers"], names, [1.0, 1.0, 2.0]).as_dict()
    doctor = gemma_edge("doctor", "--rpc", endpoints, "--json", timeout=120)
    assert doctor.returncode == 0, doctor.stderr
    assert [link["endpoint"] for link in json.loads(doctor.stdout)] == workers.endpoints
