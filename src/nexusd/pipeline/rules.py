"""The maintainer's rule table: what a stuck or failed run looks like, and what to do about it.

Input: a TOML document (`[[rule]]` array, schema below), or nothing for the packaged default.
Output: a validated, immutable `RuleTable` that `nexusd.pipeline.classifying.classify` walks
in order. Failure: any unknown key, bad type, bad regular expression, unknown stage, action,
source or template placeholder raises `ConfigError` naming the rule and the key, at load time,
so a typo can never silently disable a rule in production.

One source of truth: the default table is `maintainer-rules.toml` beside this module (shipped
in the wheel and loaded with `importlib.resources`); `config/maintainer-rules.toml` in the
repository is a byte-for-byte copy for operators to start from, and a test keeps them equal.

Schema of one rule::

    [[rule]]
    name = "image-pull-failed"        # unique; logged and stored as Verdict.rule
    action = "fail"                   # fail | mark-running | wait
    stage = "SCHEDULING_FAILED"       # fail: FAILED | SCHEDULING_FAILED | DEADLINE_EXCEEDED
    grace = 120                       # seconds the matched state must have lasted (default 0)
    delete_job = true                 # fail only: delete the Job (propagation Background)
                                      # if it is still active; a finished Job is kept
    cause = "..."                     # template -> algorithm_failure_cause
    message = "..."                   # template -> algorithm_failure_details
    [rule.match]                      # or [[rule.match]] several times: any of them
    source = "container-waiting"      # see SOURCES
    reason = ["ErrImagePull", "ImagePullBackOff"]   # a string or a list; omitted = any
    message_regex = "..."             # optional, `re.search` on the matched message
    exit_codes = [137]                # container-terminated only
    type = ["Failed", "FailureTarget"]  # job-condition / pod-condition: condition type(s)
    status = "True"                   # job-condition / pod-condition (default "True")
    kind = "Job"                      # event: involvedObject.kind (omitted = any)
    run_stage = ["RUNNING"]           # optional: only for runs in these stages
    unless_event = ["TriggeredScaleUp"]  # optional: not for a pod with an Event of these reasons
"""

from __future__ import annotations

import enum
import functools
import importlib.resources
import re
import string
import tomllib
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from nexusd.core.errors import ConfigError
from nexusd.core.lifecycle import Stage

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

_E = TypeVar("_E", bound=enum.Enum)

DEFAULT_RULES_RESOURCE = "maintainer-rules.toml"
"""The packaged default table, a resource of the `nexusd.pipeline` package."""


class Action(enum.StrEnum):
    FAIL = "fail"
    """Move the run to the rule's terminal `stage`."""
    MARK_RUNNING = "mark-running"
    """Move a BUFFERED run to RUNNING; skipped for a run that is already RUNNING."""
    WAIT = "wait"
    """Stop here and do nothing: a way to shield a state from the rules after this one."""


class Source(enum.StrEnum):
    """Where a match looks, and which timestamp its grace is measured from."""

    JOB_CONDITION = "job-condition"
    """`job.status.conditions[]` by type/status/reason; since `lastTransitionTime`."""
    POD_CONDITION = "pod-condition"
    """Any pod's `status.conditions[]`; since `lastTransitionTime`."""
    CONTAINER_WAITING = "container-waiting"
    """A container's `state.waiting`; since the pod's `status.startTime` (a waiting state
    carries no timestamp, and ErrImagePull/ImagePullBackOff alternate, so the clock must not
    restart with each flip)."""
    CONTAINER_RUNNING = "container-running"
    """A container's `state.running`; since its `startedAt`."""
    CONTAINER_TERMINATED = "container-terminated"
    """A container's `state.terminated` or `lastState.terminated`; since `finishedAt`."""
    EVENT = "event"
    """An Event about the Job or a pod; since its first occurrence (`firstTimestamp`, else
    `eventTime`, else `lastTimestamp`): a repeated Event must not restart the grace."""
    JOB_ABSENT = "job-absent"
    """No Job at all; since the checkpoint's `sent_at`, else `last_modified`."""


FAIL_STAGES = frozenset({Stage.FAILED, Stage.SCHEDULING_FAILED, Stage.DEADLINE_EXCEEDED})
RUN_STAGES = frozenset({Stage.BUFFERED, Stage.RUNNING})

#: Placeholders a cause or message template may use (filled by `classifying`).
PLACEHOLDERS = frozenset(
    {
        "reason",  # the matched condition/state/Event reason
        "message",  # the matched condition/state/Event message
        "exit_code",  # container-terminated: the exit code
        "exit_status",  # `container exited with code N` (the failed container, else the message)
        "termination_line",  # `: <last line of its termination message>`, or "" if none
        "insufficient",  # FitError: the resources no node has enough of, `cpu and memory`
        "memory_limit",  # the matched container's memory limit (pod spec, else Job template)
        "workgroup",  # Observation.workgroup
        "missing",  # CreateContainerConfigError: `Secret "x"` / `key "k" in ConfigMap "c"`
        "event_message",  # the pod's latest informative kubelet `Failed` Event message
        "pod",
        "container",
        "job",
        "algorithm",
        "request_id",
        "since",  # RFC 3339 time the matched state began
        "elapsed",  # whole seconds it has lasted
        "grace",  # the rule's grace in whole seconds
    }
)

_COMMON_MATCH_KEYS = frozenset({"source", "reason", "message_regex", "run_stage", "unless_event"})
_MATCH_KEYS: dict[Source, frozenset[str]] = {
    Source.JOB_CONDITION: _COMMON_MATCH_KEYS | {"type", "status"},
    Source.POD_CONDITION: _COMMON_MATCH_KEYS | {"type", "status"},
    Source.CONTAINER_WAITING: _COMMON_MATCH_KEYS,
    Source.CONTAINER_RUNNING: frozenset({"source", "run_stage"}),
    Source.CONTAINER_TERMINATED: _COMMON_MATCH_KEYS | {"exit_codes"},
    Source.EVENT: _COMMON_MATCH_KEYS | {"kind"},
    Source.JOB_ABSENT: frozenset({"source", "run_stage"}),
}
_RULE_KEYS = frozenset(
    {"name", "action", "stage", "grace", "delete_job", "cause", "message", "match"}
)


@attrs.frozen
class Match:
    """One thing a rule looks at. Empty `reasons` means any reason."""

    source: Source
    reasons: frozenset[str] = frozenset()
    message_regex: re.Pattern[str] | None = None
    exit_codes: frozenset[int] = frozenset()
    types: frozenset[str] = frozenset()
    status: str = "True"
    kind: str = ""
    run_stages: frozenset[Stage] = RUN_STAGES
    unless_events: frozenset[str] = frozenset()
    """Event reasons that excuse a pod: a hit about a pod with such an Event is ignored."""


@attrs.frozen
class Rule:
    name: str
    action: Action
    matches: tuple[Match, ...]
    stage: Stage | None = None
    """The target stage: the fail stage, RUNNING for mark-running, None for wait."""
    grace: float = 0.0
    delete_job: bool = False
    cause: str = ""
    message: str = ""


@attrs.frozen
class RuleTable:
    """The rules in the order they are tried; the first that fires decides."""

    rules: tuple[Rule, ...]
    source: str = "<defaults>"

    def names(self) -> list[str]:
        return [rule.name for rule in self.rules]

    def event_reasons(self) -> frozenset[str] | None:
        """The Event reasons any rule looks at (its event matches and `unless_event`s); None
        when some event match takes any reason. An Event of another reason cannot change a
        verdict, so it need not wake its run."""
        reasons: set[str] = set()
        for rule in self.rules:
            for match in rule.matches:
                reasons |= match.unless_events
                if match.source is Source.EVENT:
                    if not match.reasons:
                        return None
                    reasons |= match.reasons
        return frozenset(reasons)

    def with_graces(self, graces: Mapping[str, float]) -> RuleTable:
        """A copy with some rules' grace replaced (settings override the table's numbers)."""
        known = set(self.names())
        for name, grace in graces.items():
            if name not in known:
                raise ConfigError(f"{self.source}: no rule named {name!r} to set the grace of")
            _number(grace, f"{self.source}: rule {name!r} key 'grace'")
        return attrs.evolve(
            self,
            rules=tuple(
                attrs.evolve(rule, grace=float(graces[rule.name])) if rule.name in graces else rule
                for rule in self.rules
            ),
        )


# -- loading --------------------------------------------------------------------------------


def load_rules(path: Path | None = None) -> RuleTable:
    """The table in `path`, or the packaged default table when `path` is None."""
    if path is None:
        return default_rules()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read maintainer rules {path}: {exc}") from None
    return parse_rules(text, source=str(path))


@functools.cache
def default_rules() -> RuleTable:
    """The packaged `maintainer-rules.toml` (parsed once)."""
    return parse_rules(default_rules_text(), source=f"nexusd.pipeline/{DEFAULT_RULES_RESOURCE}")


def default_rules_text() -> str:
    return (
        importlib.resources.files("nexusd.pipeline")
        .joinpath(DEFAULT_RULES_RESOURCE)
        .read_text(encoding="utf-8")
    )


def parse_rules(text: str, *, source: str = "<string>") -> RuleTable:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return rules_from_mapping(data, source=source)


def rules_from_mapping(data: Mapping[str, Any], *, source: str = "<mapping>") -> RuleTable:
    unknown = set(data) - {"rule"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {sorted(unknown)}")
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{source}: 'rule' must be an array of tables ([[rule]])")
    rules: list[Rule] = []
    for index, raw in enumerate(raw_rules):
        rule = _rule(raw, f"{source}: rule #{index + 1}")
        if rule.name in {r.name for r in rules}:
            raise ConfigError(f"{source}: rule {rule.name!r} key 'name': defined twice")
        rules.append(rule)
    return RuleTable(rules=tuple(rules), source=source)


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} key 'name': required, a non-empty string")
    where = f"{where.rsplit(':', 1)[0]}: rule {name!r}"
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ConfigError(f"{where} key {sorted(unknown)[0]!r}: unknown key")
    action = _enum(Action, raw.get("action"), f"{where} key 'action'")
    stage = _stage(action, raw.get("stage"), where)
    grace = _number(raw.get("grace", 0), f"{where} key 'grace'")
    delete_job = raw.get("delete_job", False)
    if not isinstance(delete_job, bool):
        raise ConfigError(f"{where} key 'delete_job': must be true or false")
    if delete_job and action is not Action.FAIL:
        raise ConfigError(f"{where} key 'delete_job': only a 'fail' rule may delete the Job")
    cause = _template(raw.get("cause", ""), f"{where} key 'cause'")
    message = _template(raw.get("message", ""), f"{where} key 'message'")
    if action is Action.FAIL and not cause:
        raise ConfigError(f"{where} key 'cause': required for a 'fail' rule")
    raw_match = raw.get("match")
    if isinstance(raw_match, dict):
        raw_match = [raw_match]
    if not isinstance(raw_match, list) or not raw_match:
        raise ConfigError(f"{where} key 'match': required, a table or an array of tables")
    matches = tuple(_match(m, f"{where} key 'match'") for m in raw_match)
    return Rule(name, action, matches, stage, grace, delete_job, cause, message)


def _stage(action: Action, raw: Any, where: str) -> Stage | None:
    if action is Action.WAIT:
        if raw is not None:
            raise ConfigError(f"{where} key 'stage': a 'wait' rule has no stage")
        return None
    if action is Action.MARK_RUNNING:
        if raw not in (None, "RUNNING"):
            raise ConfigError(f"{where} key 'stage': a 'mark-running' rule moves to RUNNING")
        return Stage.RUNNING
    stage = _enum(Stage, raw, f"{where} key 'stage'")
    if stage not in FAIL_STAGES:
        allowed = ", ".join(sorted(FAIL_STAGES))
        raise ConfigError(f"{where} key 'stage': {stage} is not a failure stage ({allowed})")
    return stage


def _match(raw: Any, where: str) -> Match:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    src = _enum(Source, raw.get("source"), f"{where}.source")
    unknown = set(raw) - _MATCH_KEYS[src]
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{where}.{key}: unknown key for source {src.value!r}")
    regex = None
    if "message_regex" in raw:
        pattern = raw["message_regex"]
        if not isinstance(pattern, str):
            raise ConfigError(f"{where}.message_regex: must be a string")
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{where}.message_regex: bad regular expression: {exc}") from None
    types = frozenset(_strings(raw, "type", where))
    if src in (Source.JOB_CONDITION, Source.POD_CONDITION) and not types:
        raise ConfigError(f"{where}.type: required for source {src.value!r}")
    codes = raw.get("exit_codes", [])
    if not isinstance(codes, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) for c in codes
    ):
        raise ConfigError(f"{where}.exit_codes: must be a list of integers")
    run_stages = frozenset(
        _enum(Stage, s, f"{where}.run_stage") for s in _strings(raw, "run_stage", where)
    )
    if not run_stages <= RUN_STAGES:
        raise ConfigError(f"{where}.run_stage: only BUFFERED and RUNNING runs are classified")
    return Match(
        source=src,
        reasons=frozenset(_strings(raw, "reason", where)),
        message_regex=regex,
        exit_codes=frozenset(codes),
        types=types,
        status=_string(raw.get("status", "True"), f"{where}.status"),
        kind=_string(raw.get("kind", ""), f"{where}.kind"),
        run_stages=run_stages or RUN_STAGES,
        unless_events=frozenset(_strings(raw, "unless_event", where)),
    )


def _strings(raw: dict[str, Any], key: str, where: str) -> list[str]:
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}.{key}: must be a string or a list of strings")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where}: must be a number of seconds >= 0")
    return float(value)


def _enum(kind: type[_E], value: Any, where: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(member.value) for member in kind)
        raise ConfigError(f"{where}: {value!r} is not one of {allowed}") from None


def _template(value: Any, where: str) -> str:
    text = _string(value, where)
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: bad template: {exc}") from None
    for field in fields:
        if field not in PLACEHOLDERS:
            allowed = ", ".join(sorted(PLACEHOLDERS))
            raise ConfigError(f"{where}: unknown placeholder {{{field}}} (known: {allowed})")
    try:  # conversions and format specs fail only when applied: try them now, not at 3 a.m.
        text.format_map(dict.fromkeys(PLACEHOLDERS, ""))
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ConfigError(f"{where}: bad template: {exc}") from None
    return text
