//! Test hooks: environment variables that let the black-box tests move the clock, make
//! budgets naive or hold charge proposals. They exist only in builds with the
//! `test-hooks` feature, which the test harness turns on and a release build does not,
//! so no production node can be made to overspend or skew its clock through them.

use crate::clock::SystemClock;
use std::sync::Arc;

/// What the hooks set; the default is production behaviour.
#[derive(Debug, Default)]
pub struct Hooks {
    /// `TOLLGATE_TEST_CLOCK_OFFSET_MS`: a fixed shift of the clock.
    pub clock_offset_ms: i64,
    /// `TOLLGATE_TEST_CLOCK_FILE=PATH`: the clock's offset follows the signed
    /// milliseconds written in a file, so a test moves every node across a window
    /// boundary at once.
    pub clock_file: Option<std::path::PathBuf>,
    /// `TOLLGATE_TEST_NAIVE_BUDGETS=1`: check-then-charge budgets, the overspendable
    /// baseline the budget tests compare escrow against.
    pub naive_budgets: bool,
    /// `TOLLGATE_TEST_PROPOSE_DELAY_MS`: charge batches wait this long before they are
    /// proposed (a window for crash tests).
    pub propose_delay_ms: u64,
}

impl Hooks {
    /// The hooks set in the environment (a build without `test-hooks` reads nothing).
    pub fn from_env() -> Hooks {
        #[cfg(feature = "test-hooks")]
        {
            fn number<T: std::str::FromStr>(name: &str) -> Option<T> {
                std::env::var(name).ok().and_then(|v| v.parse().ok())
            }
            let hooks = Hooks {
                clock_offset_ms: number("TOLLGATE_TEST_CLOCK_OFFSET_MS").unwrap_or(0),
                clock_file: std::env::var_os("TOLLGATE_TEST_CLOCK_FILE").map(Into::into),
                naive_budgets: std::env::var("TOLLGATE_TEST_NAIVE_BUDGETS").is_ok_and(|v| v == "1"),
                propose_delay_ms: number("TOLLGATE_TEST_PROPOSE_DELAY_MS").unwrap_or(0),
            };
            if hooks.naive_budgets {
                tracing::warn!("test hook: budgets are checked naively and can be overspent");
            }
            hooks
        }
        #[cfg(not(feature = "test-hooks"))]
        Hooks::default()
    }

    /// The clock these hooks ask for; a clock file is reread every 50 ms by a task in
    /// `tasks` (a missing or unreadable file leaves the offset as it was).
    pub fn clock(&self, tasks: &mut tokio::task::JoinSet<()>) -> Arc<SystemClock> {
        let clock = Arc::new(SystemClock::with_offset_ms(self.clock_offset_ms));
        let Some(path) = self.clock_file.clone() else {
            return clock;
        };
        tracing::warn!(path = %path.display(), "test hook: the clock follows a file");
        let read = move |clock: &SystemClock| {
            if let Some(offset) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
            {
                clock.set_offset_ms(offset);
            }
        };
        read(&clock);
        let follower = Arc::clone(&clock);
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                read(&follower);
            }
        });
        clock
    }
}
