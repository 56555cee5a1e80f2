"""Issue case 11 (stray files): a file directly in ``raw/ready/`` crashed ``fluxforge status``
and misnamed files were silently ignored. Now both are reported by ``status`` (text and
``--json``) and ``process``, never read, and nothing crashes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.reliability.conftest import REPO, clean_env, fluxforge_cmd, record_figures, write_config


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        fluxforge_cmd(*args, "--config", str(config)),
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_stray_files_reported_not_crashing(tmp_path: Path, synthetic_input: list[Path]) -> None:
    root = tmp_path / "store"
    ready = root / "raw" / "ready"
    (ready / "syn").mkdir(parents=True)
    shutil.copy(synthetic_input[0], ready / "syn" / synthetic_input[0].name)
    shutil.copy(synthetic_input[1], ready / synthetic_input[1].name)  # no source folder
    (ready / "syn" / "segment-2024-01-02.ndjson").write_bytes(b"{}\n")  # misnamed
    config = write_config(tmp_path / "c.yaml", {"storage": {"base_dir": str(root)}})

    text = _cli(config, "status")
    assert text.returncode == 0, text.stderr
    assert "Traceback" not in text.stderr
    as_json = _cli(config, "status", "--json")
    assert as_json.returncode == 0, as_json.stderr
    stray = json.loads(as_json.stdout)["stray_files"]
    assert sorted(stray) == sorted(
        [f"raw/ready/{synthetic_input[1].name}", "raw/ready/syn/segment-2024-01-02.ndjson"]
    )
    for key in stray:
        assert key in text.stdout

    run = _cli(config, "process")
    assert run.returncode == 0, run.stderr
    assert all(f"stray file {key}" in run.stderr for key in stray)
    assert (ready / synthetic_input[1].name).exists()  # reported, never read or moved
    archived = root / "raw" / "archive" / "syn"
    assert [p.name for p in archived.iterdir()] == [synthetic_input[0].name]
    record_figures("stray_files", {"stray": len(stray), "status_exit": text.returncode})
