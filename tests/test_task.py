"""Bad task descriptions are rejected at submit time with a message naming the task and the reason."""

from __future__ import annotations

import pytest

from impeccable.runtime import Allocation, TaskError, probes
from impeccable.runtime.pilot import Pilot
from impeccable.runtime.task import TaskKind, executable_task, function_task


def module_level_function() -> int:
    return 1


def test_executable_and_function_tasks_carry_their_resources():
    task = executable_task(["true"], name="t", ranks=2, cores_per_rank=3, gpus_per_rank=1, timeout_s=5, retries=2)
    assert (task.kind, task.cores, task.gpus, task.retries) == (TaskKind.EXECUTABLE, 6, 2, 2)
    fn = function_task(probes.add, 1, 2, name="f", tags={"stage": "dock"})
    assert fn.function == "impeccable.runtime.probes:add" and fn.args == (1, 2)
    assert fn.tags["stage"] == "dock"


def test_too_many_cores_names_the_task_and_the_allocation(local_pilot: Pilot):
    task = executable_task(["true"], name="big", ranks=2, cores_per_rank=4)
    with pytest.raises(TaskError, match=r"'big'.*asks for 8 cores \(2 ranks x 4 cores per rank\).*has 4"):
        local_pilot.submit(task)


def test_one_process_wider_than_a_node_is_refused():
    with Pilot(Allocation.emulated(8, nodes=2)) as pilot:
        with pytest.raises(TaskError, match=r"one process needs 6 cores .* a node has 4 .*not MPI"):
            pilot.submit(executable_task(["true"], name="wide", cores_per_rank=6))
        record = pilot.submit(executable_task(["true"], name="mpi", mpi=True, ranks=6)).result(timeout=60)
        assert record.state.value == "DONE" and len(record.slots) == 8  # two whole nodes


def test_too_many_gpus_is_rejected(local_pilot: Pilot):
    with pytest.raises(TaskError, match=r"'gpu'.*asks for 1 GPUs.*has 0"):
        local_pilot.submit(executable_task(["true"], name="gpu", gpus_per_rank=1))


def test_missing_executable_is_rejected(local_pilot: Pilot):
    with pytest.raises(TaskError, match=r"'ghost'.*executable 'no-such-program-xyz' not found"):
        local_pilot.submit(executable_task(["no-such-program-xyz"], name="ghost"))


def test_missing_working_directory_is_rejected(local_pilot: Pilot):
    with pytest.raises(TaskError, match=r"working directory '/no/such/dir' does not exist"):
        local_pilot.submit(executable_task(["true"], name="w", cwd="/no/such/dir"))


def test_unimportable_function_is_rejected(local_pilot: Pilot):
    with pytest.raises(TaskError, match=r"'f'.*no_such_module_xyz"):
        local_pilot.submit(function_task("no_such_module_xyz:run", name="f"))


def test_missing_attribute_is_rejected(local_pilot: Pilot):
    with pytest.raises(TaskError, match=r"'f'.*no_such_function"):
        local_pilot.submit(function_task("impeccable.runtime.probes:no_such_function", name="f"))


def test_lambda_is_rejected_with_advice():
    with pytest.raises(TaskError, match="lambdas, closures and nested functions cannot run in another process"):
        function_task(lambda: 1)


def test_invalid_fields_name_the_field():
    with pytest.raises(TaskError, match=r"task 'neg' is invalid: ranks: Input should be greater than or equal to 1"):
        executable_task(["true"], name="neg", ranks=0)
    with pytest.raises(TaskError, match=r"timeout_s: Input should be greater than 0"):
        executable_task(["true"], name="t", timeout_s=0)
    with pytest.raises(TaskError, match="function task runs as one process: ranks must be 1"):
        function_task(module_level_function, ranks=2)


def test_a_rejected_batch_queues_nothing(local_pilot: Pilot):
    good = executable_task(["true"], name="good")
    bad = executable_task(["no-such-program-xyz"], name="bad")
    with pytest.raises(TaskError):
        local_pilot.submit_many([good, bad])
    assert local_pilot.records == []
