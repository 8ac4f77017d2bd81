//! The wall clock, behind a seam so tests and the simulator can move time themselves.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tollgate_proto::UnixMs;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> UnixMs;
}

/// System time plus an offset that tests may set (`test_hooks`), so a window boundary
/// can be reached without waiting for it.
#[derive(Default)]
pub struct SystemClock {
    offset_ms: AtomicI64,
}

impl SystemClock {
    pub fn with_offset_ms(offset_ms: i64) -> Self {
        SystemClock {
            offset_ms: AtomicI64::new(offset_ms),
        }
    }

    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> UnixMs {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        u64::try_from(real.saturating_add(self.offset_ms.load(Ordering::Relaxed))).unwrap_or(0)
    }
}
