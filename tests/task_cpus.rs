//! `spark.task.cpus`: an executor runs `cores / task.cpus` tasks at once, and a task that
//! claims more cores than the executor has is Spark's configuration error (exit 2).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use spillway::conf::SparkConf;
use spillway::executor::Executor;
use spillway::exit::Exit;
use spillway::layout::Layout;
use spillway::scheduler::run_stage;

fn conf(cores: &str, task_cpus: &str) -> SparkConf {
    SparkConf::new()
        .with("spark.executor.memory", "600m")
        .with("spark.executor.cores", cores)
        .with("spark.task.cpus", task_cpus)
}

#[test]
fn more_cpus_per_task_than_cores_is_an_error_naming_both() {
    let err = Layout::from_conf(&conf("2", "3"), None).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("spark.task.cpus=3") && text.contains("spark.executor.cores=2"),
        "{text}"
    );
    assert!(text.starts_with(
        "The number of cores per executor (=2) has to be >= the number of cpus per task = 3."
    ));
    assert_eq!(err.exit_status().code(), 2);
    assert_eq!(
        Layout::from_conf(&conf("3", "3"), None)
            .unwrap()
            .concurrent_tasks(),
        1
    );
}

/// Four cores, two per task: two tasks run side by side, never three. Each task waits (at most
/// two seconds) until a second one is running, so the count reaches two unless the scheduler
/// runs one at a time.
#[test]
fn four_cores_at_two_cpus_per_task_run_two_tasks_at_once() {
    let c = conf("4", "2");
    let layout = Layout::from_conf(&c, None).unwrap();
    assert_eq!(layout.concurrent_tasks(), 2);
    let ex = Executor::start(&layout, &c).unwrap();
    let running = Mutex::new(0usize);
    let changed = Condvar::new();
    let most = AtomicUsize::new(0);
    let runs = run_stage(
        &ex,
        0,
        6,
        true,
        |_ctx| -> Result<(), String> {
            let mut n = running.lock().unwrap();
            *n += 1;
            most.fetch_max(*n, Ordering::SeqCst);
            changed.notify_all();
            let (mut n, _) = changed
                .wait_timeout_while(n, Duration::from_secs(2), |n| *n < 2)
                .unwrap();
            most.fetch_max(*n, Ordering::SeqCst);
            *n -= 1;
            changed.notify_all();
            Ok(())
        },
        |_| {},
    );
    assert!(runs.iter().all(|r| r.result.is_ok()));
    assert_eq!(most.load(Ordering::SeqCst), 2);
}
