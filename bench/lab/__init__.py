"""Real processes on loopback for integration tests and benchmarks.

Each server (:class:`Registry`, :class:`Containerd`, :class:`Nginx`, :class:`ShoalServer`) has
``start()``, ``stop()``, ``kill()`` and is a context manager; its output is logged under its work
dir and a server that does not come up raises :class:`NotReadyError` with the tail of its log.
Nothing here imports pytest.
"""

from bench.lab.containerd import Containerd
from bench.lab.images import ImageInfo, make_image, make_multiarch, push
from bench.lab.nginx import Nginx
from bench.lab.ports import free_port
from bench.lab.process import CommandError, LabError, NotReadyError
from bench.lab.registry import AccessEntry, Registry
from bench.lab.shoal import ShoalServer, shoal_cli

__all__ = [
    "AccessEntry",
    "CommandError",
    "Containerd",
    "ImageInfo",
    "LabError",
    "Nginx",
    "NotReadyError",
    "Registry",
    "ShoalServer",
    "shoal_cli",
    "free_port",
    "make_image",
    "make_multiarch",
    "push",
]
