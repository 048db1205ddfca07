//! Seccomp filters installed in a child before `exec`, so one server
//! process sees exactly what a kernel without a feature returns, without
//! touching anything host-wide (such as `kernel.io_uring_disabled`).

use std::os::unix::process::CommandExt;
use std::process::Command;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Offset in `seccomp_data` of the low 32 bits of argument `i` (x86_64 and
/// aarch64 are little-endian: nr 0, arch 4, ip 8, args from 16).
fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

/// Makes system call `nr` fail with `errno`; every other call is allowed.
pub fn deny_syscall(cmd: &mut Command, nr: libc::c_long, errno: u32) {
    install(
        cmd,
        vec![
            op(LD_W_ABS, 0, 0, 0),
            op(JEQ_K, 0, 1, nr as u32),
            op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | errno),
            op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        ],
    );
}

/// Makes `setsockopt(_, level, name, ...)` fail with `errno` (as on a
/// kernel without that option); every other call is allowed.
pub fn deny_sockopt(cmd: &mut Command, level: i32, name: i32, errno: u32) {
    let deny = libc::SECCOMP_RET_ERRNO | errno;
    install(
        cmd,
        vec![
            op(LD_W_ABS, 0, 0, 0),
            op(JEQ_K, 0, 5, libc::SYS_setsockopt as u32),
            op(LD_W_ABS, 0, 0, arg_lo(1)),
            op(JEQ_K, 0, 3, level as u32),
            op(LD_W_ABS, 0, 0, arg_lo(2)),
            op(JEQ_K, 0, 1, name as u32),
            op(RET_K, 0, 0, deny),
            op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        ],
    );
}

fn install(cmd: &mut Command, filter: Vec<libc::sock_filter>) {
    // SAFETY: the closure runs in the forked child before exec and only
    // makes two prctl calls (async-signal-safe) on a program that lives in
    // the closure's own capture.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
