"""Exceptions that name what is wrong and how to fix it."""


class GpuUnavailableError(RuntimeError):
    """The CUDA device was asked for but cannot be used (no CuPy, driver, GPU; wrong wheel)."""


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
