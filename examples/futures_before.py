"""Before: CPU-bound work in a ProcessPoolExecutor. Nothing outside this process can see
it, stop one piece of it, or find its results after a crash.

    python examples/futures_before.py
"""

from concurrent.futures import ProcessPoolExecutor

from futures_work import count_primes

if __name__ == "__main__":
    with ProcessPoolExecutor(max_workers=2) as ex:
        counts = list(ex.map(count_primes, [50_000, 100_000, 150_000, 200_000]))
    print(counts)
