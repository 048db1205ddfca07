//! Clocks: `CLOCK_REALTIME` (the clock of kernel receive timestamps),
//! `CLOCK_MONOTONIC` and the process CPU clock, in nanoseconds; a thread's
//! voluntary context switches.

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write into; clock ids are constants
    // the kernel knows, so the call cannot fail.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// `CLOCK_REALTIME` in nanoseconds (the clock `SO_TIMESTAMPNS` uses).
pub fn now_realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn now_monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time (user + system) this process has used, in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Voluntary context switches of the calling thread so far
/// (`getrusage(RUSAGE_THREAD)`): each time it blocked, in a receive, a
/// wait or a lock. Every wake-up of a sleeping worker ends in one, whether
/// or not it then found work.
pub fn thread_voluntary_switches() -> u64 {
    // SAFETY: rusage is a plain C struct; all-zero is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage to write into; RUSAGE_THREAD is valid
    // on Linux, so the call cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    ru.ru_nvcsw as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward() {
        let a = now_monotonic_ns();
        let b = now_monotonic_ns();
        assert!(b >= a);
        assert!(now_realtime_ns() > 1_600_000_000_000_000_000);
    }
}
