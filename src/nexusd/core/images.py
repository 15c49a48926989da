"""Image references as the kubelet sees them: validate, normalise, fake a digest.

Shared by the embedded cluster's kubelet (which ends a container InvalidImageName with these
messages) and by intake (which refuses, with the same words, a run whose image no kubelet can
pull, rather than letting it end SCHEDULING_FAILED).

`normalize` mirrors distribution/reference's `ParseNormalizedNamed` + `TagNameOnly`, which the
kubelet calls before pulling (`applyDefaultImageTag`). A reference it rejects ends the
container in `InvalidImageName` with the kubelet's exact message, e.g. `Failed to apply default
image tag "Bad:1": couldn't parse image name "Bad:1": invalid reference format: repository
name (library/Bad) must be lowercase`. Valid ones come back fully qualified
(`busybox` -> `docker.io/library/busybox:latest`), as containerd reports them.
"""

from __future__ import annotations

import hashlib
import re

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^((?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)(?::({_TAG}))?(?:@({_DIGEST}))?$"
)
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
#: The parts nexus templates give (`<registry>/<image>:<versionTag>`), each in the grammar of
#: its place in a reference: the registry a domain (with a port) and optional path, or a path.
_PARTS = {
    "registry": re.compile(rf"^(?:{_DOMAIN}|{_PATH_COMPONENT})(?:/{_PATH_COMPONENT})*$"),
    "image": re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$"),
    "versionTag": re.compile(rf"^{_TAG}$"),
}
_PART_RULES = {
    "registry": "a registry host (with an optional :port and /path, lowercase path)",
    "image": "lowercase letters, digits and '.', '_', '-' separators, '/'-separated",
    "versionTag": "up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
}
NAME_TOTAL_LENGTH_MAX = 255


class InvalidImageName(ValueError):
    """The reference cannot be parsed; str() is the kubelet's container status message."""


def _split_docker_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    head = name[:i]
    if i == -1 or (
        not any(ch in head for ch in ".:") and head != "localhost" and head.lower() == head
    ):
        domain, remainder = "docker.io", name
    else:
        domain, remainder = head, name[i + 1 :]
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in remainder:
        remainder = "library/" + remainder
    return domain, remainder


def _parse_normalized(image: str) -> str:
    if _HEX64.match(image):
        return f"invalid repository name ({image}), cannot specify 64-byte hexadecimal strings"
    domain, remainder = _split_docker_domain(image)
    remote = remainder.split(":", 1)[0].split("@", 1)[0]
    if remote.lower() != remote:
        return f"invalid reference format: repository name ({remote}) must be lowercase"
    m = _REFERENCE.match(f"{domain}/{remainder}")
    if not image or m is None:
        return "invalid reference format"
    if len(m.group(1)) > NAME_TOTAL_LENGTH_MAX:
        return f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
    return ""


def part_problem(part: str, value: str) -> str:
    """Why `value` cannot be the `part` ("registry", "image", "versionTag") of a reference
    ("" when it can)."""
    return "" if _PARTS[part].match(value) else f"must be {_PART_RULES[part]}"


def reference_problem(image: str) -> str:
    """Why the kubelet cannot parse `image` ("" when it can)."""
    return _parse_normalized(image)


def normalize(image: str) -> str:
    """The fully qualified reference with a default `:latest`; raises InvalidImageName."""
    problem = _parse_normalized(image)
    if problem:
        raise InvalidImageName(
            f'Failed to apply default image tag "{image}": '
            f'couldn\'t parse image name "{image}": {problem}'
        )
    domain, remainder = _split_docker_domain(image)
    full = f"{domain}/{remainder}"
    m = _REFERENCE.match(full)
    assert m is not None
    if m.group(2) is None and m.group(3) is None:
        full += ":latest"
    return full


def image_id(normalized: str) -> str:
    """A stable fake `repo@sha256:<hex>` like containerd's repo digest."""
    m = _REFERENCE.match(normalized)
    repo = m.group(1) if m else normalized
    if m and m.group(3):
        return f"{repo}@{m.group(3)}"
    return f"{repo}@sha256:{hashlib.sha256(normalized.encode()).hexdigest()}"


__all__ = ["InvalidImageName", "image_id", "normalize", "part_problem", "reference_problem"]
