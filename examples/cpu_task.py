"""A CPU-bound function becomes a job with one decorator, and reports its progress.

    pool serve --tasks cpu_task     (from this folder)
    pool submit cpu_task:count_primes 200000
"""

import pool


@pool.task
def count_primes(limit: int) -> int:
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for n in range(2, int(limit**0.5) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytearray(len(range(n * n, limit + 1, n)))
        pool.progress(n, int(limit**0.5), message=f"sieving multiples of {n}")
    return sum(sieve)


if __name__ == "__main__":
    print(count_primes(100_000))  # still runs on its own, outside pool
