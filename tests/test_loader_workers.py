"""A DataLoader worker that cannot hand a batch to the main process (full /dev/shm, ``ulimit -f``) ends the
command with one error line, instead of leaving the main process waiting for the batch forever.

The failure is provoked deterministically: torch's share path (``UntypedStorage._share_fd_cpu_``, what
pickling a tensor for the worker queue calls) raises as it does on a full /dev/shm; the forked workers
inherit the patch."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import faults
from dlkdd.cli import main
from faults import assert_clean_error, count

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)


def _no_shm(self, *args, **kwargs):
    raise RuntimeError("unable to write to file </torch_1_2_3>: No space left on device (28)")


@pytest.mark.timeout(120)
def test_evaluate_with_a_worker_that_cannot_share_a_batch_fails_in_one_line(ckpt, cfg, monkeypatch):
    monkeypatch.setattr(torch.UntypedStorage, "_share_fd_cpu_", _no_shm)
    count("worker failure")
    r = CliRunner().invoke(main, ["evaluate", str(ckpt), "--config", str(cfg), *faults.sets(), "--workers", "1",
                                  "--no-progress"])
    assert_clean_error(r, "data-loading worker", "/dev/shm", "--workers 0")


@pytest.mark.timeout(120)
def test_cache_logits_with_a_worker_that_cannot_share_a_batch_fails_in_one_line(work, cfg, monkeypatch):
    teacher = faults.make_checkpoint(work / "teacher.pt", cfg, kind="teacher")
    monkeypatch.setattr(torch.UntypedStorage, "_share_fd_cpu_", _no_shm)
    count("worker failure")
    r = CliRunner().invoke(main, ["cache-logits", "--config", str(cfg), *faults.sets(), "--teacher", str(teacher),
                                  "--out", str(work / "w.zarr"), "--set", "train.workers=1", "--no-progress"])
    assert_clean_error(r, "data-loading worker", "/dev/shm", "--workers 0")


@pytest.mark.timeout(60)
def test_loader_with_worker_context_raises_instead_of_hanging(monkeypatch):
    from torch.utils.data import DataLoader

    from dlkdd.data.workers import worker_context
    from dlkdd.errors import ResourceError

    monkeypatch.setattr(torch.UntypedStorage, "_share_fd_cpu_", _no_shm)
    loader = DataLoader([torch.zeros(3)] * 4, batch_size=2, num_workers=1, multiprocessing_context=worker_context())
    with pytest.raises(ResourceError, match="No space left on device"):
        list(loader)


def test_worker_context_changes_nothing_when_sharing_works():
    from torch.utils.data import DataLoader

    from dlkdd.data.workers import worker_context

    data = [torch.full((2,), float(i)) for i in range(6)]
    got = list(DataLoader(data, batch_size=3, num_workers=2, multiprocessing_context=worker_context()))
    assert [b.tolist() for b in got] == [[[0, 0], [1, 1], [2, 2]], [[3, 3], [4, 4], [5, 5]]]


def test_a_worker_killed_by_the_system_is_one_line():
    import click

    from dlkdd.commands.common import friendly_errors

    @friendly_errors
    def run():
        raise RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly")

    with pytest.raises(click.ClickException, match=r"pid\(s\) 4242.*/dev/shm.*--workers 0"):
        run()


@pytest.mark.timeout(120)
def test_an_unpicklable_sample_is_named_as_such_not_as_a_shared_memory_problem():
    """A dataset whose samples cannot be pickled gets the dataset's fix, not /dev/shm or ulimit advice."""
    from torch.utils.data import DataLoader

    from dlkdd.data.workers import worker_context
    from dlkdd.errors import ResourceError

    loader = DataLoader([{"f": lambda: 0}] * 2, batch_size=1, num_workers=1, collate_fn=lambda b: b[0],
                        multiprocessing_context=worker_context())
    with pytest.raises(ResourceError, match="cannot be pickled") as e:
        list(loader)
    assert "/dev/shm" not in str(e.value)
