"""Images and exports on S3-compatible storage, against a real local S3 server (moto's)."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from fixtures.game import careful_player_history, login, png_bytes, seed_images
from fixtures.server import free_port
from gap.cli import app
from gap.config import Settings
from gap.data import Message, Provenance, Record, validate_export, write_records
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Turn
from gap.models.base import ChatMessage, ImageInput
from gap.services.data import fill_references
from gap.storage import LocalStore, S3Store
from gap.web.app import create_app

pytestmark = pytest.mark.db
BUCKET = "gap-test"


@dataclass
class S3:
    endpoint: str
    client: Any

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def read(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read())


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    """moto's S3 server on a free loopback port, one empty bucket, and test credentials."""
    import boto3
    from moto.server import ThreadedMotoServer

    # The server runs in this process: its access log would mix with the CLI output under test.
    monkeypatch.setattr(logging.getLogger("werkzeug"), "disabled", True)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)
    try:
        yield S3(endpoint, client)
    finally:
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"inf")  # moto's auth state is global
        server.stop()


@pytest.fixture
def env(tmp_path: Path, s3: S3, settings: Settings) -> dict[str, str]:
    return {
        "GAP_DATA_DIR": str(settings.data_dir),
        "GAP_DATABASE_URL": settings.resolved_database_url,
        "GAP_STORAGE_URL": f"s3://{BUCKET}/gap",
        "GAP_S3_ENDPOINT_URL": s3.endpoint,
        "GAP_CONFIG": "",
    }


@dataclass
class SeeingModel:
    """Answers "yes" and keeps the image bytes each answer was given."""

    seen: list[bytes] = field(default_factory=list)
    name: str = "seeing"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        self.seen.append(image.data)
        return "yes"


def test_images_added_by_the_cli_are_played_from_s3(
    tmp_path: Path, s3: S3, env: dict[str, str], settings: Settings
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(4):
        (photos / f"{seed}.png").write_bytes(png_bytes(seed))
    for pool, names in (("tainted", ["0.png", "1.png"]), ("untainted", ["2.png", "3.png"])):
        added = CliRunner().invoke(
            app, ["images", "add", *(str(photos / n) for n in names), "--pool", pool], env=env
        )
        assert added.exit_code == 0, added.output
    keys = s3.keys("gap/images/")
    assert len(keys) == 4 and all(k.endswith(".png") for k in keys)
    assert not (settings.data_dir / "images").exists()  # nothing landed in the local folder
    stored = {s3.read(k) for k in keys}
    assert stored == {png_bytes(seed) for seed in range(4)}

    s3_settings = settings.model_copy(
        update={"storage_url": f"s3://{BUCKET}/gap", "s3_endpoint_url": s3.endpoint}
    )
    model = SeeingModel()
    with TestClient(create_app(s3_settings, model=model)) as client:
        auth = login(client)
        round_ = client.post("/api/sessions", headers=auth).json()["round"]
        picture = client.get(round_["image_url"], headers=auth)
        assert picture.status_code == 200 and picture.content in stored
        asked = client.post(
            f"/api/rounds/{round_['round_id']}/questions", headers=auth, json={"question": "Q?"}
        )
        assert asked.status_code == 201, asked.text
        assert model.seen == [picture.content]  # the model got the bytes from S3 too
        verdict = client.post(
            f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"}
        )
        assert verdict.status_code == 200, verdict.text

        for key in keys:  # images gone from the bucket: a 404, not a 500
            s3.client.delete_object(Bucket=BUCKET, Key=key)
        assert client.get(round_["image_url"], headers=auth).status_code == 404


def test_export_reads_images_from_s3_and_writes_to_s3(tmp_path: Path, s3: S3, env: dict[str, str]) -> None:
    images = S3Store(BUCKET, "gap/images", endpoint_url=s3.endpoint)
    images.put("ab/one.png", png_bytes(1))
    records = [
        Record(
            id=f"r{i}",
            image=images.url("ab/one.png"),
            image_id="one",
            messages=(Message("user", "What is it?"), Message("assistant", f"A square {i}.")),
            provenance=Provenance(source="gap"),
        )
        for i in range(2)
    ]
    write_records(tmp_path / "records.jsonl", records)
    out = f"s3://{BUCKET}/exports/first"
    result = CliRunner().invoke(
        app,
        ["data", "export", "--records", str(tmp_path / "records.jsonl"), "--format", "llava", "--out", out],
        env=env,
    )
    assert result.exit_code == 0, result.output
    keys = s3.keys("exports/first/")
    assert "exports/first/export.json" in keys and "exports/first/train.json" in keys
    back = tmp_path / "back"
    for key in keys:  # read it back as a consumer would, and check it
        LocalStore(back).put(key.removeprefix("exports/first/"), s3.read(key))
    manifest = json.loads((back / "export.json").read_text())
    assert manifest["format"] == "llava" and manifest["images"] == {"local": 1, "remote": 0}
    rows = json.loads((back / "train.json").read_text())
    assert (back / rows[0]["image"]).read_bytes() == png_bytes(1)
    assert validate_export(back).ok


@pytest.mark.parametrize("problem", ["missing bucket", "bad credentials"])
@pytest.mark.parametrize(
    "command", [["images", "add", "x.png", "--pool", "tainted"], ["serve", "--no-worker"]]
)
def test_unusable_storage_is_one_clear_line_at_start_up(
    s3: S3,
    env: dict[str, str],
    problem: str,
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.png").write_bytes(png_bytes(1))
    if problem == "missing bucket":
        env = {**env, "GAP_STORAGE_URL": "s3://no-such-bucket/gap"}
        expected = "the bucket 'no-such-bucket' does not exist"
    else:
        httpx.post(f"{s3.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
        expected = "access denied"
    result = CliRunner().invoke(app, command, env={**env, "GAP_MODEL": "openai:m"})
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: storage s3://"), result.output
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_a_dashboard_export_on_one_replica_downloads_from_another(
    tmp_path: Path, s3: S3, settings: Settings
) -> None:
    """Two replicas share the database and the bucket, not a disk: the export must live in S3."""
    shared = {"storage_url": f"s3://{BUCKET}/gap", "s3_endpoint_url": s3.endpoint, "admin_token": "t0ken"}
    first = settings.model_copy(update=shared)
    second = settings.model_copy(update={**shared, "data_dir": tmp_path / "other-machine"})
    seed_images(first, per_pool=3, images=S3Store(BUCKET, "gap/images", endpoint_url=s3.endpoint))
    careful_player_history(first)
    admin = {"Authorization": "Bearer t0ken"}
    with (
        TestClient(create_app(first, model=SeeingModel())) as one,
        TestClient(create_app(second, model=SeeingModel())) as two,
    ):
        made = one.post("/admin/api/export", headers=admin, json={"format": "llava"})
        assert made.status_code == 200, made.text
        body = made.json()
        assert body["records"] > 0 and body["folder"] == f"s3://{BUCKET}/gap/exports/{body['name']}"
        assert f"gap/exports/{body['name']}/export.json" in s3.keys("gap/exports/")
        assert not (first.data_dir / "exports").exists()
        archive = two.get(body["download"], headers=admin)
    assert archive.status_code == 200, archive.text
    bundle = zipfile.ZipFile(io.BytesIO(archive.content))
    assert {"export.json", "train.json", "records.jsonl"} <= set(bundle.namelist())
    pictures = [n for n in bundle.namelist() if n.startswith("images/")]
    assert pictures and all(bundle.read(n) in {png_bytes(s) for s in range(6)} for n in pictures)


def test_reference_answers_read_the_images_from_s3(s3: S3, settings: Settings) -> None:
    images = S3Store(BUCKET, "gap/images", endpoint_url=s3.endpoint)
    seed_images(settings, per_pool=2, images=images)
    factory = make_sessionmaker(make_engine(settings.resolved_database_url))
    careful_player_history(settings, rounds=6)
    with transaction(factory) as db:  # turns without a player's correction need the reference model
        asked = list(db.scalars(select(Turn.id).where(Turn.correction.is_(None))))
    model = SeeingModel()
    report = fill_references(factory, model, asked, images=images, backoff=0)
    assert asked and report.answered == len(asked) and report.failed == 0
    assert len(model.seen) == len(asked) and set(model.seen) <= {png_bytes(s) for s in range(4)}
