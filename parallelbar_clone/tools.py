"""Small CPU-bound functions used in the docs, demos and benchmarks, and the
published ``parallelbar.tools`` helpers."""
from itertools import islice
from math import cos, radians, sin
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sized

__all__ = ["cpu_bench", "fibonacci", "func_args_unpack", "get_len", "iterate_by_pack",
           "get_packs_count"]


def cpu_bench(number: int) -> int:
    """Burn CPU in proportion to ``number`` (about 0.2 µs per unit); returns ``number``."""
    product = 1.0
    for elem in range(number):
        angle = radians(elem)
        product *= sin(angle) ** 2 + cos(angle) ** 2
    return number


def fibonacci(number: int) -> int:
    """The naive recursive Fibonacci number: exponential time, a skewed workload."""
    if number <= 1:
        return number
    return fibonacci(number - 2) + fibonacci(number - 1)


# -- helpers of the published parallelbar.tools, with the same signatures and behaviour

def func_args_unpack(func: Callable[..., Any], args: Iterable[Any],
                     worker_queue: Any = None) -> Any:
    """``func(*args)``; with a ``worker_queue``, ``func(*args, worker_queue=worker_queue)``."""
    if worker_queue is not None:
        return func(*args, worker_queue=worker_queue)
    return func(*args)


def get_len(iterable: Any, total: Optional[int]) -> Optional[int]:
    """``total`` if given (truthy), else ``len(iterable)``, else ``total``."""
    if total:
        return total
    try:
        return iterable.__len__()
    except AttributeError:
        return total


def iterate_by_pack(iterable: Iterable[Any], pack_size: int = 1) -> Iterator[List[Any]]:
    """Lists of ``pack_size`` consecutive items (the last may be shorter)."""
    if pack_size < 1:
        raise ValueError("pack_size must be greater than 0")
    iterator = iter(iterable)
    while True:
        pack = list(islice(iterator, pack_size))
        if not pack:
            return
        yield pack


def get_packs_count(array: Sized, pack_size: int) -> int:
    """How many packs of ``pack_size`` ``iterate_by_pack`` makes of ``array``."""
    total, extra = divmod(len(array), pack_size)
    return total + 1 if extra else total
