"""A stand-in for the Hugging Face Hub on loopback (see `tests.fakehub.server`)."""

from tests.fakehub.server import FakeHub, Fault, Seen

__all__ = ["FakeHub", "Fault", "Seen"]
