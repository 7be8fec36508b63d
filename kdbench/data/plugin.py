"""Built-in dataset plugin."""

from __future__ import annotations

from ..hookspecs import hookimpl
from . import builtin


@hookimpl
def register_datasets(register):
    for fn in (builtin.digits, builtin.synthetic, builtin.cifar10, builtin.cifar100,
               builtin.fashion_mnist):
        register(fn.__name__, fn)
