"""Exceptions that name what is wrong and how to fix it."""


class GpuUnavailableError(RuntimeError):
    """The CUDA device was asked for but cannot be used (no CuPy, driver, GPU; wrong wheel)."""


class GraphCaptureError(RuntimeError):
    """A training step being captured as a CUDA graph did what a graph cannot record."""


_NO_READS = (
    "read values after the step, from what it returns. A loss in a captured step must not "
    "check its values: nn.CrossEntropyLoss(check_finite=False, check_labels=False), as gpucnn "
    "train makes it"
)


def read_in_capture(how: str) -> GraphCaptureError:
    """The error for a read of the device (``how``: ``to_numpy()``, ``float()``...) by a step
    being captured: a graph records device work only, and on a GPU the copy to the host would
    invalidate the capture with a bare CUDA error."""
    return GraphCaptureError(
        f"the step read the device ({how}) while being captured as a CUDA graph, which records "
        f"device work only; {_NO_READS}"
    )


def refused_in_capture(said: BaseException) -> GraphCaptureError:
    """The error for what CUDA or CuPy refused while a step was being captured (``said``): most
    often a read of the device that went past :func:`read_in_capture` (``float()`` or printing
    of a CuPy array), else a library call CuPy does not allow in a capture (cuBLAS)."""
    return GraphCaptureError(
        f"capturing the step as a CUDA graph failed ({said}): a graph records device work only, "
        "so a captured step must neither read the device (float(), .item(), printing) nor call "
        f"cuBLAS (a matrix product outside gpucnn's layers); {_NO_READS}"
    )


class DeviceMismatchError(ValueError):
    """Arrays from different devices were mixed in one operation."""


def device_mismatch(
    name: str, device: str, other: str, other_device: str, move_input: bool = False, op: str = ""
) -> DeviceMismatchError:
    """The error for array ``name`` on ``device`` used with ``other`` on ``other_device``, naming
    both devices. It says to move ``name`` to ``other_device``, or, with ``move_input`` (``name``
    is a weight, ``other`` the input), to move the input to the weights' device: a model stays
    where ``model.to`` put it, and it is the data that usually comes from elsewhere. The other way
    round is named for a model and for the functional API's plain arrays."""
    if move_input:
        fix = (
            f"move the input to the weights' device with gpucnn.to_device(x, '{device}') "
            f"(or the weights to the input's: model.to('{other_device}') for a model, "
            f"gpucnn.to_device({name}, '{other_device}') for an array)"
        )
    else:
        fix = f"move it with gpucnn.to_device({name}, '{other_device}')"
    where = f"{op}: " if op else ""
    return DeviceMismatchError(
        f"{where}{name} is on device '{device}' but {other} is on '{other_device}'; {fix}"
    )
