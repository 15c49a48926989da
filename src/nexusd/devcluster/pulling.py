"""The kubelet's image steps before a container starts: check the reference, "pull" it.

A malformed reference (`images.normalize`) leaves the container waiting `InvalidImageName`
(Events `InspectFailed`, `Failed`). The pull is simulated: `IfNotPresent`/`Never` find the
image present (`Pulled`), `Always` pulls it (`Pulling`, `Pulled`), and a pod annotated
`devcluster.nexusd.io/image-pull-error` fails the pull: waiting `ErrImagePull`, then after
the configured delay `ImagePullBackOff`, for good (Events `Failed`, `BackOff`). The kubelet
runs these for every start of a container, restarts included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from nexusd.core.images import InvalidImageName, normalize

from .events import record_kubelet_event
from .runtimes import ANNOTATION_PULL_ERROR, annotations_of

if TYPE_CHECKING:
    from .objects import Obj
    from .operations import Operations

#: Sets the container's waiting (reason, message).
Waiting = Callable[[str, str], None]


def inspect_image(ops: Operations, pod: Obj, container: Obj, waiting: Waiting) -> bool:
    """False (and the container waiting InvalidImageName) when its image reference is bad."""
    name = container["name"]
    try:
        normalize(container.get("image", ""))
    except InvalidImageName as exc:
        record_kubelet_event(ops, pod, "Warning", "InspectFailed", str(exc), container=name)
        waiting("InvalidImageName", str(exc))
        record_kubelet_event(
            ops, pod, "Warning", "Failed", "Error: InvalidImageName", container=name
        )
        return False
    return True


async def pull_image(
    ops: Operations, pod: Obj, container: Obj, *, waiting: Waiting, backoff: float
) -> bool:
    """True once the image is there; a failing pull never returns (ImagePullBackOff)."""
    image, name = container.get("image", ""), container["name"]
    error = annotations_of(pod).get(ANNOTATION_PULL_ERROR)
    policy = container.get("imagePullPolicy", "IfNotPresent")
    if error is None and policy != "Always":
        msg = f'Container image "{image}" already present on machine'
        record_kubelet_event(ops, pod, "Normal", "Pulled", msg, container=name)
        return True
    record_kubelet_event(ops, pod, "Normal", "Pulling", f'Pulling image "{image}"', container=name)
    if error is None:
        msg = (
            f'Successfully pulled image "{image}" in 0s (0s including waiting). '
            "Image size: 0 bytes."
        )
        record_kubelet_event(ops, pod, "Normal", "Pulled", msg, container=name)
        return True
    failed = f'Failed to pull image "{image}": {error}'
    record_kubelet_event(ops, pod, "Warning", "Failed", failed, container=name)
    record_kubelet_event(ops, pod, "Warning", "Failed", "Error: ErrImagePull", container=name)
    waiting("ErrImagePull", failed)
    await trio.sleep(backoff)
    message = f'Back-off pulling image "{image}"'
    record_kubelet_event(ops, pod, "Normal", "BackOff", message, container=name)
    record_kubelet_event(ops, pod, "Warning", "Failed", "Error: ImagePullBackOff", container=name)
    waiting("ImagePullBackOff", message)
    await trio.sleep_forever()
    return False
