"""Raw segment tiering: moves by age, dry run, manifest lookups, crash reconciliation."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from fluxforge import tiering
from fluxforge.config import Config, config_from_dict

NOW = datetime(2024, 1, 10, 0, 30, tzinfo=UTC).timestamp()
# name -> tier expected at NOW with warm_after_s = 2 h, cold_after_s = 7 d
SEGMENTS = {
    ("venue-a", "segment_20240101T05_00001.ndjson"): "cold",
    ("venue-a", "segment_20240101T05_00002.ndjson"): "cold",
    ("venue-a", "segment_20240108T10_00003.ndjson"): "warm",
    ("venue-b", "segment_20240109T21_00001.ndjson"): "warm",
    ("venue-b", "segment_20240109T23_00002.ndjson"): "hot",
}


def make_cfg(root: Path, hot: Path | None = None, cold: dict | None = None) -> Config:
    return config_from_dict(
        {
            "storage": {"backend": "local", "base_dir": str(hot or root / "hot")},
            "tiering": {
                "warm_dir": str(root / "warm"),
                "warm_after_s": 7200,
                "cold_after_s": 7 * 86400,
                "cold": cold or {"backend": "local", "base_dir": str(root / "cold")},
            },
        },
        environ={},
    )


def archive_path(base: Path, source: str, name: str) -> Path:
    return base / "raw" / "archive" / source / name


def write_segments(base: Path) -> dict[tuple[str, str], bytes]:
    contents = {}
    for source, name in SEGMENTS:
        data = f'{{"ts":1,"src":"{source}","seg":"{name}"}}\n'.encode() * 50
        path = archive_path(base, source, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        contents[(source, name)] = data
    return contents


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Config, dict[tuple[str, str], bytes], Path]:
    cfg = make_cfg(tmp_path)
    return cfg, write_segments(tmp_path / "hot"), tmp_path


def test_tier_segments_by_age_move_to_hot_warm_cold(setup) -> None:
    cfg, contents, root = setup
    report = tiering.tier(cfg, now=NOW)
    for (source, name), expected in SEGMENTS.items():
        for tier in ("hot", "warm", "cold"):
            present = archive_path(root / tier, source, name).exists()
            assert present == (tier == expected), (name, tier)
        assert archive_path(root / expected, source, name).read_bytes() == contents[(source, name)]
    assert report.segments == {"hot": 1, "warm": 2, "cold": 2}
    assert len(report.moves) == 4
    assert {m.method for m in report.moves} == {"rename"}  # one filesystem: rename()
    assert report.registered == len(SEGMENTS)
    # a second run has nothing left to do
    again = tiering.tier(cfg, now=NOW)
    assert again.moves == [] and again.repaired == [] and again.registered == 0


def test_tier_dry_run_moves_nothing_and_plans_the_real_moves(setup) -> None:
    cfg, _, root = setup
    before = tree(root)
    plan = tiering.tier(cfg, dry_run=True, now=NOW)
    assert tree(root) == before
    assert not tiering.manifest_path(cfg).exists()
    done = tiering.tier(cfg, now=NOW)
    planned = [(m.source, m.name, m.from_tier, m.to_tier, m.size, m.uri) for m in plan.moves]
    actual = [(m.source, m.name, m.from_tier, m.to_tier, m.size, m.uri) for m in done.moves]
    assert planned == actual and len(planned) == 4


def test_locate_finds_every_segment_with_correct_checksum(setup) -> None:
    cfg, contents, _ = setup
    tiering.tier(cfg, now=NOW)
    found = {}
    for source, date in {
        ("venue-a", "2024-01-01"),
        ("venue-a", "2024-01-08"),
        ("venue-b", "2024-01-09"),
    }:
        for loc in tiering.locate(cfg, source, date):
            found[(loc.source, loc.name)] = loc
    assert set(found) == set(SEGMENTS)
    for ident, loc in found.items():
        assert loc.tier == SEGMENTS[ident]
        assert loc.sha256 == hashlib.sha256(contents[ident]).hexdigest()
        assert loc.size == len(contents[ident])
        assert Path(loc.uri).read_bytes() == contents[ident]
        assert tiering.read_segment(cfg, loc) == contents[ident]
    day = tiering.locate(cfg, "venue-a", "2024-01-01")
    assert [loc.name for loc in day] == sorted(loc.name for loc in day)
    assert tiering.locate(cfg, "venue-a", "2024-01-02") == []


def test_locate_before_any_tier_run_finds_hot_segments(setup) -> None:
    cfg, _, _ = setup
    locs = tiering.locate(cfg, "venue-b", "2024-01-09")
    assert [(loc.tier, loc.sha256) for loc in locs] == [("hot", ""), ("hot", "")]


def test_read_segment_corrupted_copy_raises_checksum_error(setup) -> None:
    cfg, _, _ = setup
    tiering.tier(cfg, now=NOW)
    (loc,) = tiering.locate(cfg, "venue-a", "2024-01-08")
    Path(loc.uri).write_bytes(b"x" * loc.size)
    with pytest.raises(tiering.ChecksumError, match="segment_20240108T10_00003"):
        tiering.read_segment(cfg, loc)


class Crash(BaseException):
    """Stands for the process dying: not an Exception, nothing catches it."""


def test_tier_crash_between_move_and_manifest_update_is_reconciled(
    setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, contents, _ = setup
    real = tiering._transfer
    calls = []

    def transfer_then_die(*args, **kwargs):
        method = real(*args, **kwargs)
        calls.append(method)
        if len(calls) == 2:
            raise Crash
        return method

    monkeypatch.setattr(tiering, "_transfer", transfer_then_die)
    with pytest.raises(Crash):
        tiering.tier(cfg, now=NOW)
    monkeypatch.setattr(tiering, "_transfer", real)
    # the second moved file is in its new tier, the manifest still says hot
    stale = [loc for s, d in (("venue-a", "2024-01-01"),) for loc in tiering.locate(cfg, s, d)]
    assert any(loc.tier == "hot" and not Path(loc.uri).exists() for loc in stale)

    report = tiering.tier(cfg, now=NOW)
    assert len(report.repaired) == 1 and "manifest hot -> cold" in report.repaired[0]
    for (source, name), expected in SEGMENTS.items():
        date = f"{name[8:12]}-{name[12:14]}-{name[14:16]}"
        (loc,) = [x for x in tiering.locate(cfg, source, date) if x.name == name]
        assert loc.tier == expected
        assert loc.sha256 == hashlib.sha256(contents[(source, name)]).hexdigest()
        assert tiering.read_segment(cfg, loc) == contents[(source, name)]


def test_tier_crash_after_copy_before_delete_keeps_one_copy(setup) -> None:
    cfg, contents, root = setup
    ident = ("venue-a", "segment_20240108T10_00003.ndjson")
    src = archive_path(root / "hot", *ident)
    dst = archive_path(root / "warm", *ident)
    dst.parent.mkdir(parents=True)
    shutil.copyfile(src, dst)  # the copy landed, the delete of the source did not
    report = tiering.tier(cfg, now=NOW)
    assert not src.exists() and dst.read_bytes() == contents[ident]
    assert any("duplicate in hot removed (kept warm)" in r for r in report.repaired)
    (loc,) = tiering.locate(cfg, "venue-a", "2024-01-08")
    assert loc.tier == "warm"


def test_tier_lost_file_is_reported_missing_not_dropped(setup) -> None:
    cfg, _, root = setup
    tiering.tier(cfg, now=NOW)
    archive_path(root / "warm", "venue-a", "segment_20240108T10_00003.ndjson").unlink()
    report = tiering.tier(cfg, now=NOW)
    assert report.missing == ["venue-a/segment_20240108T10_00003.ndjson"]
    (loc,) = tiering.locate(cfg, "venue-a", "2024-01-08")
    assert loc.tier == "missing"
    with pytest.raises(tiering.TieringError, match="not available"):
        tiering.read_segment(cfg, loc)


def test_tier_across_filesystems_copies_fsyncs_and_deletes(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temp dir")
    hot = Path(tempfile.mkdtemp(prefix="fluxforge-tier-", dir=shm))
    try:
        cfg = make_cfg(tmp_path, hot=hot)
        contents = write_segments(hot)
        report = tiering.tier(cfg, now=NOW)
        assert {m.method for m in report.moves} == {"copy"}
        for (source, name), expected in SEGMENTS.items():
            base = hot if expected == "hot" else tmp_path / expected
            assert archive_path(base, source, name).read_bytes() == contents[(source, name)]
            if expected != "hot":
                assert not archive_path(hot, source, name).exists()
    finally:
        shutil.rmtree(hot, ignore_errors=True)


def test_tier_cli_dry_run_json_prints_plan(setup, tmp_path: Path) -> None:
    _, _, root = setup
    import yaml

    from fluxforge.cli import main

    conf = tmp_path / "c.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "storage": {"backend": "local", "base_dir": str(root / "hot")},
                "tiering": {
                    "warm_dir": str(root / "warm"),
                    "warm_after_s": 0,
                    "cold_after_s": 1e12,
                },
            }
        )
    )
    before = tree(root)
    result = CliRunner().invoke(main, ["tier", "--config", str(conf), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["dry_run"] is True and out["moved"] == len(SEGMENTS)
    assert {m["to_tier"] for m in out["moves"]} == {"warm"}
    assert tree(root) == before


@pytest.mark.services
def test_tier_cold_on_s3_uploads_and_locate_reads_back(s3_env, tmp_path: Path) -> None:
    bucket = s3_env.bucket("cold")
    cold = {
        "backend": "s3",
        "base_dir": bucket,
        "s3": {"endpoint_url": s3_env.endpoint_url, "region": s3_env.region},
    }
    cfg = make_cfg(tmp_path, cold=cold)
    contents = write_segments(tmp_path / "hot")
    report = tiering.tier(cfg, now=NOW)
    assert {(m.to_tier, m.method) for m in report.moves} == {("cold", "upload"), ("warm", "rename")}
    locs = tiering.locate(cfg, "venue-a", "2024-01-01")
    assert [loc.tier for loc in locs] == ["cold", "cold"]
    for loc in locs:
        assert loc.uri == f"s3://{bucket}/raw/archive/venue-a/{loc.name}"
        assert tiering.read_segment(cfg, loc) == contents[(loc.source, loc.name)]
        assert not archive_path(tmp_path / "hot", loc.source, loc.name).exists()


def test_restore_brings_a_tiered_day_back_then_tier_removes_the_copies(setup) -> None:
    cfg, contents, root = setup
    tiering.tier(cfg, now=NOW)
    locs = tiering.restore(cfg, "venue-a", "2024-01-01")
    assert [loc.tier for loc in locs] == ["hot", "hot"]
    for loc in locs:
        assert (
            archive_path(root / "hot", loc.source, loc.name).read_bytes()
            == contents[(loc.source, loc.name)]
        )
        assert archive_path(root / "cold", loc.source, loc.name).exists()
    report = tiering.tier(cfg, now=NOW)
    assert len(report.repaired) == 2 and report.moves == []
    for loc in locs:
        assert not archive_path(root / "hot", loc.source, loc.name).exists()
    assert [loc.tier for loc in tiering.locate(cfg, "venue-a", "2024-01-01")] == ["cold", "cold"]


def test_resolve_warm_dir_defaults_under_a_local_lake_and_demands_one_for_s3(tmp_path) -> None:
    from fluxforge.config import config_from_dict

    local = config_from_dict({"storage": {"base_dir": str(tmp_path / "lake")}}, environ={})
    assert tiering.resolve_warm_dir(local) == (tmp_path / "lake" / "warm").resolve()
    s3 = config_from_dict(
        {"storage": {"etl_storage_output": {"backend": "s3", "base_dir": "bucket"}}}, environ={}
    )
    with pytest.raises(ValueError, match=r"tiering\.warm_dir"):
        tiering.resolve_warm_dir(s3)
    given = config_from_dict({"tiering": {"warm_dir": str(tmp_path / "w")}}, environ={})
    assert tiering.resolve_warm_dir(given) == (tmp_path / "w").resolve()
