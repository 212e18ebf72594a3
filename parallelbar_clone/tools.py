"""Small CPU-bound functions used in the docs, demos and benchmarks."""
from math import cos, radians, sin

__all__ = ["cpu_bench", "fibonacci"]


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
