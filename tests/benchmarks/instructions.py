"""Instructions per proxied call, counted by callgrind: a measure that a noisy machine does not blur.

    python tests/benchmarks/instructions.py [--scenario master|virtual|limits|cache|redis|stream] [--calls 300]
                                            [--chunks 0] [--keep DIR]

Wall-clock throughput on a shared VM varies by +-20 % between runs of the same build, which hides changes of a
few percent; callgrind counts the instructions the proxy's process executes in user space, the same within
~2 % from run to run whatever else the machine does. It does not see the kernel (system calls, the loopback's
packets), so count those with strace, and check a change that moves them with run.py. The proxy runs under
valgrind (about 50x slower) with counting off; it is switched on (`callgrind_control -i on`) after a warm-up,
for `--calls` sequential calls against the canned nginx upstream.

Scenarios: master (master key), virtual (a virtual key, spend tracked), limits (a virtual key with rpm and tpm
limits in Redis, no cache), cache (master key, Redis cache misses), redis (limits and cache misses together),
stream (master key, a streamed call to the drip upstream: a role chunk, `--chunks` content chunks a millisecond
apart, a finish chunk with usage; two counts with different `--chunks` give what one more chunk costs).
`--keep DIR` copies the callgrind files there, for `callgrind_annotate --inclusive=yes` (what a function costs
with its callees) and for comparing two scenarios function by function.
Needs valgrind (`apt-get install -y valgrind`), nginx-light, and Redis for the last three.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
import yaml

from tests.benchmarks.harness import (
    DRIP_PORT,
    HERE,
    PROXY_CORE,
    Bench,
    free_port,
    redis_namespace,
    start_drip,
    start_nginx,
    wait_for,
)
from tests.benchmarks.run import HIGH_LIMITS, config

SCENARIOS = ("master", "virtual", "limits", "cache", "redis", "stream")


def _config(scenario: str, work: Path, namespace: str) -> dict[str, Any]:
    redis = scenario in ("limits", "cache", "redis")
    settings = config(f"sqlite:///{work}/instructions.db", redis=redis, namespace=namespace)  # misses, run after run
    if redis:
        settings["litellm_settings"]["cache"] = scenario != "limits"
    return settings


def _total(dumps: list[Path]) -> int:
    total = 0
    for dump in dumps:
        for line in dump.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    return total


def count(scenario: str, calls: int, warmup: int, chunks: int = 0, keep: Path | None = None) -> float:
    """Instructions per call for one scenario."""
    with (
        start_nginx(),
        start_drip(DRIP_PORT, chunks, drip_ms=1),
        Bench.workdir() as work,
        redis_namespace("instructions") as namespace,
    ):
        path = work / "instructions.yaml"
        settings = _config(scenario, work, namespace)
        path.write_text(yaml.safe_dump(settings))
        port = free_port()
        command = [
            *("taskset", "-c", PROXY_CORE, "valgrind", "--tool=callgrind", "--instr-atstart=no"),
            f"--callgrind-out-file={work}/callgrind.out",
            *(sys.executable, "-m", "edgeproxy", "run", "--config", str(path), "--host", "127.0.0.1"),
            *("--port", str(port), "--log-level", "warning"),
        ]
        proxy = subprocess.Popen(command, cwd=work, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(url + "/health/liveliness", timeout_s=300)
            master = settings["general_settings"]["master_key"]
            key = master
            if scenario not in ("master", "cache"):
                fields = HIGH_LIMITS if scenario in ("limits", "redis") else {}
                created = httpx.post(
                    url + "/key/generate",
                    json={"key_alias": "instructions", **fields},
                    headers={"authorization": f"Bearer {master}"},
                    timeout=60,
                )
                key = created.raise_for_status().json()["key"]
            unique = scenario in ("cache", "redis")
            with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=60) as client:

                def call(i: int) -> None:
                    content = f"hello {i} {uuid.uuid4().hex}" if unique else "hello"
                    body: dict[str, Any] = {"model": "bench-model", "messages": [{"role": "user", "content": content}]}
                    if scenario == "stream":
                        body.update(model="bench-drip", stream=True)
                        with client.stream("POST", "/v1/chat/completions", json=body) as response:
                            response.raise_for_status()
                            if not response.read().endswith(b"data: [DONE]\n\n"):
                                raise RuntimeError("the stream did not end with [DONE]")
                        return
                    client.post("/v1/chat/completions", json=body).raise_for_status()

                for i in range(warmup):
                    call(i)
                subprocess.run(["callgrind_control", "-i", "on", str(proxy.pid)], capture_output=True, check=True)
                for i in range(calls):
                    call(warmup + i)
                subprocess.run(["callgrind_control", "-i", "off", str(proxy.pid)], capture_output=True, check=True)
                subprocess.run(["callgrind_control", "-d", str(proxy.pid)], capture_output=True, check=True)
        finally:
            proxy.terminate()
            proxy.wait(timeout=120)
        dumps = sorted(work.glob("callgrind.out*"))
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for dump in dumps:
                shutil.copy(dump, keep / f"{scenario}.{dump.name}")
        return _total(dumps) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default="master")
    parser.add_argument("--calls", type=int, default=300, help="calls counted (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=60, help="calls before counting starts")
    parser.add_argument("--chunks", type=int, default=0, help="stream: content chunks between role and finish")
    parser.add_argument("--keep", type=Path, help="copy the callgrind files into this directory")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"this needs {tool}: apt-get install -y valgrind nginx-light", file=sys.stderr)
            return 2
    per_call = count(args.scenario, args.calls, args.warmup, args.chunks, args.keep)
    print(f"{args.scenario}: {per_call / 1e6:.3f} M instructions per call ({args.calls} calls)")
    return 0


if __name__ == "__main__":
    os.chdir(HERE)
    raise SystemExit(main())
