"""A task's bundled samples by name: the ``sample:NAME`` input of `vlm run`, the run API and the
dashboard.

``vlm run medical.segment sample:synthetic-lesions`` runs the task on the files of its sample
"synthetic lesions" with the sample's parameters under those given (`--param` wins). A name
matches a sample's name or its key (:func:`sample_key`: lower case, every run of other
characters than letters and digits as one ``-``), so the quoted name works too. An unknown name
is a usage error listing the task's sample keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlm_core.errors import UsageError, did_you_mean
from vlm_core.tasks import Sample, TaskSpec

#: The prefix of an input that names a bundled sample instead of a file.
SCHEME = "sample:"


def sample_key(name: str) -> str:
    """The name a sample is asked for by: ``"synthetic lesions"`` -> ``"synthetic-lesions"``."""
    return re.sub(r"[^0-9a-z]+", "-", name.lower()).strip("-")


def sample_keys(spec: TaskSpec) -> list[str]:
    """The keys of ``spec``'s samples, in the order the task declares them."""
    return [sample_key(s.name) for s in spec.samples]


def find_sample(spec: TaskSpec, name: str) -> Sample:
    """``spec``'s sample called ``name`` (its name or key, in any case)."""
    key = sample_key(name)
    for sample in spec.samples:
        if sample_key(sample.name) == key:
            return sample
    if not spec.samples:
        raise UsageError(f"task '{spec.id}' has no bundled samples ('{SCHEME}{name}')")
    keys = sample_keys(spec)
    raise UsageError(
        f"task '{spec.id}' has no sample '{name}'{did_you_mean(key, keys)} "
        f"(its samples: {', '.join(keys)})"
    )


def is_sample_ref(arg: str | Path) -> bool:
    return isinstance(arg, str) and arg.startswith(SCHEME)


def expand_samples(
    spec: TaskSpec, inputs: Sequence[str | Path]
) -> tuple[list[str | Path], dict[str, Any]]:
    """``inputs`` with every ``sample:NAME`` replaced by the sample's files, and the parameters
    those samples set (to go under the ones the user gave). Samples that set different
    parameters are refused together (each makes sense with its own), as is more than one
    sample of a task that takes no input files (each sample is a whole run)."""
    expanded: list[str | Path] = []
    chosen: list[Sample] = []
    for arg in inputs:
        if is_sample_ref(arg):
            sample = find_sample(spec, str(arg)[len(SCHEME) :])
            chosen.append(sample)
            expanded += [str(f) for f in sample.files]
        else:
            expanded.append(arg)
    if not chosen:
        return expanded, {}
    first = chosen[0]
    for other in chosen[1:]:
        if not spec.inputs or dict(other.params) != dict(first.params):
            why = "the task takes no input files" if not spec.inputs else "their parameters differ"
            raise UsageError(
                f"samples '{sample_key(first.name)}' and '{sample_key(other.name)}' of task "
                f"'{spec.id}' cannot run together ({why}); run them one at a time"
            )
    return expanded, dict(first.params)


__all__ = [
    "SCHEME",
    "expand_samples",
    "find_sample",
    "is_sample_ref",
    "sample_key",
    "sample_keys",
]
