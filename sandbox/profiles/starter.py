"""The starter sbx.toml that `sbx profile init` writes, guessed from the project's files.

Like `cargo init` and `npm init`, it looks at what is there: pyproject.toml,
requirements.txt, setup.py or Pipfile mean Python; package.json Node; go.mod Go;
Cargo.toml Rust; nothing known, plain Debian. The file has two profiles: `dev`
(extends the bundled one for the language; `sbx run dev` is a shell) and `test`
(extends dev and runs the language's usual test command: `sbx run test`).
Reads only which files exist; the text is a template, with comments, so it is not
built with tomlwrite (which writes no comments inside).
"""

from __future__ import annotations

import os

# (language = the bundled profile's name, files that show it, its test command)
LANGUAGES: tuple[tuple[str, tuple[str, ...], list[str]], ...] = (
    ("python", ("pyproject.toml", "requirements.txt", "setup.py", "Pipfile"),
     ["python", "-m", "pytest"]),
    ("node", ("package.json",), ["npm", "test"]),
    ("go", ("go.mod",), ["go", "test", "./..."]),
    ("rust", ("Cargo.toml",), ["cargo", "test"]),
)


def detect(project_dir: str) -> list[str]:
    """The languages the project's files show, in LANGUAGES order."""
    return [lang for lang, files, _ in LANGUAGES
            if any(os.path.isfile(os.path.join(project_dir, f)) for f in files)]


def _toml_list(items: list[str]) -> str:
    from sandbox.profiles.tomlwrite import value

    return value(items)


def starter(project_dir: str) -> tuple[str, str]:
    """(the sbx.toml text, the profile it extends) for the project in project_dir."""
    found = detect(project_dir)
    base = found[0] if found else "debian"
    test = next((cmd for lang, _, cmd in LANGUAGES if lang == base), None)
    project = os.path.basename(os.path.abspath(project_dir)) or "project"
    lines = [
        f"# sbx.toml: development environments for {project} (docs/profiles.md).",
        "#   sbx run dev             a shell in the project, your files owned by you",
        "#   sbx run dev -- CMD      run CMD there",
        "#   sbx lock                pin the images' digests in sbx.lock (commit it)",
        "#   sbx profile show dev    the profile with everything it extends",
    ]
    if len(found) > 1:
        lines.append(f"# Found files of {', '.join(found)}: started from {base}.")
    lines += [
        "",
        "[profiles.dev]",
        f'extends = "{base}"',
        f'description = "{project}: {base} development shell"',
    ]
    if base == "python" and os.path.isfile(os.path.join(project_dir, "requirements.txt")):
        lines += [
            "# Run once, kept as a layer; run again when an input file changes.",
            'setup = ["pip install -r requirements.txt"]',
            'inputs = ["requirements.txt"]',
        ]
    else:
        lines += [
            "# Setup steps run once and are kept as a layer, rebuilt when an input changes:",
            '# setup = ["apt-get update && apt-get install -y --no-install-recommends make"]',
            '# inputs = []',
        ]
    lines += [
        "# env = { DEBUG = \"1\", TOKEN = \"${TOKEN}\" }   # ${VAR}: from your environment",
        "# limits = { memory = \"4g\", cpus = 2 }",
        "# forward = { ssh_agent = true, git_config = true }",
    ]
    if test is not None:
        lines += [
            "",
            "[profiles.test]",
            'extends = "dev"',
            'description = "run the tests in a fresh container"',
            f"command = {_toml_list(test)}",
        ]
    return "\n".join(lines) + "\n", base
