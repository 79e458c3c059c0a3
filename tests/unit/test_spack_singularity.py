"""Apptainer definition files: parsing every section, the version rule, the Dockerfile translation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ci.engines.apptainer import ApptainerEngine
from ci.engines.base import EngineSettings
from ci.spack.singularity import ImageReference, apptainer_files, native_build_command, parse_definition, translate
from tests.support.definitions import write_tree

FULL = """\
Bootstrap: docker
From: registry.example.org:5000/ns/tool:2.1@sha256:0123abcd

%files
    data/input.txt /opt/input.txt
    data/config
%post -c /bin/bash
    echo "it's $HOME" > /opt/where
    touch /opt/done
%environment
   export TOOL_HOME=/opt
%runscript
   exec echo "run $@"
%startscript
   /opt/docker/bin/storage $@
%labels
    Author someone
    Version v1 "quoted"
%help
   Prints its arguments.
%test
   test -f /opt/done
"""


def parse(tmp_path: Path, text: str, **files: str):
    write_tree(tmp_path, {"x.def": text, **files})
    return parse_definition(tmp_path / "x.def", tmp_path)


def test_every_section_is_read(tmp_path: Path) -> None:
    definition, problems = parse(tmp_path, FULL, **{"data/input.txt": "in", "data/config": "c"})
    assert problems == [] and definition is not None
    assert definition.bootstrap == "docker"
    assert definition.version() == "2.1"
    assert [(f.source, f.target) for f in definition.files] == [("data/input.txt", "/opt/input.txt"),
                                                                ("data/config", "/data/config")]
    assert definition.labels == {"Author": "someone", "Version": 'v1 "quoted"'}
    written = {path: (mode, content) for path, mode, content in apptainer_files(definition)}
    assert written["/.singularity.d/env/90-environment.sh"][1].endswith("export TOOL_HOME=/opt\n")
    assert written["/.singularity.d/runscript"] == ("755", '#!/bin/sh\n\nexec echo "run $@"\n')
    assert written["/.singularity.d/startscript"][1].endswith("/opt/docker/bin/storage $@\n")
    assert written["/.singularity.d/runscript.help"] == ("644", "Prints its arguments.\n")
    assert written["/.singularity.d/test"][1].endswith("test -f /opt/done\n")


def test_the_translation_keeps_every_byte_of_the_scripts(tmp_path: Path) -> None:
    definition, _ = parse(tmp_path, FULL, **{"data/input.txt": "in", "data/config": "c"})
    assert definition is not None
    text = translate(definition, source="amd64/x.def", name="x")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines[0] == "FROM registry.example.org:5000/ns/tool:2.1@sha256:0123abcd"
    assert "COPY data/input.txt /opt/input.txt" in lines
    post = next(line for line in lines if line.startswith('RUN ["/bin/bash"'))
    assert json.loads(post[4:]) == ["/bin/bash", "-e", "-c", "echo \"it's $HOME\" > /opt/where\ntouch /opt/done"]
    writes = [json.loads(line[4:]) for line in lines if line.startswith('RUN ["/bin/sh", "-c", "mkdir')]
    assert {w[4] for w in writes} == {"/.singularity.d/env/90-environment.sh", "/.singularity.d/runscript",
                                      "/.singularity.d/startscript", "/.singularity.d/runscript.help",
                                      "/.singularity.d/test"}
    assert 'LABEL Version="v1 \\"quoted\\""' in lines
    entrypoint = json.loads(lines[-1].removeprefix("ENTRYPOINT "))
    assert entrypoint[:2] == ["/bin/sh", "-c"] and "/.singularity.d/env/*.sh" in entrypoint[2]
    assert entrypoint[2].endswith('exec /bin/sh /.singularity.d/runscript "$@"')
    assert translate(definition, source="a", name="x", base="parent:1-abc").splitlines()[3] == "FROM parent:1-abc"


@pytest.mark.parametrize(("reference", "repository", "tag"), [
    ("host:5000/ns/img:tag@sha256:abc", "host:5000/ns/img", "tag"),
    ("host:5000/ns/img", "host:5000/ns/img", None),
    ("img@sha256:abc", "img", None),
    ("bluebrain/nexus-storage:latest", "bluebrain/nexus-storage", "latest"),
    ("ubuntu", "ubuntu", None),
])
def test_image_references_with_ports_digests_and_no_tag(reference: str, repository: str, tag: str | None) -> None:
    parsed = ImageReference.parse(reference)
    assert (parsed.repository, parsed.tag) == (repository, tag)


def test_a_missing_tag_falls_back(tmp_path: Path) -> None:
    definition, _ = parse(tmp_path, "Bootstrap: docker\nFrom: host:5000/img\n")
    assert definition is not None
    assert definition.version() == "latest" and definition.version("3.0") == "3.0"


def test_unsafe_and_unknown_sections_are_clear_errors_all_at_once(tmp_path: Path) -> None:
    definition, problems = parse(tmp_path, """\
        Bootstrap: library
        Stage: build
        %setup
            touch ${SINGULARITY_ROOTFS}/x
        %appinstall tool
            make
        %weird
        %files
            ../../etc/passwd /etc/passwd
        %post --fakeroot
            true
        %post
            again
        """)
    assert definition is None
    fields = [p.field for p in problems]
    assert fields == ["%setup", "%appinstall", "%weird", "%post", "Bootstrap", "From", "Stage", "%post",
                      "%files[0]"]
    text = "\n".join(str(p) for p in problems)
    assert "runs as root on the build host" in text and "SCIF apps" in text and "leaves the definition folder" in text


def test_localimage_is_parsed_but_cannot_be_a_docker_base(tmp_path: Path) -> None:
    _, problems = parse(tmp_path, "Bootstrap: localimage\nFrom: /images/base.sif\n")
    assert [p.field for p in problems] == ["Bootstrap"]
    assert "cannot be the base of a Docker build" in problems[0].message


def test_the_spacktainers_example_shape(tmp_path: Path) -> None:
    definition, problems = parse(tmp_path, "Bootstrap: docker\nFrom: bluebrain/nexus-storage:latest\n\n"
                                           "%startscript\n   /opt/docker/bin/storage $@\n")
    assert problems == [] and definition is not None
    assert definition.version() == "latest"
    assert re.search(r"/\.singularity\.d/startscript", translate(definition, source="s", name="nexus-storage"))


def test_the_native_build_command() -> None:
    engine = ApptainerEngine(EngineSettings(build_options=("--fakeroot",)))
    assert native_build_command(engine, "/site/x.def", "/site/x.sif") == [
        "apptainer", "build", "--fix-perms", "--mksquashfs-args", "-comp zstd -Xcompression-level 3",
        "--fakeroot", "/site/x.sif", "/site/x.def"]
