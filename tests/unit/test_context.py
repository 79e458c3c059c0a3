"""The build context as the build sees it: .dockerignore rules, hashing and staging."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ci.definitions.context import context_digest, context_files, is_ignored, parse_dockerignore, stage_context
from tests.support.definitions import write_tree

TREE = {
    "Dockerfile": "FROM base\n",
    "container.yaml": "version: '1'\n",
    "tests/run.sh": "echo test\n",
    "tests/data/input.txt": "data\n",
    "app.py": "print()\n",
    "debug.log": "log\n",
    "keep.log": "keep\n",
    "src/main.c": "int main;\n",
    "src/deep.log": "nested log\n",
    "src/tmp/cache.o": "o\n",
    "tmp/scratch": "s\n",
    "build/out.bin": "bin\n",
    "build/keep.txt": "k\n",
    "sub/tests/fixture.txt": "not the tests folder\n",
}


def visible(root: Path) -> list[str]:
    return [relative for relative, _ in context_files(root)]


@pytest.mark.parametrize(("rules", "path", "ignored"), [
    ("*.log", "debug.log", True),
    ("*.log", "src/deep.log", False),
    ("**/*.log", "src/deep.log", True),
    ("**/tmp", "tmp", True),
    ("**/tmp", "tmp/scratch", True),
    ("**/tmp", "src/tmp/cache.o", True),
    ("**/tmp", "src/tmpfile", False),
    ("build/", "build/out.bin", True),
    ("build/", "build", True),
    ("build/", "builder.py", False),
    ("/secret", "secret", True),
    ("file?.txt", "file1.txt", True),
    ("file?.txt", "file10.txt", False),
    ("[ab].txt", "a.txt", True),
    ("[!ab].txt", "a.txt", False),
    ("[!ab].txt", "c.txt", True),
    ("*.log\n!keep.log", "keep.log", False),
    ("*.log\n!keep.log", "debug.log", True),
    ("!keep.log\n*.log", "keep.log", True),
    ("build\n!build/keep.txt", "build/keep.txt", False),
    ("build\n!build/keep.txt", "build/out.bin", True),
    ("# a comment\n\n  *.log  ", "debug.log", True),
    ("# *.log", "debug.log", False),
    ("./src/../app.py", "app.py", True),
])
def test_dockerignore_rules(rules: str, path: str, ignored: bool) -> None:
    assert is_ignored(path, parse_dockerignore(rules)) is ignored


def test_dockerignore_dot_and_slash_rules_are_dropped() -> None:
    assert parse_dockerignore(".\n/\n#x\n\n") == []


def test_context_without_dockerignore_has_everything_but_tests_and_container_yaml(tmp_path: Path) -> None:
    write_tree(tmp_path, TREE)
    files = visible(tmp_path)
    assert set(files) == {"Dockerfile", "app.py", "debug.log", "keep.log", "src/main.c", "src/deep.log",
                          "src/tmp/cache.o", "tmp/scratch", "build/out.bin", "build/keep.txt",
                          "sub/tests/fixture.txt"}


def test_context_files_are_yielded_in_a_stable_order(tmp_path: Path) -> None:
    write_tree(tmp_path, TREE)
    first = visible(tmp_path)
    assert first == visible(tmp_path)
    assert [path for path in first if "/" not in path] == sorted(path for path in first if "/" not in path)


def test_context_honours_dockerignore(tmp_path: Path) -> None:
    write_tree(tmp_path, {**TREE, ".dockerignore": "*.log\n!keep.log\n**/tmp\nbuild/\n"})
    assert set(visible(tmp_path)) == {".dockerignore", "Dockerfile", "app.py", "keep.log", "src/main.c",
                                      "src/deep.log", "sub/tests/fixture.txt"}


def test_context_reincludes_a_file_under_an_ignored_folder(tmp_path: Path) -> None:
    write_tree(tmp_path, {**TREE, ".dockerignore": "build\n!build/keep.txt\n"})
    files = set(visible(tmp_path))
    assert "build/keep.txt" in files
    assert "build/out.bin" not in files


@pytest.mark.parametrize("rules", ["", "!tests\n!tests/run.sh\n!container.yaml\n", "*\n!tests/**\n"])
def test_context_never_has_tests_or_container_yaml(tmp_path: Path, rules: str) -> None:
    write_tree(tmp_path, {**TREE, ".dockerignore": rules})
    for relative in visible(tmp_path):
        assert relative != "container.yaml"
        assert not relative.startswith("tests/")


def test_context_digest_is_stable(tmp_path: Path) -> None:
    write_tree(tmp_path, TREE)
    assert context_digest(tmp_path) == context_digest(tmp_path)
    other = tmp_path.parent / (tmp_path.name + "-copy")
    write_tree(other, TREE)
    assert context_digest(other) == context_digest(tmp_path), "the folder's location is not part of it"


@pytest.mark.parametrize("change", ["edit", "add", "remove", "rename", "chmod"])
def test_context_digest_changes_with_visible_files(tmp_path: Path, change: str) -> None:
    write_tree(tmp_path, TREE)
    before = context_digest(tmp_path)
    target = tmp_path / "src/main.c"
    if change == "edit":
        target.write_text("int main(void);\n")
    elif change == "add":
        (tmp_path / "src/extra.h").write_text("\n")
    elif change == "remove":
        target.unlink()
    elif change == "rename":
        target.rename(tmp_path / "src/main2.c")
    else:
        target.chmod(0o755)
    assert context_digest(tmp_path) != before


@pytest.mark.parametrize("path", ["tests/run.sh", "tests/data/input.txt", "container.yaml", "debug.log",
                                  "tmp/scratch"])
def test_context_digest_ignores_invisible_files(tmp_path: Path, path: str) -> None:
    write_tree(tmp_path, {**TREE, ".dockerignore": "*.log\n**/tmp\n"})
    before = context_digest(tmp_path)
    (tmp_path / path).write_text("changed\n")
    assert context_digest(tmp_path) == before


def test_context_digest_sees_symlink_targets(tmp_path: Path) -> None:
    write_tree(tmp_path, TREE)
    os.symlink("app.py", tmp_path / "link")
    assert "link" in visible(tmp_path)
    before = context_digest(tmp_path)
    (tmp_path / "link").unlink()
    os.symlink("src/main.c", tmp_path / "link")
    assert context_digest(tmp_path) != before


def test_stage_context_materialises_exactly_the_visible_files(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", {**TREE, ".dockerignore": "*.log\n!keep.log\n**/tmp\n"})
    os.symlink("app.py", source / "link")
    destination = tmp_path / "staged"
    stage_context(source, destination)
    staged = sorted(p.relative_to(destination).as_posix() for p in destination.rglob("*")
                    if p.is_file() or p.is_symlink())
    assert staged == sorted(visible(source))
    assert (destination / "src/main.c").read_text() == "int main;\n"
    assert os.readlink(destination / "link") == "app.py"
    assert context_digest(destination) == context_digest(source)
