"""Every example in examples/ runs, so the README's migration guide cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

from conftest import Server, env_for_tests, run_pool, status_doc

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(script: str, spool_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = env_for_tests(**({"POOL_SPOOL": str(spool_dir)} if spool_dir else {}))
    env["PYTHONPATH"] = f"{EXAMPLES}:{env['PYTHONPATH']}"
    return subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, env=env,
                          timeout=120)


def test_before_runs_with_plain_subprocess() -> None:
    result = run_example("before_subprocess.py")
    assert result.returncode == 0 and result.stdout.strip() == "render complete"


def test_after_runs_the_same_argv_as_a_job(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--allow-commands")
    result = run_example("after_pool.py", spool_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].endswith(": done; last output: render complete")


def test_scripts_reporting_progress_show_it_as_command_jobs(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--allow-commands")
    for script in ("report_json.py", "tqdm_script.py"):
        run_pool(spool_dir, "submit", "--command", "--id", script.replace(".py", ""), "--",
                 sys.executable, str(EXAMPLES / script), check=True)
    run_pool(spool_dir, "wait", "report_json", "tqdm_script", check=True)
    json_doc, tqdm_doc = status_doc(spool_dir, "report_json"), status_doc(spool_dir, "tqdm_script")
    assert json_doc is not None and tqdm_doc is not None
    assert json_doc["message"] == "processed epsilon"
    assert b"crunching: 100%" in (spool_dir / "logs" / "tqdm_script.log").read_bytes()


def test_the_cpu_task_runs_on_its_own_and_as_a_job(spool_dir: Path, tmp_path: Path) -> None:
    assert run_example("cpu_task.py").stdout.strip() == "9592"
    server = Server(spool_dir, "--tasks", "cpu_task", cwd=EXAMPLES)
    server.start()
    try:
        run_pool(spool_dir, "submit", "--id", "primes", "cpu_task:count_primes", "200000", check=True)
        run_pool(spool_dir, "wait", "primes", check=True)
        assert status_doc(spool_dir, "primes")["result"] == 17984  # type: ignore[index]
    finally:
        assert server.stop() == 0


def test_the_inline_fallback_runs_without_a_manager(spool_dir: Path) -> None:
    result = run_example("fallback_inline.py", spool_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": done, progress 100%, last output: render complete")
    assert run_pool(spool_dir, "status", "--json", check=True).stdout.count('"state":"done"') == 1


def test_the_futures_example_gives_what_process_pool_executor_gives_with_jobs_kept_in_a_spool(
        spool_dir: Path) -> None:
    before = run_example("futures_before.py")
    assert before.returncode == 0, before.stderr
    private = run_example("futures_after.py")
    assert private.returncode == 0, private.stderr
    assert private.stdout.splitlines()[-1] == before.stdout.strip() == "[5133, 9592, 13848, 17984]"
    assert not Path(private.stdout.split(" in ", 1)[1].split(":", 1)[0]).exists()  # its private spool, removed
    kept = run_example("futures_after.py", spool_dir)  # no manager serves it: a private one, the spool kept
    assert kept.returncode == 0, kept.stderr
    ids = kept.stdout.split()[1:5]
    assert [status_doc(spool_dir, i.rstrip(","))["result"] for i in ids] == [5133, 9592, 13848, 17984]  # type: ignore[index]


def test_the_asyncio_example_follows_a_command_job_to_its_end(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--allow-commands")
    result = run_example("asyncio_after.py", spool_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2:] == ["done 100%", "done"]
    assert any(line.startswith("running ") and line not in ("running 0%", "running 100%") for line in lines), lines
