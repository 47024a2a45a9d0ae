//! Runs a stage's tasks on `spark.executor.cores / spark.task.cpus` threads, each task with its own task memory
//! manager, and cleans up after every task as Spark does: `Task.run` releases the task's unroll
//! memory and wakes the tasks waiting for execution memory, then `Executor.TaskRunner` releases
//! its task memory (with the leak check).
//!
//! After a SIGINT/SIGTERM/SIGHUP ([`crate::interrupt`]) no further task is launched: each one
//! not yet started ends as [`TaskFailure::NotLaunched`], and a task that stops (or fails)
//! after the signal as [`TaskFailure::Interrupted`], as Spark reports tasks of a cancelled
//! stage as killed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::executor::Executor;
use crate::interleave::{Schedule, ScheduleMode, ScheduleStats};
use crate::memory::{MemoryMode, TaskAttemptId, TaskMemoryError, TaskMemoryManager, WaitStats};

/// What a task sees: its ids and its memory.
pub struct TaskContext<'a> {
    pub executor: &'a Executor,
    pub stage_id: u32,
    /// The partition this task computes (0-based within the stage).
    pub partition: u32,
    pub task_attempt_id: TaskAttemptId,
    pub memory: TaskMemoryManager,
}

/// The end of one task.
#[derive(Debug)]
pub struct TaskRun<T, E> {
    pub partition: u32,
    pub task_attempt_id: TaskAttemptId,
    pub result: Result<T, TaskFailure<E>>,
    /// `executorRunTime`.
    pub run_time: Duration,
    /// Peak execution memory of the task (both modes).
    pub peak_execution_memory: u64,
    /// Peak ON_HEAP execution memory (Spark 4's `peakOnHeapExecutionMemory`).
    pub peak_on_heap_execution_memory: u64,
    /// Peak OFF_HEAP execution memory (Spark 4's `peakOffHeapExecutionMemory`).
    pub peak_off_heap_execution_memory: u64,
    /// Time blocked waiting for the fair share.
    pub waits: WaitStats,
    /// Execution memory still accounted at the end (a leak, released at clean-up).
    pub leaked_bytes: u64,
}

/// Why a task failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskFailure<E> {
    /// The task's own error.
    #[error("{0}")]
    Task(E),
    /// The leak check with `spark.unsafe.exceptionOnMemoryLeak=true`.
    #[error(transparent)]
    Leak(TaskMemoryError),
    /// The task panicked (a bug): reported, never propagated to the other tasks.
    #[error("task panicked: {0}")]
    Panicked(String),
    /// The task was running when the process received a signal, and stopped (or failed)
    /// after it: its error is a consequence of the interrupt, not a finding.
    #[error("task killed: interrupted by {0}")]
    Interrupted(crate::interrupt::Signal),
    /// The process received a signal before this task was launched.
    #[error("task not launched: interrupted by {0}")]
    NotLaunched(crate::interrupt::Signal),
}

impl<E> TaskFailure<E> {
    /// Whether the task was killed or never launched because of a signal.
    pub fn is_interrupt(&self) -> bool {
        matches!(
            self,
            TaskFailure::Interrupted(_) | TaskFailure::NotLaunched(_)
        )
    }
}

/// Runs `num_tasks` tasks of a stage on the executor's cores; results come back in partition
/// order. `on_done` is called as each task ends (for progress).
pub fn run_stage<T: Send, E: Send>(
    executor: &Executor,
    stage_id: u32,
    num_tasks: u32,
    exception_on_leak: bool,
    task: impl Fn(&TaskContext) -> Result<T, E> + Sync,
    on_done: impl Fn(&TaskRun<T, E>) + Sync,
) -> Vec<TaskRun<T, E>> {
    run_stage_scheduled(
        executor,
        stage_id,
        num_tasks,
        exception_on_leak,
        task,
        on_done,
    )
    .0
}

/// [`run_stage`], with what the stage's deterministic schedule did (`None` free-running).
///
/// Under `spillway.schedule=deterministic` ([`crate::interleave`]) the worker threads join a
/// schedule seeded from the run's seed and the stage id: which task each thread launches, and
/// which thread acts on the memory manager next, are the seed's choices.
pub fn run_stage_scheduled<T: Send, E: Send>(
    executor: &Executor,
    stage_id: u32,
    num_tasks: u32,
    exception_on_leak: bool,
    task: impl Fn(&TaskContext) -> Result<T, E> + Sync,
    on_done: impl Fn(&TaskRun<T, E>) + Sync,
) -> (Vec<TaskRun<T, E>>, Option<StageSchedule>) {
    // `spark.executor.cores / spark.task.cpus` task slots.
    let slots = executor.layout().concurrent_tasks().max(1) as usize;
    let workers = slots.min(num_tasks.max(1) as usize);
    let schedule = match executor.schedule() {
        ScheduleMode::Free => None,
        ScheduleMode::Deterministic { seed } => {
            Some(Schedule::new(Schedule::stage_seed(seed, stage_id), workers))
        }
    };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<TaskRun<T, E>>> = Mutex::new(Vec::with_capacity(num_tasks as usize));
    std::thread::scope(|scope| {
        for w in 0..workers {
            let (schedule, next, results, task, on_done) =
                (&schedule, &next, &results, &task, &on_done);
            scope.spawn(move || {
                let _member = schedule.as_ref().map(|s| s.join(w));
                loop {
                    // Launching a task is a turn: which thread takes the next one (and so its
                    // task attempt id) is the schedule's choice.
                    crate::interleave::turn();
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= num_tasks as usize {
                        break;
                    }
                    let run = match crate::interrupt::interrupted() {
                        Some(signal) => not_launched(i as u32, signal),
                        None => run_one(executor, stage_id, i as u32, exception_on_leak, task),
                    };
                    on_done(&run);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(run);
                }
            });
        }
    });
    let mut runs = results.into_inner().unwrap_or_else(|e| e.into_inner());
    runs.sort_by_key(|r| r.partition);
    let stats = schedule.map(|s| StageSchedule {
        seed: s.seed(),
        stats: s.stats(),
    });
    (runs, stats)
}

/// The deterministic schedule of one stage: its seed and what it did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageSchedule {
    pub seed: u64,
    pub stats: ScheduleStats,
}

/// A task the scheduler did not launch because a signal arrived first: it has no attempt id
/// (0, which the report leaves out of its task list) and ran for no time.
fn not_launched<T, E>(partition: u32, signal: crate::interrupt::Signal) -> TaskRun<T, E> {
    TaskRun {
        partition,
        task_attempt_id: 0,
        result: Err(TaskFailure::NotLaunched(signal)),
        run_time: Duration::ZERO,
        peak_execution_memory: 0,
        peak_on_heap_execution_memory: 0,
        peak_off_heap_execution_memory: 0,
        waits: WaitStats::default(),
        leaked_bytes: 0,
    }
}

fn run_one<T, E>(
    executor: &Executor,
    stage_id: u32,
    partition: u32,
    exception_on_leak: bool,
    task: &(impl Fn(&TaskContext) -> Result<T, E> + Sync),
) -> TaskRun<T, E> {
    let task_attempt_id = executor.next_task_attempt_id();
    let ctx = TaskContext {
        executor,
        stage_id,
        partition,
        task_attempt_id,
        memory: executor.task_memory_manager(task_attempt_id),
    };
    let start = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(&ctx)));
    let run_time = start.elapsed();
    let mut result = match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(TaskFailure::Task(e)),
        Err(panic) => Err(TaskFailure::Panicked(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into()),
        )),
    };
    // A task that failed once the process was interrupted was stopped by it (a typed
    // interrupted error, or a failure the shutdown caused): reported as killed.
    if result.is_err()
        && let Some(signal) = crate::interrupt::interrupted()
    {
        result = Err(TaskFailure::Interrupted(signal));
    }
    let peak_execution_memory = ctx.memory.peak_execution_memory();
    let peak_on_heap_execution_memory = ctx.memory.peak_execution_memory_in(MemoryMode::OnHeap);
    let peak_off_heap_execution_memory = ctx.memory.peak_execution_memory_in(MemoryMode::OffHeap);
    // Task.run's `finally`: release the task's unroll memory in both modes and wake every task
    // waiting for execution memory (docs/spark-model.md §6.5e); then Executor.TaskRunner's:
    // release task memory, with the leak check.
    executor
        .block_manager()
        .memory_store()
        .release_all_unroll_memory_for_task(task_attempt_id);
    executor.memory_manager().notify_all_waiters();
    let leaked_bytes = match ctx.memory.clean_up_all_allocated_memory(exception_on_leak) {
        Ok(n) => n,
        Err(e) => {
            let n = match &e {
                TaskMemoryError::Leak { bytes, .. } => *bytes,
                _ => 0,
            };
            if result.is_ok() {
                result = Err(TaskFailure::Leak(e));
            }
            n
        }
    };
    let waits = executor
        .memory_manager()
        .take_task_wait_stats(task_attempt_id);
    TaskRun {
        partition,
        task_attempt_id,
        result,
        run_time,
        peak_execution_memory,
        peak_on_heap_execution_memory,
        peak_off_heap_execution_memory,
        waits,
        leaked_bytes,
    }
}
