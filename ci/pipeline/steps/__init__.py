"""The pipeline's steps, one module each: build, transfer, convert, test, promote, publish.

Each step is a callable (`ChainStep`) the executor runs on its own thread. The steps of one image
share a `Chain`, which only carries values from one step to the next (the registry reference, the
image file, the test verdicts) and knows which steps an earlier attempt of the same run finished.
Every step is safe to repeat after a crash: a step recorded as done in the run's events is not
redone (its recorded data is reused), jobs already submitted are adopted by name instead of
submitted twice, and promotion is one rename that is checked before it is tried.

`image_steps(chain, build)` lists an image's steps in order for `ci.pipeline.executor.Work`.
Where this package sits among the others: docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from ci.pipeline.executor import Step
from ci.pipeline.steps.build import BuildStep
from ci.pipeline.steps.chain import Chain, ChainStep, SiteServices
from ci.pipeline.steps.convert import ConvertStep
from ci.pipeline.steps.promote import PromoteStep
from ci.pipeline.steps.publish import PublishStep
from ci.pipeline.steps.test import TestStep
from ci.pipeline.steps.transfer import TransferStep
from ci.plan import Action


def image_steps(chain: Chain, build: ChainStep | None) -> list[Step]:
    """The executor's steps for one image: its build (if it has one), then the site steps it needs."""
    steps: list[ChainStep] = []
    if build is not None and chain.image.action is not Action.SKIP:
        steps.append(build)
    if chain.image.needs_site:
        steps += [TransferStep(chain), ConvertStep(chain), TestStep(chain), PromoteStep(chain)]
    publishing = chain.services.publishing if chain.services is not None else None
    if publishing and chain.image.selected and (chain.image.needs_site or chain.image.site_state == "tested"):
        steps.append(PublishStep(chain, publishing))  # also an image tested earlier and not yet published
    return [step.step() for step in steps]


def chosen(steps: Sequence[Step], names: Sequence[str]) -> list[Step]:
    """The steps among `steps` whose name is in `names` (a per-step task runs some of them)."""
    return [step for step in steps if step.name in names]


__all__ = ["BuildStep", "Chain", "ChainStep", "ConvertStep", "PromoteStep", "PublishStep", "SiteServices", "TestStep",
           "TransferStep", "chosen", "image_steps"]
