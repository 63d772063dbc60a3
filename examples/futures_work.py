"""The work of the futures examples: a plain function (no decorator needed by pool.Executor),
reporting its progress, which pool shows and ProcessPoolExecutor ignores."""

import pool


def count_primes(limit: int) -> int:
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    root = int(limit**0.5)
    for n in range(2, root + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytearray(len(range(n * n, limit + 1, n)))
        pool.progress(n, root, message=f"sieving multiples of {n}")
    return sum(sieve)
