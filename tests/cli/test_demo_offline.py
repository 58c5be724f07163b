"""Without network, the demo's model check answers in seconds (cache first, one short probe of the Hub)
instead of minutes of download retries, and its hint names the command the user ran."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fixtures.models import free_port

GAP = "from gap.cli import main; main()"  # the `gap` command, run by this interpreter
CHILD_TIMEOUT = 120  # far above the expected few seconds; the retries it replaces took minutes


def offline_env(tmp_path: Path) -> dict[str, str]:
    """Hub offline mode unset, as for a user; an empty cache; a Hub endpoint nothing listens on."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    env.pop("HF_HUB_CACHE", None)
    return env


def run_timed(
    args: list[str], env: dict[str, str], cwd: Path
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    return done, time.monotonic() - started


def test_demo_without_network_fails_fast_naming_the_command(tmp_path: Path) -> None:
    env = offline_env(tmp_path) | {"GAP_PROG_NAME": "scripts/demo"}
    command = [
        sys.executable,
        "-c",
        "from gap.cli import main; main()",
        "demo",
        "--dir",
        "demo",
        "--port",
        "0",
    ]
    done, seconds = run_timed(command, env, tmp_path)
    print(f"demo model check without network: exit {done.returncode} after {seconds:.1f} s")
    assert done.returncode == 1, done.stderr
    assert "is not in the local Hugging Face cache" in done.stderr
    assert "`scripts/demo --tiny`" in done.stderr and "`scripts/demo --model DIR`" in done.stderr
    assert "gap demo" not in done.stderr
    assert "Retrying" not in done.stderr
    assert seconds < 30


def test_a_cached_hub_model_loads_from_the_cache_when_the_hub_is_unreachable(
    tmp_path: Path, tiny_vlm_dir: Path
) -> None:
    env = offline_env(tmp_path)
    repo = Path(env["HF_HOME"]) / "hub" / "models--test-org--tiny-vlm"
    revision = "0" * 40
    shutil.copytree(tiny_vlm_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    script = (
        "from gap.cli._common import ready_model\n"
        "from gap.config import Settings\n"
        "model = ready_model(Settings(model='transformers:test-org/tiny-vlm', data_dir='data'))\n"
        "print(model.name)\n"
    )
    done, seconds = run_timed([sys.executable, "-c", script], env, tmp_path)
    print(f"cached hub model with the Hub unreachable: exit {done.returncode} after {seconds:.1f} s")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "transformers:test-org/tiny-vlm"  # the name players' data records
    assert "using the cached test-org/tiny-vlm" in done.stderr
    assert "Retrying" not in done.stderr
