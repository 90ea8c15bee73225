"""`--against-litellm`: the same load against `litellm --num_workers 1` with the same model list.

LiteLLM is optional (not a project dependency): `pip install 'litellm[proxy]'` in the environment that runs
the benchmarks. Its virtual keys need PostgreSQL and Prisma (which downloads engines at start), so the side by
side compares the master-key path, with the same priced model and spend tracking off on both sides.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.benchmarks.harness import PROXY_CORE, Bench, ProxyProcess, free_port, median, wait_for, wrk


def compare(bench: Bench, work: Path, config: dict[str, Any]) -> None:
    if shutil.which("litellm") is None:
        bench.record("LiteLLM side by side: skipped (litellm not installed)", "-", 0)
        return
    litellm_config = {
        "model_list": config["model_list"],
        "general_settings": {"master_key": config["general_settings"]["master_key"]},
    }
    path = work / "litellm.yaml"
    path.write_text(yaml.safe_dump(litellm_config))
    port = free_port()
    env_command = [
        "taskset",
        "-c",
        PROXY_CORE,
        "litellm",
        "--config",
        str(path),
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    process = subprocess.Popen(env_command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ours = ProxyProcess(config, work, "vs-litellm")
    key = config["general_settings"]["master_key"]
    try:
        wait_for(f"http://127.0.0.1:{port}/health/liveliness", timeout_s=120)
        litellm_url = f"http://127.0.0.1:{port}"
        with ours:
            virtual = ours.create_key()  # ours with a virtual key and spend tracking; LiteLLM's master key
            for c in (1, 8, 32):
                theirs, ours_master, ours_virtual = [], [], []
                for _ in range(bench.runs):
                    theirs.append(wrk(f"{litellm_url}/v1/chat/completions", c, bench.seconds, "chat.lua", key))
                    ours_master.append(wrk(ours.url + "/v1/chat/completions", c, bench.seconds, "chat.lua", key))
                    ours_virtual.append(wrk(ours.url + "/v1/chat/completions", c, bench.seconds, "chat.lua", virtual))
                theirs_rps = median(r.rps for r in theirs)
                bench.record(f"LiteLLM throughput c={c}", "req/s", theirs_rps, p50_ms=median(r.p50_ms for r in theirs))
                master_ratio = median(r.rps for r in ours_master) / theirs_rps
                bench.record(f"edgeproxy master key / LiteLLM c={c}", "x", master_ratio)
                bench.record(
                    f"edgeproxy virtual key + spend / LiteLLM master key c={c}",
                    "x",
                    median(r.rps for r in ours_virtual) / theirs_rps,
                )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
