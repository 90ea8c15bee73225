"""`edgeproxy health`: the running server's view of every deployment, from the shell."""

from __future__ import annotations

import json

import click
import httpx

from edgeproxy.cli_common import CliError, config_option, load


@click.command("health")
@config_option
@click.option("--url", default="http://127.0.0.1:4000", show_default=True, help="The running edgeproxy.")
@click.option("--json", "as_json", is_flag=True, help="Print the /health document as JSON.")
def health(config_path: str, url: str, as_json: bool) -> None:
    """Show healthy and unhealthy deployments (from the server's background probes and cooldowns)."""
    config = load(config_path)
    headers = {"authorization": f"Bearer {config.general.master_key}"} if config.general.master_key else {}
    try:
        response = httpx.get(url.rstrip("/") + "/health", headers=headers, timeout=10, trust_env=False)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach edgeproxy at {url}: {type(exc).__name__}", exit_code=3) from None
    if response.status_code != 200:
        raise CliError(f"{url}/health answered {response.status_code}: {response.text[:200]}", exit_code=1)
    report = response.json()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"healthy: {report['healthy_count']}  unhealthy: {report['unhealthy_count']}")
    for state, endpoints in (("ok", report["healthy_endpoints"]), ("DOWN", report["unhealthy_endpoints"])):
        for endpoint in endpoints:
            latency = endpoint.get("last_latency_s")
            shown = f"{latency * 1000:.0f} ms" if isinstance(latency, int | float) else "-"
            error = endpoint.get("last_error") or ""
            click.echo(
                f"  {state:<4} {endpoint['model_group']:<24} {endpoint['deployment_id']:<28} "
                f"{endpoint['api_base']:<40} {shown:>8}  {error}"
            )
    if report["unhealthy_count"]:
        raise SystemExit(1)
