"""How image listings look: podman's CREATED and SIZE wording, the images table,
--format json and Go templates, and the progress renderers."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox.cli import images as ci
from sandbox.images.progress import Bars, Lines, Quiet, for_stream, human_bytes
from sandbox.images.store import Store
from sandbox.registry import media

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (120, "2 minutes"),
        (59 * 60, "59 minutes"),
        (60 * 60, "About an hour"),
        (3 * 3600, "3 hours"),
        (47 * 3600, "47 hours"),
        (3 * 86400, "3 days"),
        (15 * 86400, "2 weeks"),
        (70 * 86400, "2 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_human_duration_as_go_units(seconds: float, text: str) -> None:
    assert ci.human_duration(seconds) == text


def test_time_ago() -> None:
    assert ci.time_ago(NOW - timedelta(minutes=2), NOW) == "2 minutes ago"
    assert ci.time_ago(None, NOW) == "<unknown>"


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1 kB"), (1982547, "1.98 MB"), (5_850_000, "5.85 MB"),
     (123_456_789_012, "123 GB")],
)
def test_human_size_as_podman(size: int, text: str) -> None:
    assert ci.human_size(size) == text


def test_templates() -> None:
    data = {"Id": "abc", "Config": {"Cmd": ["sh", "-c", "x"], "Env": None},
            "RepoTags": [], "Labels": {"b": "2", "a": "1"}, "Size": 5, "Flag": True}
    render = ci.render_template
    assert render("{{.Id}} {{.Config.Cmd}}", data) == "abc [sh -c x]"
    assert render("{{ .Size }}\\t{{.Flag}}", data) == "5\ttrue"
    assert render("{{json .Config.Cmd}}", data) == '["sh", "-c", "x"]'
    assert render("{{.Labels}}", data) == "map[a:1 b:2]"
    assert render("{{.RepoTags}} {{.Config.Env}}", data) == "[] <nil>"
    assert render("{{.Nope}}", data) == "<no value>"
    assert render("{{upper .Id}}", data) == "ABC"
    assert ci.template_header("{{.Repository}}\\t{{.Tag}}") == "REPOSITORY\tTAG"


def test_unsupported_template() -> None:
    with pytest.raises(Exception, match="unsupported template"):
        ci.render_template("{{range .RepoTags}}x{{end}}", {})


# --- the images listing ---------------------------------------------------------------


def _image(store: Store, names: list[str], created: str, size_files: int = 0) -> str:
    config = json.dumps({"created": created, "architecture": "amd64", "os": "linux",
                         "config": {"Labels": {"l": "v"}},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    cid = store.put_blob_bytes(config)
    manifest = store.put_blob_bytes(media.Manifest(
        media.OCI_MANIFEST, media.Descriptor(media.OCI_CONFIG, cid, len(config)), ()).to_json())
    return store.add_image(config_digest=cid, manifest_digest=manifest, chain_ids=[],
                           names=names).id


@pytest.fixture
def listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, dict[str, str]]:
    root = tmp_path / "store"
    store = Store(root, sync_layers=False)
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    new = (datetime.now(UTC) - timedelta(minutes=2, seconds=5)).isoformat()
    ids = {
        "old": _image(store, ["r.io/old:1", "r.io/old:2"], old),
        "new": _image(store, ["docker.io/library/busybox:latest"], new),
        "none": _image(store, [], (datetime.now(UTC) - timedelta(days=5)).isoformat()),
    }
    monkeypatch.setattr(ci.ImageContext, "store", property(lambda self: Store(root)))
    return store, ids


def run_cli(*args: str) -> str:
    from sandbox.cli.image import image

    result = CliRunner().invoke(image, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_images_table(listing: tuple[Store, dict[str, str]]) -> None:
    _store, ids = listing
    lines = run_cli("ls").splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    # Newest first; one row per tag; an image without names is <none> <none>.
    assert lines[1].split() == ["docker.io/library/busybox", "latest", ids["new"][7:19],
                                "2", "minutes", "ago", "0", "B"]
    assert lines[2].split()[:3] == ["r.io/old", "1", ids["old"][7:19]]
    assert lines[3].split()[:2] == ["r.io/old", "2"]
    assert lines[4].split()[:2] == ["<none>", "<none>"]
    assert " 3 days ago " in lines[2]
    # Columns line up: IMAGE ID starts at the same place on every row.
    col = lines[0].index("IMAGE ID")
    assert all(line[col:col + 12] in (i[7:19] for i in ids.values()) for line in lines[1:])


def test_images_quiet_json_and_templates(listing: tuple[Store, dict[str, str]]) -> None:
    _store, ids = listing
    assert run_cli("ls", "-q").split() == [ids["new"][7:19], ids["old"][7:19], ids["none"][7:19]]
    doc = json.loads(run_cli("ls", "--format", "json"))
    assert [d["Id"] for d in doc] == [ids["new"][7:], ids["old"][7:], ids["none"][7:]]
    assert doc[1]["RepoTags"] == ["r.io/old:1", "r.io/old:2"]
    assert doc[1]["RepoDigests"] == [f"r.io/old@{_store.get_image(ids['old']).manifest_digest}"]
    assert doc[1]["Labels"] == {"l": "v"}
    assert doc[2]["RepoTags"] is None
    assert run_cli("ls", "--format", "{{.Repository}}:{{.Tag}}", "r.io/old").split() == [
        "r.io/old:1", "r.io/old:2"]
    out = run_cli("ls", "--format", "table {{.ID}}\\t{{.Tag}}", "busybox")
    assert out.splitlines() == ["ID\tTAG", f"{ids['new'][7:19]}\tlatest"]
    assert run_cli("ls", "--no-trunc", "-q", "busybox").split() == [ids["new"]]


def test_image_inspect(listing: tuple[Store, dict[str, str]]) -> None:
    _store, ids = listing
    doc = json.loads(run_cli("inspect", "r.io/old:1"))
    (item,) = doc
    assert item["Id"] == ids["old"][7:]
    assert item["RepoTags"] == ["r.io/old:1", "r.io/old:2"]
    assert item["Os"] == "linux" and item["Architecture"] == "amd64"
    assert item["Config"] == {"Labels": {"l": "v"}}
    assert item["RootFS"] == {"Type": "layers", "Layers": []}
    assert run_cli("inspect", "--format", "{{.Id}} {{.Config.Labels}}", "busybox").strip() == (
        f"{ids['new'][7:]} map[l:v]"
    )


# --- progress ----------------------------------------------------------------------------


def test_lines_progress() -> None:
    out = io.StringIO()
    lines = Lines(out)
    lines.start("sha256:aa", "Copying blob sha256:aa", 10)
    lines.update("sha256:aa", 5, 10)
    lines.note("Copying config sha256:cc done")
    lines.finish("sha256:aa")
    assert out.getvalue() == "Copying config sha256:cc done\nCopying blob sha256:aa done\n"


def test_bars_redraw_in_place() -> None:
    out = io.StringIO()
    clock = iter(x * 0.05 for x in range(100))
    bars = Bars(out, clock=lambda: next(clock), width=80)
    bars.start("a", "Copying blob a", 2048)
    bars.start("b", "Copying blob b", None)
    bars.update("a", 1024, 2048)  # within 0.1 s of the last draw: skipped
    bars.update("a", 1536, 2048)
    bars.finish("a")
    text = out.getvalue()
    assert "\x1b[2A" in text  # back up over the two rows drawn
    assert "[" + "=" * 18 + ">" + "-" * 5 + "] 1.5KiB / 2.0KiB" in text
    assert text.endswith("\r\x1b[2KCopying blob a done\n\r\x1b[2KCopying blob b 0B\n")
    assert all(len(line) < 90 for line in text.split("\n"))


def test_for_stream() -> None:
    assert isinstance(for_stream(io.StringIO()), Lines)
    assert isinstance(for_stream(io.StringIO(), quiet=True), Quiet)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(for_stream(Tty()), Bars)
    assert human_bytes(512) == "512B" and human_bytes(3 * 1024 * 1024) == "3.0MiB"
