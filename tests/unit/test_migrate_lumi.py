"""`inv migrate.lumi`: LUMI-style recipes (our own, tests/support/lumi_layout.py) written as our definitions.

The proof of fidelity runs each recipe's own build-*.sh with bash and a recording $DOCKERBUILD,
and compares what it composed into $DOCKERFILE_TMP and the build args it passed with the
composed Dockerfile and build args of the migrated definition.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci.definitions import load_catalog
from ci.definitions.render import render
from ci.migrate import lumi
from ci.migrate.lumi import MigrationError, read_build_script, read_test_defaults
from tests.support.lumi_layout import (
    HOST_TEST,
    REFUSED,
    REFUSED_LINES,
    Layout,
    run_build_script,
    tree_state,
    write_checkout,
)
from tests.support.paths import PROJECT_DIR


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return write_checkout(tmp_path / "LUMI-containers")


def definitions(out: Path, app: str) -> dict[str, Any]:
    data = yaml.safe_load((out / "amd64" / app / "container.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def variants(out: Path, app: str) -> dict[str, dict[str, Any]]:
    return {variant["suffix"]: variant for variant in definitions(out, app)["variants"]}


def inv_render(definitions: Path, image: str, out: Path) -> tuple[bytes, dict[str, str]]:
    """What `inv render IMAGE --out DIR` writes (the composed Dockerfile), and the build args it reports."""
    process = _inv("render", image, "--definitions", str(definitions), "--out", str(out), "--json")
    assert process.returncode == 0, process.stderr
    data = json.loads(process.stdout)
    return Path(data["file"]).read_bytes(), data["build_args"]


def rendered_files(definitions: Path, out: Path) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Every image's recipe as `inv render --out` writes it (the same call, in this process), with its build args."""
    catalog = load_catalog(definitions)
    assert catalog.all_problems() == []
    out_files = {}
    for spec in catalog.images.values():
        rendered = render(catalog, spec.name)
        out_files[spec.name] = (rendered.write(out).read_bytes(), dict(spec.build_args))
    return out_files


# --------------------------------------------------------------------------------------------
# Fidelity: the recipes' own scripts against the migrated definitions
# --------------------------------------------------------------------------------------------


def test_every_migrated_recipe_composes_the_same_bytes_and_build_args_as_its_script(
        layout: Layout, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = lumi.migrate(layout.root, out, partial=True)
    assert report.written and report.ok
    migrated = {recipe.file: recipe for recipe in report.recipes if recipe.status == "migrated"}
    assert sorted(migrated) == sorted(layout.migrated_scripts)
    rendered = rendered_files(out, tmp_path / "rendered")
    assert inv_render(out, "toolbox-v1", tmp_path / "inv-rendered") == rendered["toolbox-v1"]
    compared = 0
    for relative in layout.migrated_scripts:
        recorded = run_build_script(layout.root, relative, tmp_path / "work")
        app = lumi.derive_name(Path(relative).parent.name)
        by_suffix = variants(out, app)
        recipe = migrated[relative]
        assert len(recipe.images) == len(recorded.builds), relative
        for call, image in enumerate(recipe.images):
            variant = by_suffix[image[len(app) + 1:]]
            dockerfile, build_args = rendered[image]
            assert dockerfile == recorded.dockerfile, image
            assert build_args == recorded.build_args(call) == variant.get("build_args", {}), image
            variant_name = Path(relative).name[len("build-"):-len(".sh")]
            tag_suffix = recorded.tag(call).split(":", 1)[1][len(variant_name):]
            assert variant["suffix"] == lumi.derive_name(variant_name + tag_suffix)
            compared += 1
    assert compared == 5  # toolbox v1, v2 (two images), v3, Science_App


def test_fragments_after_the_body_and_several_variants_of_one_app(layout: Layout, tmp_path: Path) -> None:
    out = tmp_path / "out"
    lumi.migrate(layout.root, out, partial=True)
    toolbox = variants(out, "toolbox")
    assert sorted(toolbox) == ["v1", "v2-extra", "v2-extra-extra-0.9", "v3"]
    assert toolbox["v1"]["compose"] == ["common/Dockerfile.header", "common/Dockerfile.tools", "$DOCKERFILE",
                                        "common/Dockerfile.env-a", "common/Dockerfile.env-b",
                                        "common/Dockerfile.runtime"]
    assert toolbox["v1"]["dockerfile"] == "build-v1.docker"
    assert toolbox["v3"]["compose"][-2:] == ["common/Dockerfile.env-a", "common/Dockerfile.env-a"]
    assert toolbox["v1"]["build_args"] == {"TOOL_VERSION": "1.2.3", "GREETING": "hello world", "LEVEL": "high",
                                           "DERIVED": "plain-4.5+build", "FIXED": "0"}
    assert toolbox["v2-extra"]["build_args"]["EXTRA_VERSION"] == ""
    assert toolbox["v2-extra-extra-0.9"]["build_args"]["EXTRA_VERSION"] == "0.9"
    # the shared build context: the app folder's other files, without scripts, tests and leftovers
    context = sorted(p.name for p in (out / "amd64" / "toolbox").iterdir())
    assert context == ["build-v1.docker", "build-v2-Extra.docker", "build-v3.docker", "container.yaml",
                       "notes.txt", "tests"]
    # common/ once, referenced, never copied per recipe
    assert sorted(p.name for p in (out / "common").iterdir()) == sorted(
        p.name for p in (layout.root / "RecipesDocker" / "common").iterdir())
    assert not list(out.glob("amd64/*/Dockerfile.header"))
    assert sorted(variants(out, "science_app")) == ["rocm-1.0"]


def test_the_test_is_a_host_side_test_with_the_transfer_scripts_resources(layout: Layout, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = lumi.migrate(layout.root, out, partial=True)
    toolbox = variants(out, "toolbox")
    for suffix in ("v1", "v2-extra", "v2-extra-extra-0.9", "v3"):
        (test,) = toolbox[suffix]["tests"]
        assert test == {"name": "lumi", "script": "tests/build-v1.test", "run": "host",
                        "slurm": {"nodes": 1, "ntasks": 2, "time": "0:05:00", "extra": ["--exclusive"]}}
    assert definitions(out, "toolbox")["tests"] == []
    # symlinked .test files stay one file, unchanged and executable
    tests = out / "amd64" / "toolbox" / "tests"
    assert [p.name for p in tests.iterdir()] == ["build-v1.test"]
    assert (tests / "build-v1.test").read_text(encoding="utf-8") == HOST_TEST
    assert os.access(tests / "build-v1.test", os.X_OK)
    assert variants(out, "science_app")["rocm-1.0"]["tests"] == []  # it has no .test
    notes = [str(note) for note in report.notes]
    assert any("/opt/site, /usr/lib64/libsite.so.1" in note and "ci.site.binds" in note for note in notes)
    assert any("--cpu-bind=mask_cpu:0x3,0x30" in note for note in notes)


def test_helper_files_and_def_recipes(layout: Layout, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = lumi.migrate(layout.root, out, partial=True)
    helper = out / "amd64" / "h"
    assert sorted(p.name for p in helper.iterdir()) == ["Dockerfile", "container.yaml", "site-env.txt"]
    assert (helper / "Dockerfile").read_bytes() == (layout.root / "RecipesDocker/helper-files/Dockerfile").read_bytes()
    assert (out / "amd64" / "my_tool.def").read_bytes() == (layout.root / "Recipes/MY_TOOL.def").read_bytes()
    assert {item["name"]: item["kind"] for item in report.definitions} == {
        "h": "site-environment image", "my_tool": "singularity .def"}


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


def test_untranslatable_lines_are_reported_with_number_and_text_and_nothing_is_written(
        layout: Layout, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = lumi.migrate(layout.root, out)
    assert not report.ok and not report.written and not out.exists()
    (refused,) = report.refused
    assert refused.file == layout.refused_script
    lines = REFUSED.split("\n")
    expected = {lines.index(text) + 1: text.strip() for text in REFUSED_LINES}
    assert {problem.line: problem.text.strip() for problem in refused.problems} == expected
    assert all(problem.file == layout.refused_script for problem in refused.problems)
    assert "--no-cache" in next(p.message for p in refused.problems if "--no-cache" in p.text)
    # with --partial the others are written and the refused one is listed
    partial = lumi.migrate(layout.root, out, partial=True)
    assert partial.ok and partial.written
    assert not (out / "amd64" / "zz-refused").exists()
    assert partial.counts()["recipes_refused"] == 1


@pytest.mark.parametrize(("line", "message"), [
    ("export DOCKER_BUILDKIT=0", "'export' is shell beyond"),
    ("cd ..", "'cd' is shell beyond"),
    ("VERSION=$HOME", "$HOME is not set by the script"),
    ("X='a b'\ncat ../common/a $DOCKERFILE > $DOCKERFILE_TMP\n$DOCKERBUILD -f $DOCKERFILE_TMP --build-arg X=$X "
     "-t $TAG .", "which bash would split or expand"),
    ("cat ../common/a $DOCKERFILE >> $DOCKERFILE_TMP", "only `cat FILES... > $DOCKERFILE_TMP` is translated"),
    ("cat ../common/a > $DOCKERFILE_TMP", "$DOCKERFILE appears 0 times"),
    ("cat ../common/a $DOCKERFILE > $DOCKERFILE_TMP\n$DOCKERBUILD -f $DOCKERFILE_TMP -t other .",
     "does not start with $TAG"),
    ("cat ../common/a $DOCKERFILE > $DOCKERFILE_TMP\n$DOCKERBUILD -f $DOCKERFILE_TMP -t $TAG . > build.log",
     "somewhere other than `| tee $LOG`"),
    ("cat ../common/a $DOCKERFILE > $DOCKERFILE_TMP\n$DOCKERBUILD -f $DOCKERFILE_TMP --build-arg HOME -t $TAG .",
     "takes its value from the environment"),
    ("cat <<EOF > $DOCKERFILE_TMP\nFROM x\nEOF", "here-document"),
    ("DOCKERFILE=other.docker", "which the LUMI pipeline sets"),
    ("X=1 cat ../common/a $DOCKERFILE > $DOCKERFILE_TMP", "own environment"),
    ("cat ../common/*.docker $DOCKERFILE > $DOCKERFILE_TMP", "file name pattern"),
    ("for f in a b ; do echo $f ; done", "'for' is shell beyond"),
    ("cat ../common/a $DOCKERFILE > $DOCKERFILE_TMP && echo ok", "only `cat FILES... > $DOCKERFILE_TMP`"),
])
def test_shell_beyond_the_subset_is_refused(line: str, message: str) -> None:
    script = read_build_script("#!/bin/bash\n" + line + "\n")
    assert any(message in text for _, text, _ in script.problems), script.problems


def test_the_subset_reads_like_bash() -> None:
    script = read_build_script(
        "A='x y' # comment \\\nB=\"$A-z\"\nC=${B}\\ w\n"
        "cat \\\n  '../common/a' \\\n  \"$DOCKERFILE\" \\\n  ../common/\"b\" \\\n> \"$DOCKERFILE_TMP\"\n"
        "$DOCKERBUILD --file $DOCKERFILE_TMP --build-arg \"A=$A\" --build-arg=C=\"$C\" --tag \"${TAG}\" . "
        "2>&1 | tee -a $LOG\n")
    assert script.problems == []
    assert script.compose == ["../common/a", None, "../common/b"]
    assert script.builds[0].build_args == {"A": "x y", "C": "x y-z w"}
    assert script.recorded == [] and not script.recorded_seen


def test_resources_come_from_the_transfer_scripts_test_sbatch() -> None:
    defaults = read_test_defaults(
        "Nodes=2\ncat > test.sbatch << EOF\n#SBATCH -p gpu-part\n#SBATCH --threads-per-core 1\n#SBATCH -N $Nodes\n"
        "#SBATCH --gpus $((Nodes*8))\n#SBATCH -t 1:00:00\n#SBATCH --mem 0\n#SBATCH -o test.out\n"
        "export SCMD=\"srun \\\n  -N $Nodes \\\n  -n $((Nodes*8)) \\\n  singularity exec \\\n    -B /a -B /b\"\nEOF\n")
    assert defaults.slurm == {"nodes": 2, "ntasks": 16, "gpus": 16, "mem": "0", "time": "1:00:00",
                              "partition": "gpu-part", "extra": ["--threads-per-core=1"]}
    assert defaults.binds == ["/a", "/b"]
    missing = read_test_defaults("echo nothing here\n")
    assert missing.slurm == {} and missing.notes


# --------------------------------------------------------------------------------------------
# The checkout is only read; the output is deterministic and written in one step
# --------------------------------------------------------------------------------------------


def test_the_checkout_is_byte_identical_after_a_migration(layout: Layout, tmp_path: Path) -> None:
    before = tree_state(layout.root)
    lumi.migrate(layout.root, tmp_path / "out", partial=True)
    lumi.migrate(layout.root, tmp_path / "out2")
    assert tree_state(layout.root) == before


def test_running_twice_gives_the_same_tree(layout: Layout, tmp_path: Path) -> None:
    lumi.migrate(layout.root, tmp_path / "a", partial=True)
    lumi.migrate(layout.root, tmp_path / "b", partial=True)
    first = tree_state(tmp_path / "a")
    assert first == tree_state(tmp_path / "b")
    lumi.migrate(layout.root, tmp_path / "a", partial=True)  # again into the same folder: replaced
    assert tree_state(tmp_path / "a") == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LUMI-containers", "a", "b"]  # no staging left behind


# --------------------------------------------------------------------------------------------
# Hostile input: clear problems, never a traceback
# --------------------------------------------------------------------------------------------


def test_odd_bytes_crlf_and_symlinks_out_of_the_checkout_are_problems(tmp_path: Path) -> None:
    layout = write_checkout(tmp_path / "checkout", with_refused=False)
    recipes = layout.root / "RecipesDocker"
    outside = tmp_path / "outside.docker"
    outside.write_text("FROM secret\n", encoding="utf-8")
    (recipes / "Science_App" / "build-Rocm-1.0.sh").write_bytes(b"#!/bin/bash\nX='\xff\xfe'\n")
    (recipes / "toolbox" / "build-v3.sh").write_bytes(b"#!/bin/bash\r\nX=1\r\n")
    os.symlink(outside, recipes / "common" / "Dockerfile.leak")
    (recipes / "toolbox" / "build-v1.test").unlink()
    os.symlink("/etc/passwd", recipes / "toolbox" / "build-v1.test")
    (recipes / "evil").mkdir()
    (recipes / "evil" / "build-x.docker").write_text("RUN true\n", encoding="utf-8")
    (recipes / "evil" / "build-x.sh").write_text(
        "cat ../../../outside.docker $DOCKERFILE > $DOCKERFILE_TMP\n$DOCKERBUILD -f $DOCKERFILE_TMP -t $TAG .\n",
        encoding="utf-8")
    (recipes / "toolbox" / "odd\nname.txt").write_text("x", encoding="utf-8")
    os.mkfifo(recipes / "toolbox" / "pipe")  # never opened: reading it would hang
    report = lumi.migrate(layout.root, tmp_path / "out")
    assert not report.ok and not (tmp_path / "out").exists()
    text = "\n".join(str(problem) for problem in report.all_problems)
    assert "RecipesDocker/Science_App/build-Rocm-1.0.sh:2: is not UTF-8 text" in text
    assert "RecipesDocker/toolbox/build-v3.sh:1: has a Windows (CRLF) line ending" in text
    assert f"RecipesDocker/common/Dockerfile.leak: is a symlink to {outside}, outside the checkout" in text
    assert "RecipesDocker/toolbox/build-v1.test: is a symlink to /etc/passwd, outside the checkout" in text
    assert "composes '../../../outside.docker', outside ../common/ and the recipe's folder" in text
    assert "has a file name with control or escape characters" in text
    assert "RecipesDocker/toolbox/pipe: is not a regular file" in text
    assert text.count("RecipesDocker/toolbox/pipe:") == 1  # once, though it refuses every toolbox recipe


def test_unusable_places_are_one_clear_error(layout: Layout, tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="is not a folder"):
        lumi.migrate(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(MigrationError, match="inside the checkout"):
        lumi.migrate(layout.root, layout.root / "RecipesDocker" / "out")
    with pytest.raises(MigrationError, match="contains the checkout"):
        lumi.migrate(layout.root, tmp_path)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(MigrationError, match="did not write"):
        lumi.migrate(layout.root, foreign)
    assert (foreign / "keep.txt").read_text(encoding="utf-8") == "mine"
    empty = tmp_path / "not-lumi"
    empty.mkdir()
    with pytest.raises(MigrationError, match="no RecipesDocker"):
        lumi.migrate(empty, tmp_path / "out")


def _inv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=PROJECT_DIR, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_task_exits_2_with_problems_and_json_and_0_with_partial(layout: Layout, tmp_path: Path) -> None:
    out = tmp_path / "out"
    refused = _inv("migrate.lumi", str(layout.root), "--out", str(out), "--json")
    assert refused.returncode == 2, refused.stderr
    data = json.loads(refused.stdout)
    assert data["ok"] is False and data["written"] is False
    assert data["counts"]["recipes_refused"] == 1 and data["counts"]["recipes_migrated"] == 4
    assert "Traceback" not in refused.stderr
    partial = _inv("migrate.lumi", str(layout.root), "--out", str(out), "--partial")
    assert partial.returncode == 0, partial.stderr
    assert "4 migrated (5 images, 4 host-side tests), 1 refused" in partial.stdout
    assert f"problem: {layout.refused_script}:" in partial.stderr
    missing = _inv("migrate.lumi", str(tmp_path / "nope"), "--out", str(out))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "is not a folder" in missing.stderr


def test_file_names_that_are_not_utf8_are_problems(tmp_path: Path) -> None:
    layout = write_checkout(tmp_path / "checkout", with_refused=False)
    toolbox = os.fsencode(layout.root / "RecipesDocker" / "toolbox")
    with open(os.path.join(toolbox, b"build-\xff.sh"), "wb") as handle:
        handle.write(b"cat ../common/Dockerfile.header $DOCKERFILE > $DOCKERFILE_TMP\n")
    report = lumi.migrate(layout.root, tmp_path / "out")
    assert not report.ok
    (odd,) = [recipe for recipe in report.refused]
    assert odd.file.startswith("'RecipesDocker/toolbox/build-") and "control or escape" in str(odd.problems[0])
    json.dumps(report.as_dict())  # the report stays printable and serialisable


def test_mangled_scripts_give_problems_never_exceptions() -> None:
    """Recipes with characters inserted, deleted and replaced (fixed seed): read, never a traceback."""
    import random

    from tests.support.lumi_layout import SCIENCE, TOOLBOX_V1, TOOLBOX_V2, TRANSFER

    assert read_build_script("cat ../common/a $DOCKERFILE > $DOCKERFILE_TMP\necho 2").problems  # digits at the end
    pieces = ["$", "{", "}", "\\", '"', "'", "\n", "$(", "`", "|", "&", ";", "2>&1", "\x00", "${", "$((", "=", " "]
    generator = random.Random(13)
    for _ in range(1500):
        chars = list(generator.choice([SCIENCE, TOOLBOX_V1, TOOLBOX_V2, TRANSFER]))
        for _ in range(generator.randint(1, 8)):
            position = generator.randrange(len(chars))
            if generator.random() < 0.5:
                chars.insert(position, generator.choice(pieces))
            else:
                del chars[position]
        text = "".join(chars)
        read_build_script(text)
        read_test_defaults(text)


def test_what_our_loader_refuses_is_never_handed_over(tmp_path: Path) -> None:
    """A composition without FROM (docker would refuse it too) refuses its recipe with the loader's reason;
    a .def our .def kind cannot build is left out with a note; the tree that is written always loads."""
    layout = write_checkout(tmp_path / "checkout", with_refused=False)
    recipes = layout.root / "RecipesDocker"
    (recipes / "nofrom").mkdir()
    (recipes / "nofrom" / "build-x.docker").write_text("RUN true\n", encoding="utf-8")
    (recipes / "nofrom" / "build-x.sh").write_text(
        "cat ../common/Dockerfile.env-a $DOCKERFILE > $DOCKERFILE_TMP\n$DOCKERBUILD -f $DOCKERFILE_TMP -t $TAG .\n"
        "echo \"$TAG\" > $RES\n", encoding="utf-8")
    (layout.root / "Recipes" / "REMOTE.def").write_text("Bootstrap: oras\nFrom: ghcr.io/example/sif:1.0\n\n%post\n"
                                                        "    true\n", encoding="utf-8")
    out = tmp_path / "out"
    report = lumi.migrate(layout.root, out)
    assert not report.ok and not report.written and not out.exists()
    (refused,) = report.refused
    assert refused.file == "RecipesDocker/nofrom/build-x.sh"
    assert "refused by our definitions loader" in refused.problems[0].message
    assert "FROM" in refused.problems[0].message
    partial = lumi.migrate(layout.root, out, partial=True)
    assert partial.written and not (out / "amd64" / "nofrom").exists()
    assert load_catalog(out).all_problems() == []
    remote = [note for note in partial.notes if note.file == "Recipes/REMOTE.def"]
    assert (out / "amd64" / "remote.def").exists() != bool(remote)
