"""Profile discovery, TOML syntax errors, extends chains: sandbox/profiles/load.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sandbox.profiles.errors import ProfileError, ProfileNotFound
from sandbox.profiles.load import (
    MAX_DEPTH,
    RANK_BUNDLED,
    RANK_PROJECT,
    RANK_PROJECT_DIR,
    RANK_USER,
    Search,
    is_profile_reference,
    parse_toml,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    d = {"project": tmp_path / "proj", "user": tmp_path / "user", "bundled": tmp_path / "bnd"}
    for p in d.values():
        p.mkdir()
    return d


def search(d: dict[str, Path]) -> Search:
    return Search(str(d["project"]), str(d["user"]), str(d["bundled"]))


def put_everywhere(d: dict[str, Path], name: str) -> None:
    write(d["project"] / "sbx.toml", f"""
        [profiles.{name}]
        image = "project"
    """)
    write(d["project"] / ".sbx" / f"{name}.toml", 'image = "projectdir"\n')
    write(d["user"] / f"{name}.toml", 'image = "user"\n')
    write(d["bundled"] / f"{name}.toml", 'image = "bundled"\n')


# --- discovery ---------------------------------------------------------------------


def test_discovery_order_first_match_wins(dirs):
    put_everywhere(dirs, "py")
    assert search(dirs).load("py").image == "project"
    (dirs["project"] / "sbx.toml").unlink()
    assert search(dirs).load("py").image == "projectdir"
    (dirs["project"] / ".sbx" / "py.toml").unlink()
    assert search(dirs).load("py").image == "user"
    (dirs["user"] / "py.toml").unlink()
    prof = search(dirs).load("py")
    assert prof.image == "bundled"
    assert prof.origin == "bundled"
    assert prof.sources == [str(dirs["bundled"] / "py.toml")]


def test_ranks_and_shadowing_in_listing(dirs):
    put_everywhere(dirs, "py")
    write(dirs["bundled"] / "go.toml", 'image = "golang"\n')
    items = [(i.name, i.rank, i.shadowed) for i in search(dirs).all()]
    assert items == [("py", RANK_PROJECT, False), ("py", RANK_PROJECT_DIR, True),
                     ("py", RANK_USER, True), ("go", RANK_BUNDLED, False),
                     ("py", RANK_BUNDLED, True)]


def test_not_found_lists_where_it_looked(dirs):
    with pytest.raises(ProfileNotFound) as exc:
        search(dirs).load("nope")
    msg = exc.value.message
    assert "no profile named 'nope'" in msg
    assert "sbx.toml [profiles.nope]" in msg
    assert ".sbx/nope.toml" in msg
    assert str(dirs["user"] / "nope.toml") in msg
    assert exc.value.hint


def test_user_dir_defaults_to_xdg_config(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    write(tmp_path / "cfg" / "sbx" / "profiles" / "mine.toml", 'image = "alpine"\n')
    proj = tmp_path / "p"
    proj.mkdir()
    assert Search(str(proj)).load("mine").image == "alpine"


def test_path_to_a_single_profile_file(dirs):
    f = write(dirs["project"] / "envs" / "ci.toml", 'image = "debian"\n')
    prof = search(dirs).load("envs/ci.toml")
    assert prof.name == "ci"
    assert prof.origin == "file"
    assert search(dirs).load(str(f)).image == "debian"


def test_path_to_a_project_file_with_one_profile(dirs):
    write(dirs["project"] / "other" / "sbx.toml", '[profiles.x]\nimage = "debian"\n')
    assert search(dirs).load("other/sbx.toml").name == "x"


def test_path_to_a_project_file_with_several_profiles_is_refused(dirs):
    write(dirs["project"] / "o" / "sbx.toml", """
        [profiles.a]
        image = "debian"
        [profiles.b]
        image = "debian"
    """)
    with pytest.raises(ProfileError, match=r"holds 2 profiles \(a, b\)"):
        search(dirs).load("o/sbx.toml")


def test_missing_profile_file(dirs):
    with pytest.raises(ProfileError, match=r"nothere.toml: no such profile file"):
        search(dirs).load("nothere.toml")


def test_invalid_name(dirs):
    with pytest.raises(ProfileError, match="invalid profile name"):
        search(dirs).load("a/b")


# --- profile or image? --------------------------------------------------------------


def test_is_profile_reference_rule(dirs, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(dirs["user"].parent / "nocfg"))
    write(dirs["project"] / "sbx.toml", '[profiles.dev]\nimage = "debian"\n')
    cwd = str(dirs["project"])
    assert is_profile_reference("dev", cwd)
    assert is_profile_reference("python", cwd)  # bundled with sbx
    assert not is_profile_reference("python", cwd, bundled=False)
    assert not is_profile_reference("busybox", cwd)
    assert not is_profile_reference("python:3.12", cwd)
    assert not is_profile_reference("docker.io/library/python", cwd)
    assert not is_profile_reference("python@sha256:" + "a" * 64, cwd)
    assert is_profile_reference("envs/ci.toml", cwd)  # a path, even a missing one


def test_broken_project_file_still_claims_its_names(dirs):
    write(dirs["project"] / "sbx.toml", '[profiles.dev]\nimage = \n')
    s = search(dirs)
    assert s.exists("dev")  # so that the run reports the syntax error
    assert not s.exists("busybox")


def test_no_toml_parse_without_project_file(dirs, monkeypatch):
    import tomllib

    def boom(*a, **k):
        raise AssertionError("parsed")

    monkeypatch.setattr(tomllib, "loads", boom)
    assert not search(dirs).exists("busybox")


# --- syntax errors -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "where"), [
    ('[profiles.a]\nimage = "x"\nimage = "y"\n', "sbx.toml:3:"),  # duplicate key
    ('[profiles.a]\nimage = x\n', "sbx.toml:2:9:"),  # bare word value
    ('[profiles.a\n', "sbx.toml:1:"),
    ('[profiles.a]\nsetup = ["a",\n', "sbx.toml:3:1:"),  # at end of document
])
def test_syntax_errors_name_file_line_column(dirs, text, where):
    write(dirs["project"] / "sbx.toml", text)
    with pytest.raises(ProfileError) as exc:
        search(dirs).load("a")
    assert exc.value.message.startswith(where), exc.value.message
    assert "(at line" not in exc.value.message


def test_parse_toml_message_shape():
    with pytest.raises(ProfileError) as exc:
        parse_toml('a = "\\q"\n', "f.toml")
    assert exc.value.message == "f.toml:1:8: Unescaped '\\' in a string"


def test_not_utf8(dirs):
    (dirs["project"] / "sbx.toml").write_bytes(b'[profiles.a]\nimage = "\xff"\n')
    with pytest.raises(ProfileError, match=r"sbx.toml:2: not UTF-8"):
        search(dirs).load("a")


def test_top_level_keys_of_project_file(dirs):
    write(dirs["project"] / "sbx.toml", """
        image = "debian"
        [profile.dev]
        image = "debian"
    """)
    with pytest.raises(ProfileError) as exc:
        search(dirs).load("dev")
    assert exc.value.problems == [
        "sbx.toml:1: image: profile keys go in a [profiles.NAME] table in sbx.toml",
        'sbx.toml:2: profile: unknown key (did you mean "profiles"?) '
        "(sbx.toml holds [profiles.NAME] tables)",
    ]


def test_schema_problems_carry_file_and_line(dirs):
    write(dirs["project"] / "sbx.toml", """
        [profiles.python]
        image = "python:3.12"

        [profiles.python.limits]
        memory = 12
    """)
    with pytest.raises(ProfileError) as exc:
        search(dirs).load("python")
    assert exc.value.problems == [
        'sbx.toml:5: profiles.python.limits.memory: expected a size like "2g", got 12']


# --- extends ------------------------------------------------------------------------


def test_extends_merges_parent_first(dirs):
    write(dirs["bundled"] / "base.toml", """
        image = "debian"
        setup = ["one"]
        env = { A = "1", B = "1" }
    """)
    write(dirs["project"] / "sbx.toml", """
        [profiles.dev]
        extends = "base"
        setup = ["two"]
        env = { B = "2" }
    """)
    prof = search(dirs).load("dev")
    assert prof.data["image"] == "debian"
    assert prof.data["setup"] == ["one", "two"]
    assert prof.data["env"] == {"A": "1", "B": "2"}
    assert "extends" not in prof.data
    assert prof.chain == ["dev", "base"]


def test_extending_own_name_continues_after_itself(dirs):
    write(dirs["bundled"] / "python.toml", 'image = "python:3.12"\nsetup = ["b"]\n')
    write(dirs["user"] / "python.toml", 'extends = "python"\nsetup = ["u"]\n')
    write(dirs["project"] / "sbx.toml", """
        [profiles.python]
        extends = "python"
        setup = ["p"]
    """)
    prof = search(dirs).load("python")
    assert prof.data["setup"] == ["b", "u", "p"]
    assert prof.sources == [str(dirs["project"] / "sbx.toml"), str(dirs["user"] / "python.toml"),
                            str(dirs["bundled"] / "python.toml")]


def test_extends_own_name_with_nothing_after_is_an_error(dirs):
    write(dirs["bundled"] / "solo.toml", 'extends = "solo"\n')
    with pytest.raises(ProfileError, match=r"extends: no profile named 'solo'.*its own place"):
        search(dirs).load("solo")


def test_extends_a_path_relative_to_the_file(dirs):
    write(dirs["project"] / ".sbx" / "common.toml", 'image = "debian"\nworkdir = "/w"\n')
    write(dirs["project"] / ".sbx" / "dev.toml", 'extends = "common.toml"\n')
    assert search(dirs).load("dev").data["workdir"] == "/w"


def test_extends_cycle_names_the_chain(dirs):
    write(dirs["project"] / "sbx.toml", """
        [profiles.a]
        extends = "b"
        [profiles.b]
        extends = "c"
        [profiles.c]
        extends = "a"
    """)
    with pytest.raises(ProfileError) as exc:
        search(dirs).load("a")
    assert exc.value.message == (
        "extends cycle: a (sbx.toml) -> b (sbx.toml) -> c (sbx.toml) -> a (sbx.toml)")


def test_extends_self_cycle_through_files(dirs):
    write(dirs["project"] / ".sbx" / "x.toml", 'extends = "y.toml"\n')
    write(dirs["project"] / ".sbx" / "y.toml", 'extends = "x.toml"\n')
    with pytest.raises(ProfileError, match=r"extends cycle: x .* -> y .* -> x"):
        search(dirs).load("x")


def test_extends_too_deep(dirs):
    lines = []
    for i in range(MAX_DEPTH + 2):
        lines.append(f'[profiles.p{i}]\nextends = "p{i + 1}"\n')
    lines.append(f'[profiles.p{MAX_DEPTH + 2}]\nimage = "debian"\n')
    write(dirs["project"] / "sbx.toml", "\n".join(lines))
    with pytest.raises(ProfileError, match=f"extends chain longer than {MAX_DEPTH}"):
        search(dirs).load("p0")
    assert search(dirs).load(f"p{MAX_DEPTH + 2 - MAX_DEPTH}").image == "debian"


def test_extends_missing_parent_names_the_line(dirs):
    write(dirs["project"] / "sbx.toml", """
        [profiles.dev]
        image = "debian"
        extends = "ghost"
    """)
    with pytest.raises(ProfileError) as exc:
        search(dirs).load("dev")
    assert exc.value.message.startswith(
        "sbx.toml:3: profiles.dev.extends: no profile named 'ghost' (looked in")


def test_problems_in_the_parent_name_the_parents_file(dirs):
    write(dirs["bundled"] / "base.toml", 'image = "debian"\nnetwork = "bridge"\n')
    write(dirs["project"] / "sbx.toml", '[profiles.dev]\nextends = "base"\n')
    with pytest.raises(ProfileError) as exc:
        search(dirs).load("dev")
    assert exc.value.message == (
        f'{dirs["bundled"] / "base.toml"}:2: network: expected "host" or "none", got "bridge"')


def test_merged_profile_needs_an_image(dirs):
    write(dirs["project"] / "sbx.toml", '[profiles.dev]\nworkdir = "/w"\n')
    with pytest.raises(ProfileError, match=r"sbx.toml:1: profiles.dev: no image"):
        search(dirs).load("dev")


# --- check (validate) ----------------------------------------------------------------


def test_check_lists_every_profile_and_every_problem(dirs):
    write(dirs["project"] / "sbx.toml", """
        [profiles.good]
        image = "debian"
        [profiles.bad]
        image = "debian"
        user = "Bad User"
        netwrok = "none"
    """)
    write(dirs["user"] / "mine.toml", 'image = "alpine"\n')
    write(dirs["bundled"] / "skipped.toml", 'image = "x"\nbogus = 1\n')
    results = {r.name: r for r in search(dirs).check([])}
    assert set(results) == {"good", "bad", "mine"}
    assert results["good"].error is None and results["mine"].error is None
    assert len(results["bad"].error.problems) == 2


def test_check_a_project_file_by_path_checks_each_profile(dirs):
    write(dirs["project"] / "x" / "sbx.toml", """
        [profiles.a]
        image = "debian"
        [profiles.b]
        image = 3
    """)
    results = search(dirs).check(["x/sbx.toml"])
    assert [(r.name, r.error is None) for r in results] == [("a", True), ("b", False)]


def test_check_a_syntax_error(dirs):
    write(dirs["project"] / "sbx.toml", "[profiles.a\n")
    [result] = search(dirs).check([])
    assert result.error.message.startswith("sbx.toml:1:")


@pytest.mark.parametrize("text", [
    "dev", "py3.12", "a_b-c", "A", "9lives", "x" * 64, "x" * 65, "", ".hidden", "-x", "_x",
    "a/b", "a:b", "a@b", "a b", "é", "ci.toml"])
def test_bare_name_check_agrees_with_the_schema(text):
    from sandbox.profiles.load import _is_bare_name
    from sandbox.profiles.schema import NAME_RE

    assert _is_bare_name(text) == (bool(NAME_RE.fullmatch(text)) and not text.endswith(".toml"))


def test_a_broken_profile_file_still_names_a_profile(dirs):
    write(dirs["project"] / ".sbx" / "ci.toml", "image = \n")
    s = search(dirs)
    assert s.exists("ci")
    with pytest.raises(ProfileError, match=r"\.sbx/ci\.toml:1:"):
        s.load("ci")
