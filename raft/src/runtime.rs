//! openraft's async runtime for Tollgate: tokio, except that the random numbers openraft
//! draws (its election timeouts) come from a per-thread generator a simulator can seed,
//! so that a simulated run replays exactly. A thread that was not seeded draws from a
//! generator seeded by the OS, as openraft's own runtime does.

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

thread_local! {
    static RNG: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Seeds this thread's generator: every draw openraft makes on this thread from now on
/// follows from `seed` (the simulator runs all its nodes on one thread).
pub fn seed_this_thread(seed: u64) {
    RNG.with(|rng| *rng.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

fn with_rng<T>(draw: impl FnOnce(&mut StdRng) -> T) -> T {
    RNG.with(|rng| {
        let mut rng = rng.borrow_mut();
        let rng = rng.get_or_insert_with(|| {
            let mut seed = [0u8; 8];
            // Without an OS source there is still a generator, just not a secret one
            // (election timeouts need spread, not secrecy).
            let _ = getrandom::fill(&mut seed);
            StdRng::seed_from_u64(u64::from_le_bytes(seed))
        });
        draw(rng)
    })
}

/// A handle to this thread's generator (what `AsyncRuntime::thread_rng` returns).
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadRng;

impl RngCore for ThreadRng {
    fn next_u32(&mut self) -> u32 {
        with_rng(|r| r.next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        with_rng(|r| r.next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        with_rng(|r| r.fill_bytes(dest))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        with_rng(|r| r.try_fill_bytes(dest))
    }
}

/// Tokio, with a seedable generator (see the module doc).
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct SeededRuntime;

impl AsyncRuntime for SeededRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = ThreadRng;
    type OneshotSender<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <TokioRuntime as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        ThreadRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        TokioRuntime::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn timeouts() -> Vec<u64> {
        (0..5)
            .map(|_| SeededRuntime::thread_rng().gen_range(150..300))
            .collect()
    }

    #[test]
    fn a_seeded_thread_draws_the_same_timeouts_again() {
        seed_this_thread(7);
        let first = timeouts();
        seed_this_thread(7);
        assert_eq!(timeouts(), first);
        seed_this_thread(8);
        assert_ne!(timeouts(), first, "another seed, other draws");
        assert!(first.iter().all(|t| (150..300).contains(t)));
    }

    #[test]
    fn an_unseeded_thread_still_draws() {
        let drawn = std::thread::spawn(timeouts).join().unwrap_or_default();
        assert_eq!(drawn.len(), 5);
    }
}
