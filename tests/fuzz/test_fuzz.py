"""Run the atheris fuzz target for a bounded time (``FUZZ_SECONDS``, default 20).

The target runs in a child process: libFuzzer ends its process when done.
Without atheris the test is skipped locally and fails on CI (``CI=true``),
like the Redis tests. A crash leaves its input in the test's tmp_path and
its traceback in the failure message; rerun it with
``.venv/bin/python tests/fuzz/fuzz_session.py <crash file>``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TARGET = Path(__file__).with_name("fuzz_session.py")
ROOT = TARGET.parents[2]
FUZZ_SECONDS = int(os.environ.get("FUZZ_SECONDS", "20"))
#: Fewer inputs than this in the time given means the target is broken or
#: far too slow to be worth its time in the suite.
MIN_INPUTS = 1000 * FUZZ_SECONDS // 20

#: Starting points: one per attack and app (see the target's docstring).
SEEDS = {
    "cookie": bytes([0, 0]) + b"abc.def.ghi",
    "header": bytes([0, 0x40]) + b"session=x; other=y",
    "raw": bytes([1, 0x44]) + b"\x04user\x05" + b"\0" * 21,
    "edit-pickle": bytes([2, 0x04]) + bytes(range(40)),
    "edit-json": bytes([2, 0x09]) + bytes(range(40, 80)),
    "edit-allowlist": bytes([2, 0x0A]) + bytes(range(80, 120)),
    "cookie-edit": bytes([3, 0]) + bytes(range(16)),
}


def _require_atheris() -> None:
    if importlib.util.find_spec("atheris") is None:
        reason = "atheris is not installed (pip install atheris)"
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"{reason}; CI=true, so this is an error, not a skip", pytrace=False
            )
        pytest.skip(reason)


def test_fuzz_cookies_and_stored_records(tmp_path, request):
    _require_atheris()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data in SEEDS.items():
        (corpus / name).write_bytes(data)
    command = [
        sys.executable,
        str(TARGET),
        f"-max_total_time={FUZZ_SECONDS}",
        "-print_final_stats=1",
        "-max_len=1024",
        "-timeout=10",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={tmp_path}/",
        str(corpus),
    ]
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 60,
        check=False,
    )
    found = re.search(r"stat::number_of_executed_units: (\d+)", done.stderr)
    runs = int(found.group(1)) if found else 0

    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(f"inputs tried by atheris in {FUZZ_SECONDS} s: {runs}")

    crashes = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert done.returncode == 0, (
        f"fuzzing failed (exit {done.returncode}), inputs saved: {crashes}\n"
        + "\n".join(done.stderr.splitlines()[-60:])
    )
    assert runs >= MIN_INPUTS, (
        f"only {runs} inputs in {FUZZ_SECONDS} s\n{done.stderr[-3000:]}"
    )
