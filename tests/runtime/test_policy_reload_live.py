"""Under a real `tidegate run`, a policy edit takes effect without a restart and a broken
edit is refused (issue 19 item 7): `tidegate reload` is forwarded to the runtime over the
admin socket, the runtime also watches `policies/` by itself, and every switch is audited."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tidegate.demo.runner import _free_port
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.project.policies import policy_digest

from .control_helpers import cli, live_shop, running, wait_for  # type: ignore[import-not-found]

pytestmark = pytest.mark.slow

ENTITY = "/v1/products/customer_360/entities/42"
ROLE = "    description: Customer-care staff answering tickets.\n    purposes: [support]\n"
DENIED = ROLE.replace("[support]", "[analytics]")
BROKEN = ROLE + "    purposes_typo: [support]\n"


def _status(client: httpx.Client, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "support"}
    return client.get(ENTITY, headers=headers).status_code


def _write(policy: Path, old: str, new: str) -> None:
    text = policy.read_text()
    assert old in text
    policy.write_text(text.replace(old, new, 1))


def test_policy_edits_apply_under_run_and_broken_ones_are_refused(
    demo_dir: Path, tmp_path: Path
) -> None:
    project = live_shop(demo_dir, tmp_path / "shop", fast_rebuilds=False)
    policy = project / "policies" / "purposes.yml"
    original = policy_digest(project)
    with Platform.open(project) as platform:
        token = create_key(platform.meta, "desk", ["support_agent"])[0]
        seq = platform.audit.last_seq()
    port = _free_port(0)
    env = {"TIDEGATE_POLICY_POLL": "30"}  # `reload` first; the watch is tested below
    with (
        running(project, port=port, env=env),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        assert _status(client, token) == 200

        # a broken edit: refused with its problems, exit 2; the old policy still applies
        _write(policy, ROLE, BROKEN)
        refused = cli("reload", "-p", str(project))
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        assert "policies/purposes.yml" in refused.stderr
        assert "purposes_typo" in refused.stderr
        assert "policy in force" in refused.stderr
        assert _status(client, token) == 200

        # a valid edit: support_agent loses support; the next request is denied
        _write(policy, BROKEN, DENIED)
        applied = cli("reload", "-p", str(project), "--json")
        assert applied.returncode == 0, (applied.stdout, applied.stderr)
        assert '"changed": true' in applied.stdout
        assert _status(client, token) == 403
        denied_digest = policy_digest(project)

    # the runtime's own watch: restore the role, no command, allowed again
    with (
        running(project, port=port, env={"TIDEGATE_POLICY_POLL": "0.2"}),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        assert _status(client, token) == 403
        _write(policy, DENIED, ROLE)
        wait_for(lambda: _status(client, token) == 200, 30, "the watch to apply the edit")

    with Platform.open(project) as platform:
        records = [r for _, r in platform.audit.records(seq) if r.action == "policy_reload"]
    assert [(r.outcome, r.detail["trigger"]) for r in records] == [
        ("refused", "command"),
        ("allowed", "command"),
        ("allowed", "watch"),
    ]
    assert records[1].detail["previous"] == original
    assert records[1].detail["digest"] == denied_digest
    assert records[2].detail["digest"] == original


def test_a_serve_replica_polls_and_applies_the_edit(demo_dir: Path, tmp_path: Path) -> None:
    """`tidegate serve` holds no admin socket: it watches `policies/` by itself."""
    import os
    import signal
    import subprocess

    from .control_helpers import TIDEGATE, _health  # type: ignore[import-not-found]

    project = live_shop(demo_dir, tmp_path / "shop", fast_rebuilds=False)
    policy = project / "policies" / "purposes.yml"
    with Platform.open(project) as platform:
        token = create_key(platform.meta, "desk", ["support_agent"])[0]
    port = _free_port(0)
    process = subprocess.Popen(
        [TIDEGATE, "serve", "-p", str(project), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TIDEGATE_POLICY_POLL": "0.2"},
    )
    try:
        wait_for(lambda: _health(port), 60, "tidegate serve")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert _status(client, token) == 200
            _write(policy, ROLE, BROKEN)  # refused: the old policy stays
            time.sleep(1.0)
            assert _status(client, token) == 200
            _write(policy, BROKEN, DENIED)
            wait_for(lambda: _status(client, token) == 403, 30, "the replica to apply the edit")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
    assert "policies not reloaded" in err  # the refusal is logged with its problems
    assert "purposes_typo" in err
