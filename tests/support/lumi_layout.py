"""A small repository in the LUMI containers CI's layout, written by us, and its own build scripts run.

Nothing here comes from the LUMI-containers repository: the recipes below are ours, written in
the same shape (RecipesDocker/<app>/build-<variant>.{docker,sh,test}, RecipesDocker/common/
fragments, helper-files/, Recipes/*.def and a transfer script writing test.sbatch), so the
migrator's tests can compare what `inv migrate.lumi` writes with what the recipes themselves do.

`run_build_script` runs a `build-*.sh` the way their Makefile does (in a temporary copy of the
checkout, from the app folder, with TAG, DOCKERFILE, DOCKERFILE_TMP, LOG and RES set) with a
recording `$DOCKERBUILD`: a script that writes its argv, one file per call, and builds nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import BASE_IMAGE

_RECORDER = """#!/bin/bash
# A stand-in for `docker build`: records its arguments (NUL-separated, one file per call).
n=$(ls "$RECORD_DIR" | wc -l)
printf '%s\\0' "$@" > "$RECORD_DIR/$n"
echo "recorded build $n"
"""


def _write(path: Path, text: str | bytes, *, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    path.chmod(0o755 if executable else 0o644)


def script(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# The body and fragments are valid Dockerfiles on top of the local base image, so the e2e test
# can build them; the fidelity tests only compare bytes.
COMMON = {
    "Dockerfile.header": "ARG BASE_IMAGE=" + BASE_IMAGE + "\nFROM $BASE_IMAGE\n\nENV STACK_ROOT /opt/stack\n"
                         "RUN mkdir -p /opt/stack /myrun\n",  # Charliecloud binds only onto existing folders
    "Dockerfile.tools": "ARG TOOL_VERSION\nRUN mkdir -p $STACK_ROOT && echo \"tools $TOOL_VERSION\" "
                        "> $STACK_ROOT/tools.txt\n",
    "Dockerfile.env-a": "# environment, after the body\nENV STACK_A=1\n",
    # no final newline, and trailing blanks: `cat` joins the bytes as they are
    "Dockerfile.env-b": "ENV STACK_B=2   \nLABEL org.example.stack=\"b\"",
    "Dockerfile.runtime": "\nRUN echo runtime >> $STACK_ROOT/layers.txt\n",
}

TOOLBOX_V1 = script(r"""
    #!/bin/bash -eux
    set -o pipefail

    TOOL_VERSION='1.2.3'
    GREETING="hello world"   # spaces inside quotes stay one value
    PLAIN=plain-4.5
    LEVEL='low'
    LEVEL='high'
    DERIVED="${PLAIN}+build"

    cat \
      ../common/Dockerfile.header \
      ../common/Dockerfile.tools  \
      $DOCKERFILE \
      ../common/Dockerfile.env-a \
      ../common/Dockerfile.env-b \
      ../common/Dockerfile.runtime \
    > $DOCKERFILE_TMP

    $DOCKERBUILD \
      -f $DOCKERFILE_TMP \
      --build-arg TOOL_VERSION=$TOOL_VERSION \
      --build-arg GREETING="$GREETING" \
      --build-arg LEVEL=$LEVEL \
      --build-arg DERIVED=$DERIVED \
      --build-arg FIXED=0 \
      -t $TAG . 2>&1 | tee $LOG

    echo "$TAG" > $RES
""")

# Two images from one script (a second $DOCKERBUILD with a longer tag), both recorded in $RES.
TOOLBOX_V2 = script(r"""
    #!/bin/bash -eux
    set -o pipefail

    TOOL_VERSION='2.0'
    EXTRA_VERSION='0.9'

    cat \
      ../common/Dockerfile.header \
      $DOCKERFILE \
      ../common/Dockerfile.env-b \
      > $DOCKERFILE_TMP

    $DOCKERBUILD \
      -f $DOCKERFILE_TMP \
      --build-arg TOOL_VERSION=$TOOL_VERSION \
      --build-arg EXTRA_VERSION='' \
      -t $TAG . 2>&1 | tee $LOG

    $DOCKERBUILD \
      -f $DOCKERFILE_TMP \
      --build-arg TOOL_VERSION=$TOOL_VERSION \
      --build-arg EXTRA_VERSION=$EXTRA_VERSION \
     -t $TAG-extra-$EXTRA_VERSION . 2>&1 | tee -a $LOG

    echo "$TAG" > $RES
    echo "$TAG-extra-$EXTRA_VERSION" >> $RES
""")

TOOLBOX_V3 = script(r"""
    #!/bin/bash -eux
    set -o pipefail

    cat ../common/Dockerfile.header $DOCKERFILE ../common/Dockerfile.env-a ../common/Dockerfile.env-a > $DOCKERFILE_TMP

    $DOCKERBUILD -f $DOCKERFILE_TMP --build-arg=TOOL_VERSION=3 -t "$TAG" . |& tee $LOG

    echo "$TAG" > $RES
""")

SCIENCE = script(r"""
    #!/bin/bash -e
    # A recipe in a folder with capitals and an underscore.
    MODE=fast
    cat \
      ../common/Dockerfile.header \
      $DOCKERFILE \
      ../common/Dockerfile.runtime \
      > $DOCKERFILE_TMP
    $DOCKERBUILD -f $DOCKERFILE_TMP --build-arg MODE=$MODE -t $TAG .
    echo "$TAG" > $RES
""")

# Shell the migrator must refuse, with the lines it reports.
REFUSED = script(r"""
    #!/bin/bash -eux
    set -o pipefail
    STAMP=$(date +%s)
    cat ../common/Dockerfile.header $DOCKERFILE > $DOCKERFILE_TMP
    if [ -n "$HTTP_PROXY" ] ; then
      echo proxy
    fi
    $DOCKERBUILD -f $DOCKERFILE_TMP --no-cache -t $TAG .
    echo "$TAG" > $RES
""")
REFUSED_LINES = ("STAMP=$(date +%s)", 'if [ -n "$HTTP_PROXY" ] ; then', "  echo proxy", "fi",
                 "$DOCKERBUILD -f $DOCKERFILE_TMP --no-cache -t $TAG .")

# A host-side test in their style: helper script written into the working folder and bound into
# the container, $SCMD called twice with different environment, the image file as $1.
HOST_TEST = script(r"""
    #!/bin/bash -ex
    set -o pipefail

    rm -rf run.sh
    cat > run.sh << EOF
    #!/bin/sh -e
    cd /myrun
    echo "mode=\$STACK_MODE tools=\$(cat /opt/stack/tools.txt)"
    test -f /opt/stack/layers.txt
    EOF
    chmod +x run.sh

    export STACK_MODE=first
    $SCMD -B $(pwd):/myrun $1 /myrun/run.sh |& tee res-1.log
    grep -q 'mode=first' res-1.log

    export STACK_MODE=second
    $SCMD -B $(pwd):/myrun $1 /myrun/run.sh |& tee res-2.log
    grep -q 'mode=second' res-2.log
    echo "both runs done"
""")

# Its failing twin: the first of the two $SCMD calls fails, the second passes. Only the script's own
# `bash -e` (its #! line, as their pipeline runs `$test $sif`) makes the test fail: run unchanged.
FAILING_TEST = script(r"""
    #!/bin/bash -ex
    rm -rf run.sh
    cat > run.sh << EOF
    #!/bin/sh
    echo "mode=\$STACK_MODE"
    test "\$STACK_MODE" = second
    EOF
    chmod +x run.sh
    export STACK_MODE=first
    $SCMD -B $(pwd):/myrun $1 /myrun/run.sh
    export STACK_MODE=second
    $SCMD -B $(pwd):/myrun $1 /myrun/run.sh
""")

TRANSFER = script(r"""
    #!/bin/bash -e
    # Our own stand-in for the transfer step: it writes the test job script.
    SITE_FOLDER="/scratch/example/staging"
    Nodes=1
    cat > test.sbatch << EOF
    #!/bin/bash -e
    #SBATCH -J stack-test
    #SBATCH --exclusive
    #SBATCH -N $Nodes
    #SBATCH -t 0:05:00
    #SBATCH -o test.out
    cd $SITE_FOLDER/runtests
    m=3
    MASKS="0x\${m},0x\${m}0"
    export SCMD="srun \
      -N $Nodes \
      -n $((Nodes*2)) \
      --cpu-bind=mask_cpu:\$MASKS \
      singularity exec \
        -B /opt/site \
        -B /usr/lib64/libsite.so.1"
    EOF
    echo done
""")

HELPER_DOCKERFILE = "FROM scratch\nCOPY site-env.txt /\n"

DEF_RECIPE = "Bootstrap: docker\nFrom: example/base:1.0\n\n%post\n    echo built\n"


@dataclass(frozen=True)
class Layout:
    """What the generated checkout holds, for the tests' expectations."""

    root: Path
    migrated_scripts: tuple[str, ...]  # RecipesDocker/<app>/build-*.sh that translate
    refused_script: str


def write_checkout(root: Path, *, with_refused: bool = True, failing_twin: bool = False,
                   exclusive: bool = True) -> Layout:
    """Write a LUMI-style checkout under `root`; return what it holds.

    `failing_twin`: Science_App gets a .test in the same style whose first $SCMD call fails;
    `exclusive`: the transfer script's test.sbatch asks for whole nodes (the e2e test does not, so
    its jobs share the one local node with other tests' jobs).
    """
    recipes = root / "RecipesDocker"
    for name, text in COMMON.items():
        _write(recipes / "common" / name, text)
    toolbox = recipes / "toolbox"
    body = "RUN echo \"toolbox $TOOL_VERSION\" >> $STACK_ROOT/layers.txt\n"
    for variant, text in (("v1", TOOLBOX_V1), ("v2-Extra", TOOLBOX_V2), ("v3", TOOLBOX_V3)):
        _write(toolbox / f"build-{variant}.docker", body.replace("toolbox", f"toolbox {variant}"))
        _write(toolbox / f"build-{variant}.sh", text, executable=True)
    _write(toolbox / "build-v1.test", HOST_TEST, executable=True)
    os.symlink("build-v1.test", toolbox / "build-v2-Extra.test")  # shared, as their recipes do
    os.symlink("build-v1.test", toolbox / "build-v3.test")
    _write(toolbox / "notes.txt", "part of the build context\n")
    _write(toolbox / "build-v1.log", "a leftover of an earlier build\n")
    science = recipes / "Science_App"
    _write(science / "build-Rocm-1.0.docker", "ARG MODE\nRUN echo \"science $MODE\" > /science.txt\n")
    _write(science / "build-Rocm-1.0.sh", SCIENCE, executable=True)
    if failing_twin:
        _write(science / "build-Rocm-1.0.test", FAILING_TEST, executable=True)
    scripts = ["RecipesDocker/Science_App/build-Rocm-1.0.sh", "RecipesDocker/toolbox/build-v1.sh",
               "RecipesDocker/toolbox/build-v2-Extra.sh", "RecipesDocker/toolbox/build-v3.sh"]
    refused = "RecipesDocker/zz-refused/build-bad.sh"
    if with_refused:
        _write(recipes / "zz-refused" / "build-bad.docker", "RUN true\n")
        _write(recipes / "zz-refused" / "build-bad.sh", REFUSED, executable=True)
    _write(recipes / "helper-files" / "Dockerfile", HELPER_DOCKERFILE)
    _write(recipes / "helper-files" / "site-env.txt", "site environment stand-in\n")
    transfer = TRANSFER if exclusive else TRANSFER.replace("#SBATCH --exclusive\n", "")
    _write(recipes / "lumi-containers-transfer.sh", transfer, executable=True)
    _write(root / "Recipes" / "MY_TOOL.def", DEF_RECIPE)
    return Layout(root=root, migrated_scripts=tuple(scripts), refused_script=refused)


@dataclass(frozen=True)
class Recorded:
    """What one build script did: the file it composed and each $DOCKERBUILD call's arguments."""

    dockerfile: bytes
    builds: list[list[str]]
    results: list[str]

    def build_args(self, call: int) -> dict[str, str]:
        args = self.builds[call]
        out: dict[str, str] = {}
        for index, word in enumerate(args):
            pair = None
            if word == "--build-arg":
                pair = args[index + 1]
            elif word.startswith("--build-arg="):
                pair = word[len("--build-arg="):]
            if pair is not None:
                name, _, value = pair.partition("=")
                out.pop(name, None)
                out[name] = value
        return out

    def tag(self, call: int) -> str:
        args = self.builds[call]
        for index, word in enumerate(args):
            if word in ("-t", "--tag"):
                return args[index + 1]
        raise AssertionError(f"no -t in {args}")


def run_build_script(checkout: Path, relative: str, work: Path) -> Recorded:
    """Run one build-*.sh as their Makefile does, in a copy of `checkout` under `work`, recording the build."""
    copy = work / "checkout"
    if not copy.exists():
        shutil.copytree(checkout, copy, symlinks=True)
    script_path = copy / relative
    app_dir = script_path.parent
    variant = script_path.name[len("build-"): -len(".sh")]
    records = work / f"records-{app_dir.name}-{variant}"
    records.mkdir()
    recorder = work / "record-build"
    if not recorder.exists():
        _write(recorder, _RECORDER, executable=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "RECORD_DIR": str(records),
        "DOCKERBUILD": f"{recorder}",
        "TAG": f"lumi/lumi-{app_dir.name}:{variant}",
        "DOCKERFILE": f"build-{variant}.docker",
        "DOCKERFILE_TMP": f".tmp-build-{variant}.docker",
        "LOG": f"build-{variant}.log",
        "RES": str(work / f"{app_dir.name}-{variant}.done"),
    }
    subprocess.run(["bash", str(script_path)], cwd=app_dir, env=env, check=True, capture_output=True, timeout=60)
    builds = [(records / name).read_bytes().split(b"\0")[:-1]
              for name in sorted(os.listdir(records), key=int)]
    results = Path(env["RES"]).read_text(encoding="utf-8").split()
    return Recorded(dockerfile=(app_dir / env["DOCKERFILE_TMP"]).read_bytes(),
                    builds=[[word.decode() for word in call] for call in builds], results=results)


def tree_state(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every entry under `root`: kind, mode and content (a symlink's target), to compare trees byte for byte."""
    state: dict[str, tuple[str, int, bytes]] = {}
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            info = path.lstat()
            if path.is_symlink():
                state[rel] = ("link", 0, os.readlink(path).encode())
            elif path.is_dir():
                state[rel] = ("dir", info.st_mode & 0o7777, b"")
            else:
                state[rel] = ("file", info.st_mode & 0o7777, path.read_bytes())
    return state


def compare_with_scripts(checkout: Path, definitions: Path, work: Path,
                         recipes: list[tuple[str, list[str]]]) -> tuple[int, list[str]]:
    """Run each recipe's build script (recording $DOCKERBUILD) and compare with the migrated images.

    `recipes`: (RecipesDocker/<app>/build-*.sh, [image names in $DOCKERBUILD order]). For each image,
    the recipe the definitions render (`inv render`'s text) must equal what the script composed into
    $DOCKERFILE_TMP, and its build args what that $DOCKERBUILD call passed. Returns (images
    compared, mismatches described).
    """
    from ci.definitions import load_catalog
    from ci.definitions.render import render

    catalog = load_catalog(definitions)
    mismatches = [str(problem) for problem in catalog.all_problems()]
    compared = 0
    for relative, images in recipes:
        recorded = run_build_script(checkout, relative, work)
        if len(recorded.builds) != len(images):
            mismatches.append(f"{relative}: {len(recorded.builds)} builds, {len(images)} images")
            continue
        for call, image in enumerate(images):
            rendered = render(catalog, image)
            text = rendered.recipe.encode("utf-8")
            if text != recorded.dockerfile:
                same_aside = [line.rstrip() for line in text.splitlines()] == \
                    [line.rstrip() for line in recorded.dockerfile.splitlines()]
                mismatches.append(f"{image}: composed Dockerfile differs"
                                  + (" (trailing whitespace only)" if same_aside else ""))
            if dict(rendered.spec.build_args) != recorded.build_args(call):
                mismatches.append(f"{image}: build args {dict(rendered.spec.build_args)} != "
                                  f"{recorded.build_args(call)}")
            compared += 1
    return compared, mismatches


if __name__ == "__main__":  # python -m tests.support.lumi_layout CHECKOUT DEFINITIONS WORK: a real checkout, by hand
    import json
    import sys

    from ci.migrate import lumi

    checkout_arg, definitions_arg, work_arg = (Path(arg) for arg in sys.argv[1:4])
    report = lumi.migrate(checkout_arg, definitions_arg, partial=True)
    work_arg.mkdir(parents=True, exist_ok=True)
    done, differences = compare_with_scripts(
        checkout_arg, definitions_arg, work_arg,
        [(recipe.file, recipe.images) for recipe in report.recipes if recipe.status == "migrated"])
    print(json.dumps({"counts": report.counts(), "compared_images": done, "mismatches": differences,
                      "refused": [str(p) for p in report.all_problems]}, indent=2))
