"""Run the benchmarks and print each measurement against its target; exit 1 if a target is missed."""

from __future__ import annotations

import sys
from collections.abc import Callable

from benchmarks import (
    buildhosts_bench,
    cli_bench,
    pipeline_bench,
    plan_bench,
    publish_bench,
    runners_bench,
    runners_docker_bench,
    service_bench,
)
from benchmarks.harness import Measurement, save

BENCHMARKS: dict[str, Callable[[], list[Measurement]]] = {"cli": cli_bench.run, "plan": plan_bench.run,
                                                          "pipeline": pipeline_bench.run, "service": service_bench.run,
                                                          "runners": runners_bench.run,
                                                          "runners-docker": runners_docker_bench.run,
                                                          "publish": publish_bench.run,
                                                          "buildhosts": buildhosts_bench.run}


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    missed = False
    for name in chosen:
        print(f"== {name}")
        measurements = BENCHMARKS[name]()
        for measurement in measurements:
            print(measurement.line())
            missed |= measurement.met is False
        print(f"   saved to {save(name, measurements)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
