"""The jobs of a configuration directory, valid and not: one broken file never blocks the rest.

The daemon keeps running every valid job while another file is invalid; the commands do the
same. A command that names jobs runs them if they are valid, and refuses (exit 2) only when a
named job is one an invalid file may define: the file's name (``orders.yaml`` defines job
``orders`` unless it says otherwise) or the ``name:`` written in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from akkiosync.config import Job, Refused, load_files
from akkiosync.errors import ConfigError, JobNotFoundError
from akkiosync.jobyaml import MAX_FILE_BYTES

# A top-level ``name:`` line, read from the raw text: the file may not parse as YAML.
_NAME_LINE = re.compile(r"^name[ \t]*:[ \t]*(?P<value>[^#\r\n]*)", re.MULTILINE)
_PLAIN_NAME = re.compile(r"""^(["']?)(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)\1$""")


@dataclass(frozen=True, slots=True)
class InvalidFile:
    """A job file that defines no job: why, and the job names it may stand for."""

    path: Path
    problem: str  # one or more lines, each naming the file
    names: frozenset[str]
    names_known: bool  # False: its ``name:`` cannot be read, so it may define any job


@dataclass(frozen=True, slots=True)
class JobSet:
    """The valid jobs (by name) and the invalid files of one configuration directory."""

    jobs: tuple[Job, ...]
    invalid: tuple[InvalidFile, ...]

    @property
    def names(self) -> list[str]:
        return sorted(job.name for job in self.jobs)

    def problems(self) -> list[str]:
        """Every invalid file's problem lines."""
        return [line for bad in self.invalid for line in bad.problem.splitlines()]

    def select(self, names: Iterable[str]) -> list[Job]:
        """The valid jobs named, in order; ``ConfigError`` with the file's problem for a name an
        invalid file may define, else ``JobNotFoundError`` naming the known jobs."""
        by_name = {job.name: job for job in self.jobs}
        wanted = list(names)
        missing = [name for name in wanted if name not in by_name]
        invalid = [bad for bad in self.invalid if bad.names & set(missing)]
        if invalid:
            raise ConfigError("\n".join(bad.problem for bad in invalid))
        if missing:
            raise JobNotFoundError(self.not_found(missing))
        return [by_name[name] for name in wanted]

    def not_found(self, missing: list[str], also: Iterable[str] = ()) -> str:
        """The message for job names no file defines; ``also``: other names that are known
        (the store's)."""
        known = ", ".join(sorted({*self.names, *also})) or "none"
        message = f"no such job: {', '.join(missing)} (known jobs: {known})"
        unreadable = [str(bad.path) for bad in self.invalid if not bad.names_known]
        if unreadable:
            message += f"; invalid job files whose name cannot be read: {', '.join(unreadable)}"
        return message


def load_job_set(config_dir: Path, env: Mapping[str, str] | None = None) -> JobSet:
    """The valid jobs and the invalid files under ``<config>/jobs``."""
    jobs, refused = load_files(config_dir, env)
    valid = {job.name for job in jobs}
    return JobSet(tuple(jobs), tuple(_invalid(r, valid) for r in refused))


def _invalid(refused: Refused, valid: set[str]) -> InvalidFile:
    if refused.job is not None:  # valid itself; refused for another file's name or target
        other = frozenset({refused.job.name} - valid)
        return InvalidFile(refused.path, refused.problem, other, names_known=True)
    names, known = {refused.path.stem}, True
    try:
        with refused.path.open("rb") as file:
            text = file.read(MAX_FILE_BYTES).decode("utf-8", errors="replace")
    except OSError:
        text = ""
    for match in _NAME_LINE.finditer(text):
        plain = _PLAIN_NAME.match(match["value"].strip())
        if plain is None:  # ``name: ${JOB}``, a quoted oddity: the job it defines is unknown
            known = False
        else:
            names.add(plain["name"])
    # A valid job of that name runs, as in the daemon: the invalid file would be a duplicate.
    return InvalidFile(refused.path, refused.problem, frozenset(names - valid), known)
