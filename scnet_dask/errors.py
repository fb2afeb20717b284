"""Exception types whose message is shown to the user as one line."""

__all__ = ["InputError", "OutputError", "RunStopped", "nonfinite_input"]


class InputError(ValueError):
    """An input file or option is invalid; the message names the file and the problem."""


class OutputError(OSError):
    """An output cannot be written (exists, unwritable, disk full); the message names it."""


class RunStopped(RuntimeError):
    """A long run stopped part-way (e.g. a cluster worker was lost); it can be resumed."""


def nonfinite_input(path: object, where: str) -> InputError:
    """The error for NaN/Inf voxels in an input: ``where`` says how many or in which box."""
    return InputError(
        f"{path}: NaN/Inf voxels in the input{where}; convert it with --nan-policy zero or mean "
        "first"
    )
