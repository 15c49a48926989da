"""Resource quantities in templates and overrides, checked as Kubernetes reads them
(apimachinery's resource.ParseQuantity). Pure functions: nothing is faked."""

from __future__ import annotations

from decimal import Decimal

import pytest

from nexusd.core.quantities import is_quantity, quantity_amount
from nexusd.kube.overrides import validate_overrides, validate_template_spec

WHERE = "customConfiguration.computeResources"
NOT_A_QUANTITY = "is not a Kubernetes quantity (like 500m, 2 or 1.5Gi)"
TOO_MUCH_CPU = "(more than 9223372036854775807m, the most Kubernetes can count)"
TOO_MUCH = "(more than 9223372036854775807, the most Kubernetes can count)"


def problems_for(field: str, value: object) -> list[str]:
    """Problems with one computeResources override: `cpuLimit` or `limits.cpu` style."""
    section, _, name = field.partition(".")
    resources = {section: {name: value}} if name else {section: value}
    return validate_overrides({"computeResources": resources})


ZERO_LIMIT = "(a limit of 0 is no limit to Kubernetes)"
WHOLE_UNITS = "(extended resources come in whole units)"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("cpuLimit", "1e400", f"'1e400' is not a usable CPU quantity {TOO_MUCH_CPU}"),
        ("cpuLimit", float("inf"), f"inf is not a usable CPU quantity {TOO_MUCH_CPU}"),
        (
            "cpuLimit",
            "1e99999999999",
            f"'1e99999999999' is not a usable CPU quantity {TOO_MUCH_CPU}",
        ),
        (
            "cpuLimit",
            "9223372036854775808m",
            f"'9223372036854775808m' is not a usable CPU quantity {TOO_MUCH_CPU}",
        ),
        ("cpuLimit", 10**30, f"a very large integer is not a usable CPU quantity {TOO_MUCH_CPU}"),
        ("memoryLimit", "8Ei", f"'8Ei' is not a usable memory quantity {TOO_MUCH}"),
        (
            "memoryLimit",
            "9223372036854775808",
            f"'9223372036854775808' is not a usable memory quantity {TOO_MUCH}",
        ),
        (
            "limits.ephemeral-storage",
            "1e19",
            f"'1e19' is not a usable ephemeral-storage quantity {TOO_MUCH}",
        ),
        (
            "requests.nvidia.com/gpu",
            "1e30",
            f"'1e30' is not a usable nvidia.com/gpu quantity {TOO_MUCH}",
        ),
        ("cpuLimit", "NaN", f"'NaN' {NOT_A_QUANTITY}"),
        ("cpuLimit", float("nan"), f"nan {NOT_A_QUANTITY}"),
        ("cpuLimit", "Infinity", f"'Infinity' {NOT_A_QUANTITY}"),
        ("cpuLimit", "\u0661", f"'\u0661' {NOT_A_QUANTITY}"),  # Decimal reads Arabic-Indic digits
        ("cpuLimit", "1_000", f"'1_000' {NOT_A_QUANTITY}"),
        ("cpuLimit", " 1", f"' 1' {NOT_A_QUANTITY}"),
        ("cpuLimit", "1\n", f"'1\\n' {NOT_A_QUANTITY}"),
        ("cpuLimit", "1ki", f"'1ki' {NOT_A_QUANTITY}"),
        ("cpuLimit", "1e1.5", f"'1e1.5' {NOT_A_QUANTITY}"),
        ("cpuLimit", True, f"True {NOT_A_QUANTITY}"),
        ("cpuLimit", ["1"], f"a list {NOT_A_QUANTITY}"),
        ("memoryLimit", "-1Gi", "'-1Gi' is not a usable memory quantity (negative)"),
        ("limits.cpu", "-1n", "'-1n' is not a usable CPU quantity (negative)"),
        ("requests.memory", -1, "-1 is not a usable memory quantity (negative)"),
        ("cpuLimit", "0", f"'0' is not a usable CPU quantity {ZERO_LIMIT}"),
        ("memoryLimit", 0.0, f"0.0 is not a usable memory quantity {ZERO_LIMIT}"),
        ("limits.cpu", "-0", f"'-0' is not a usable CPU quantity {ZERO_LIMIT}"),
        ("limits.memory", "0Gi", f"'0Gi' is not a usable memory quantity {ZERO_LIMIT}"),
        (
            "limits.nvidia.com/gpu",
            "0.5",
            f"'0.5' is not a usable nvidia.com/gpu quantity {WHOLE_UNITS}",
        ),
        (
            "requests.example.com/foo",
            "1m",
            f"'1m' is not a usable example.com/foo quantity {WHOLE_UNITS}",
        ),
    ],
)
def test_unusable_quantities(field, value, problem):
    section, _, name = field.partition(".")
    path = f"{WHERE}.{section}.{name}" if name else f"{WHERE}.{section}"
    assert problems_for(field, value) == [f"{path}: {problem}"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cpuLimit", "9223372036854775807m"),
        ("cpuLimit", "1n"),
        ("cpuLimit", "1e-50"),  # Kubernetes rounds it up to 1n
        ("cpuLimit", "5."),  # Go accepts a trailing point
        ("cpuLimit", "+.5"),
        ("cpuLimit", "2E3"),
        ("cpuLimit", 1e-07),
        ("memoryLimit", "9223372036854775807"),
        ("memoryLimit", "7Ei"),
        ("memoryLimit", "1.5Gi"),
        ("memoryLimit", "1E"),  # exa
        ("memoryLimit", 2**62),
        ("requests.cpu", "0"),  # a zero request is fine
        ("requests.memory", "0"),
        ("limits.nvidia.com/gpu", "0"),  # none of an extended resource is fine
        ("limits.nvidia.com/gpu", "2"),
        ("limits.hugepages-2Mi", "100Mi"),
        ("limits.ephemeral-storage", "10Gi"),
        ("requests.kubernetes.io/batch-cpu", "0.5"),  # native: not an extended resource
    ],
)
def test_usable_quantities(field, value):
    assert problems_for(field, value) == []


@pytest.mark.parametrize(
    "name",
    [
        "gpu",
        "CPU",
        "",
        "nvidia.com/",
        "/gpu",
        "Nvidia.com/gpu",
        "a/b/c",
        "requests.example.com/gpu",
        "example.com/" + "g" * 64,
        "x" * 245 + ".com/gpu",
        "nvidia.com/gpu ",
    ],
)
def test_resource_names_kubernetes_refuses(name):
    problems = validate_overrides({"computeResources": {"limits": {name: "1"}}})
    assert len(problems) == 1
    assert problems[0].endswith(
        ": not a container resource Kubernetes accepts (cpu, memory, ephemeral-storage, "
        "hugepages-<size>, or a prefixed name like nvidia.com/gpu)"
    )


def test_template_quantities_follow_the_same_rules(template_spec):
    template_spec["computeResources"] = {
        "cpuLimit": "1e400",
        "memoryLimit": "0",
        "customResources": {"nvidia.com/gpu": "0.5", "gpu": "1"},
        "limits": {"cpu": "NaN"},
        "requests": {"memory": "-1"},
    }
    assert validate_template_spec(template_spec) == [
        f"spec.computeResources.cpuLimit: '1e400' is not a usable CPU quantity {TOO_MUCH_CPU}",
        "spec.computeResources.memoryLimit: "
        "'0' is not a usable memory quantity (a limit of 0 is no limit to Kubernetes)",
        "spec.computeResources.customResources.nvidia.com/gpu: "
        "'0.5' is not a usable nvidia.com/gpu quantity (extended resources come in whole units)",
        "spec.computeResources.customResources.gpu: not a container resource Kubernetes "
        "accepts (cpu, memory, ephemeral-storage, hugepages-<size>, or a prefixed name like "
        "nvidia.com/gpu)",
        f"spec.computeResources.limits.cpu: 'NaN' {NOT_A_QUANTITY}",
        "spec.computeResources.requests.memory: '-1' is not a usable memory quantity (negative)",
    ]


@pytest.mark.parametrize(
    ("value", "amount"),
    [
        ("500m", Decimal("0.5")),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("1e3", Decimal(1000)),
        ("1.0000000001", Decimal("1.000000001")),  # rounded up to 1n, as the API server does
        ("1e-50", Decimal("1e-9")),
        ("0.1", Decimal("0.1")),
        (0.1, Decimal("0.1")),  # the text the Job gets, not the float's binary expansion
        (3, Decimal(3)),
        ("9223372036854775807", Decimal(2**63 - 1)),
    ],
)
def test_quantity_amount(value, amount):
    assert quantity_amount(value) == amount


@pytest.mark.parametrize(
    "value", ["1e400", "NaN", float("inf"), "", "x", None, "9223372036854775808"]
)
def test_quantity_amount_refuses_what_kubernetes_cannot_hold(value):
    with pytest.raises(ValueError, match="is not a quantity Kubernetes can hold"):
        quantity_amount(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("0", True), (2.5, True), ("-1", False), ("1e400", False), ("NaN", False)],
)
def test_is_quantity(value, expected):
    assert is_quantity(value) is expected


def test_a_huge_digit_string_is_refused_quickly():
    assert problems_for("memoryLimit", "9" * 1_000_000) == [
        f"{WHERE}.memoryLimit: '{'9' * 77}'... is not a usable memory quantity {TOO_MUCH}"
    ]
    assert problems_for("cpuLimit", "0." + "0" * 1_000_000 + "1") == []
