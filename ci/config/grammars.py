"""The grammars of settings values: every value that reaches a command line, a job header or an
ssh_config is checked against one of these types before anything runs.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from ci.validation import check_text


def grammar(pattern: str, what: str, fix: str, max_length: int = 255) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        return check_text(value, what=what, max_length=max_length, pattern=compiled, fix=fix)

    return AfterValidator(check)


HostName = Annotated[str, grammar(r"\A(?![-.])[A-Za-z0-9._-]{1,253}\Z|\A\[?[0-9A-Fa-f:.]{2,45}\]?\Z",
                                   "host name", "write a host name or an IP address, e.g. lumi.csc.fi")]
UserName = Annotated[str, grammar(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z", "user name",
                                   "write the login name (letters, digits, '_.-')")]
EnvName = Annotated[str, grammar(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z", "environment variable name",
                                  "write a variable name such as CI_REGISTRY_TOKEN")]
Address = Annotated[str, grammar(r"\A(?![-.])[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?\Z"
                                  r"|\A\[[0-9A-Fa-f:]{2,45}\](:[0-9]{1,5})?\Z",
                                  "registry address",
                                  "write host:port as the site's engine reaches the registry, e.g. 127.0.0.1:5000")]
ImageRef = Annotated[str, grammar(r"\A(?!.*//)[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}\Z", "image reference",
                                   "write an image name such as containers-ci/debian:bookworm")]
SlurmName = Annotated[str, grammar(r"\A[A-Za-z0-9_.+-]{1,64}(,[A-Za-z0-9_.+-]{1,64}){0,15}\Z", "Slurm name",
                                    "use the name as `sinfo -s` or `sacctmgr show assoc` lists it "
                                    "(letters, digits, '._+-')", 1024)]
Word = Annotated[str, grammar(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z", "name",
                               "write a short name (letters, digits, '._-')")]
Text = Annotated[str, grammar(r"\A[^\n\r]*\Z", "value", "write it on one line", 4096)]
Seconds = Annotated[float, Field(ge=0.01)]
Flag = Annotated[bool, Field(strict=True)]  # true or false; "yes" is a typo, not a boolean
Port = Annotated[int, Field(ge=1, le=65535)]

_BIND = re.compile(r"\A/[A-Za-z0-9._+@%=~/-]{0,4095}(:/[A-Za-z0-9._+@%=~/-]{0,4095})?\Z")


def _bind(value: str) -> str:
    """`/path` or `/source:/target`: what Singularity's -B and Charliecloud's -b both read."""
    return check_text(value, what="bind", max_length=8191, pattern=_BIND,
                      fix="write an absolute path, or source:target with two absolute paths "
                          "(no spaces, commas or options), e.g. /scratch:/scratch")


Bind = Annotated[str, AfterValidator(_bind)]


