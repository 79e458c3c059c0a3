"""Refusals as one shape (ProblemResponse): a sentence, and per problem the file, field, message and fix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import HTTPException
from pydantic import ValidationError

from ci.errors import Problem
from ci.validation import problems_from


class ProblemError(HTTPException):
    def __init__(self, status: int, detail: str, problems: Sequence[Problem] = (),
                 headers: dict[str, str] | None = None):
        super().__init__(status, detail, headers=headers)
        self.problems = list(problems)


def problem(status: int, message: str, fix: str, field: str = "") -> ProblemError:
    return ProblemError(status, f"{message}; {fix}", [Problem(Path("request"), field, message, fix)] if field else [])


def problems_response(status: int, detail: str, problems: Sequence[Problem]) -> ProblemError:
    return ProblemError(status, detail + ": " + "; ".join(str(p) for p in problems), problems)


def validation_response(error: ValidationError, file: str = "request body") -> ProblemError:
    problems = problems_from(error, file=file)
    return ProblemError(422, f"the {file} is not valid: " + "; ".join(str(p) for p in problems), problems)


def items(problems: Sequence[Problem]) -> list[dict[str, str]]:
    return [{"file": str(p.path), "field": p.field, "message": p.message, "fix": p.fix} for p in problems]
